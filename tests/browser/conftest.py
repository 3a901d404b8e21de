"""Fixtures for the real-browser tests: a JupyterLab server, Debian's Chromium through Playwright, a page.

Run them with `make test-browser` or `pytest tests/browser` (they run when tests/browser, or a file in it, is
named on the command line, or with SAELAB_BROWSER_TESTS=1; a plain `pytest tests` skips them, so unit-test runs
stay fast). Without Chromium they skip with a message saying how to install it — and fail instead when CI=true,
so a missing browser never passes silently. SAELAB_CHROMIUM points them at another Chromium or Chrome.

Adding a test for a new widget takes a few lines (see test_nb02_latent_browser.py):

    @pytest.mark.widget("my_widget")
    def test_my_widget(lab):
        nb = lab.run_notebook("0N_topic.ipynb")       # open, wait for the kernel, Run All Cells, no errors
        w = nb.widget("my_widget(")                   # the output area of the cell that shows it
        w.type("prompt", "The weather today")         # a text box by its description, then Enter
        w.expect_message("generated", what="...")     # what the page shows, within a bound
        w.shot("after a prompt")                      # reports/screenshots/0N_topic/...png

Every test's page is checked afterwards for tracebacks in the log console (where a raising widget callback ends
up), its kernels are shut down, and at the end no server, kernel or browser process may be left.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lab_harness as h
import pytest

BROWSER_DIR = Path(__file__).resolve().parent
_TIMINGS: list[tuple[str, float]] = []


def pytest_configure(config):
    config.addinivalue_line("markers", "widget(*names): the saelab widget(s) a browser test exercises")
    config.addinivalue_line("markers", "browser: drives JupyterLab in Chromium (run with pytest tests/browser)")


def _truthy(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in {"1", "true", "yes", "on"}


def browser_tests_requested(config) -> bool:
    """True when SAELAB_BROWSER_TESTS says so, or when tests/browser (or a file in it) was named on the command
    line. `pytest tests` alone does not run them: they take minutes."""
    forced = _truthy(os.environ.get("SAELAB_BROWSER_TESTS"))
    if forced is not None:
        return forced
    args = [a for a in config.invocation_params.args if not a.startswith("-")]
    start = Path(config.invocation_params.dir)
    for arg in args or ["."]:
        path = (start / arg.split("::")[0]).resolve()
        if path == BROWSER_DIR or BROWSER_DIR in path.parents:
            return True
    return False


def in_ci() -> bool:
    return bool(_truthy(os.environ.get("CI")))


def _unavailable(message: str):
    """A browser test cannot run here: fail in CI (never a silent pass there), skip with the reason elsewhere."""
    if in_ci():
        pytest.fail(message + " (CI=true: a missing browser fails the run.)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_executable(request) -> str:
    if not browser_tests_requested(request.config):
        pytest.skip("browser tests run on their own: `make test-browser` or `pytest tests/browser` "
                    "(or SAELAB_BROWSER_TESTS=1)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed: `.venv/bin/pip install playwright==1.65.2` "
                     "(never `playwright install`: the tests use Debian's Chromium).")
    executable = h.find_chromium()
    if executable is None:
        _unavailable(h.chromium_missing_message())
    return executable


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory) -> Path:
    """A copy of notebooks/ for the session's server: running cells in the browser never touches the repo."""
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copytree(h.NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return root


@pytest.fixture(scope="session")
def lab_server(chromium_executable, lab_root, tmp_path_factory):
    server = h.LabServer(lab_root, tmp_path_factory.mktemp("lab-state")).start()
    yield server
    killed = server.stop()
    if killed:
        pytest.fail(f"JupyterLab's process tree had to be killed after shutdown: {killed}", pytrace=False)


@pytest.fixture(scope="session")
def browser(chromium_executable):
    chromium = h.Browser(chromium_executable).start()
    yield chromium
    killed = chromium.stop()
    if killed:
        pytest.fail(f"browser processes had to be killed after closing: {killed}", pytrace=False)


@pytest.fixture(scope="session")
def browser_timings() -> list[tuple[str, float]]:
    """(what, seconds) for the end-of-run summary; the `lab` fixture adds its page's timings itself."""
    return _TIMINGS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def lab(lab_server, browser, request):
    """A fresh page on the session's JupyterLab. Afterwards: no callback tracebacks, kernels shut down."""
    page = browser.new_page()
    session_lab = h.Lab(lab_server, page, folder="notebooks/")  # the session's copies of the notebooks
    yield session_lab
    try:
        failed = getattr(request.node, "report_call", None) is not None and request.node.report_call.failed
        if failed:
            folder = h.SCREENSHOTS / "_failures"
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"{request.node.name}.png"), full_page=True)
        elif session_lab.opened and not session_lab.callback_errors_expected:
            session_lab.opened[-1].assert_no_callback_errors()  # earlier ones were checked as the next opened
    finally:
        _TIMINGS.extend(session_lab.timings)
        page.close()
        lab_server.shutdown_kernels()


def pytest_sessionfinish(session):
    """A safety net: a server or browser that a failed test left running is stopped here, and said so."""
    killed = h.stop_everything()
    if killed:
        print(f"\nbrowser tests: processes had to be killed at the end of the session: {killed}")


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        terminalreporter.section("browser: how long the page took to show each expected state")
        for what, seconds in _TIMINGS:
            terminalreporter.write_line(f"{seconds:7.1f}s  {what}")
