"""Drive JupyterLab in a real Chromium, as a learner would: open a notebook, run it, use its widgets.

The pieces, each usable alone (the fixtures in conftest.py wire them together):

- `LabServer`: JupyterLab on 127.0.0.1 with a random token, in its own process group, under a time bound, with
  smoke mode on and settings that keep it quiet (no news toast, no autosave, every cell in the DOM). `stop()` shuts
  the kernels and the server down and returns any process of its tree that is still alive.
- `Browser`: Playwright's sync API on Debian's Chromium (never a downloaded browser); `stop()` likewise.
- `Notebook` (from `Lab.open_notebook`): wait for the kernel, run all cells the way browser-testing.md says, find
  a widget's output area by a piece of its cell's code, read the log console for callback tracebacks.
- `WidgetArea`: find controls by description or placeholder, type, click, pick, drag a slider, wait for the
  kernel, assert what the page shows, save screenshots under reports/screenshots/.

Every wait has a bound; the bounds can be stretched on a slow machine with `SAELAB_BROWSER_TIMEOUT_SCALE`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
SCREENSHOTS = REPO / "reports" / "screenshots"
VENV_BIN = REPO / ".venv" / "bin"

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMIUM_ENV = "SAELAB_CHROMIUM"
INSTALL_HINT = ("Install Debian's Chromium with `apt-get install -y chromium` (as root), or point "
                f"{CHROMIUM_ENV} at a Chromium or Chrome executable.")


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds in seconds. Generous: CI machines get busy. Stretch them all on a slow machine with
    SAELAB_BROWSER_TIMEOUT_SCALE (e.g. 2); SAELAB_BROWSER_RUN_TIMEOUT and SAELAB_BROWSER_WIDGET_TIMEOUT set two."""

    server_start: float = 120
    kernel_ready: float = 180
    run_all: float = 900  # one notebook, smoke mode
    widget: float = 120  # one widget reaction (a round trip to the kernel and its computation)
    server_lifetime: float = 3600  # the server is killed after this long whatever happens

    @classmethod
    def from_env(cls) -> Timeouts:
        scale = float(os.environ.get("SAELAB_BROWSER_TIMEOUT_SCALE", "1"))
        run_all = float(os.environ.get("SAELAB_BROWSER_RUN_TIMEOUT", cls.run_all))
        widget = float(os.environ.get("SAELAB_BROWSER_WIDGET_TIMEOUT", cls.widget))
        return cls(cls.server_start * scale, cls.kernel_ready * scale, run_all * scale, widget * scale,
                   cls.server_lifetime * scale)


TIMEOUTS = Timeouts.from_env()


# ------------------------------------------------------------------------------------------------------------------
# Finding the browser
# ------------------------------------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    """$SAELAB_CHROMIUM if set (it must exist), else Debian's /usr/bin/chromium, else chromium on the PATH."""
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen:
        found = shutil.which(chosen)
        return found if found else None
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def chromium_missing_message() -> str:
    chosen = os.environ.get(CHROMIUM_ENV)
    where = f"{CHROMIUM_ENV}={chosen!r} is not an executable" if chosen else \
        f"no Chromium at {', '.join(CHROMIUM_CANDIDATES)} (and {CHROMIUM_ENV} is not set)"
    return f"Chromium not found: {where}. The browser tests cannot run. {INSTALL_HINT}"


# ------------------------------------------------------------------------------------------------------------------
# Processes: what we started must be gone when we are done
# ------------------------------------------------------------------------------------------------------------------


class ProcessWatch:
    """Remembers every process under some root pids (snapshots taken while they run) to check later that none
    is left. psutil checks creation times, so a pid reused by an unrelated process is never mistaken for ours."""

    def __init__(self, roots: list[int] | None = None):
        self.roots = list(roots or [])
        self.seen: dict[int, psutil.Process] = {}
        self.cmdlines: dict[int, str] = {}  # kept: a dead process has no command line to ask for

    def snapshot(self) -> None:
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    if proc.pid not in self.seen:
                        self.seen[proc.pid] = proc
                        with _ignored(psutil.Error):
                            self.cmdlines[proc.pid] = " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue

    def alive(self) -> list[psutil.Process]:
        alive = []
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                continue
        return alive

    def wait_gone(self, seconds: float) -> list[psutil.Process]:
        deadline = time.monotonic() + seconds
        while (alive := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return alive

    @staticmethod
    def describe(procs: list[psutil.Process]) -> str:
        out = []
        for proc in procs:
            try:
                out.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:160]}")
            except psutil.Error:
                out.append(f"pid {proc.pid}")
        return "; ".join(out)

    def kill_leftovers(self) -> list[str]:
        """Kill (by pid) whatever is still alive; return descriptions of what had to be killed."""
        alive = self.alive()
        described = [self.describe([p]) for p in alive]
        for proc in alive:
            with _ignored(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        return described


_ignored = suppress


# ------------------------------------------------------------------------------------------------------------------
# The JupyterLab server
# ------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# JupyterLab user settings: no news toast; never save a notebook behind our back; keep every cell in the DOM.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The server's (and so the kernels') environment: smoke mode, one thread per kernel, offline hub."""
    env = dict(os.environ)
    env.pop("SAELAB_REPORT_DIR", None)  # a browser run never records findings
    env.update({"SAELAB_SMOKE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1"),
                "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    env.update(extra or {})
    return env


class LabServer:
    """JupyterLab serving `root_dir` on loopback with a random token.

    `via_make=True` starts it with the project's own command (`make lab`, the README's "open the workbook"
    command), which serves notebooks/; extra server options then travel in make's LAB_ARGS.
    """

    def __init__(self, root_dir: Path | None, state_dir: Path, via_make: bool = False,
                 env: dict[str, str] | None = None, lifetime: float | None = None):
        self.root_dir = Path(root_dir) if root_dir else NOTEBOOKS
        self.state_dir = Path(state_dir)
        self.via_make = via_make
        self.extra_env = env or {}
        self.lifetime = lifetime or TIMEOUTS.server_lifetime
        self.port = free_port()
        self.token = secrets.token_hex(24)
        self.base_url = f"http://127.0.0.1:{self.port}/"
        self.log_path = self.state_dir / "server.log"
        self.proc: subprocess.Popen | None = None
        self.watch = ProcessWatch()

    # ---- start ----------------------------------------------------------------------------------------------

    def server_args(self) -> list[str]:
        settings = self.state_dir / "lab-settings"
        for relative, values in LAB_SETTINGS.items():
            path = settings / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        args = ["--no-browser", f"--port={self.port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={self.token}", f"--LabApp.user_settings_dir={settings}",
                f"--LabApp.workspaces_dir={self.state_dir / 'workspaces'}",
                # checkpoints (JupyterLab makes one when it opens a notebook) stay out of the served folder
                f"--FileCheckpoints.checkpoint_dir={self.state_dir / 'checkpoints'}",
                "--ServerApp.shutdown_no_activity_timeout=0"]
        if os.geteuid() == 0:
            args.append("--allow-root")  # JupyterLab refuses to run as root otherwise (CI containers)
        return args

    def command(self) -> list[str]:
        if self.via_make:
            return ["make", "-s", "--no-print-directory", "-o", ".venv/.installed-stamp", "lab",
                    f"LAB_ARGS={shlex.join(self.server_args())}"]
        return [str(VENV_BIN / "jupyter"), "lab", *self.server_args(), f"--ServerApp.root_dir={self.root_dir}"]

    def start(self) -> LabServer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        runtime = self.state_dir / "runtime"
        runtime.mkdir(exist_ok=True)
        env = server_env({"JUPYTER_RUNTIME_DIR": str(runtime), **self.extra_env})
        # `timeout` bounds the server's life even if pytest itself is killed; start_new_session gives it a group
        command = ["timeout", "--kill-after=10", str(int(self.lifetime)), *self.command()]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop(), after the server ends
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _RUNNING.append(self)
        self.watch.roots = [self.proc.pid]
        deadline = time.monotonic() + TIMEOUTS.server_start
        while time.monotonic() < deadline:
            self.watch.snapshot()
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} before it served; "
                                   f"its log ends with:\n{self.log_tail()}")
            try:
                self.api("api/status")
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterLab did not answer on {self.base_url} within {TIMEOUTS.server_start:.0f}s; "
                           f"its log ends with:\n{self.log_tail()}")

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- REST -----------------------------------------------------------------------------------------------

    def api(self, path: str, method: str = "GET", timeout: float = 10):
        request = urllib.request.Request(self.base_url + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def url(self, path: str = "lab") -> str:
        return f"{self.base_url}{path}?token={self.token}"

    def kernels(self) -> list[dict]:
        self.watch.snapshot()
        return self.api("api/kernels")

    def shutdown_kernels(self) -> None:
        """Shut down every kernel of this server (between tests, so their memory is freed)."""
        self.watch.snapshot()
        for kernel in self.api("api/kernels"):
            with _ignored(urllib.error.URLError, ConnectionError, TimeoutError):
                self.api(f"api/kernels/{kernel['id']}", method="DELETE", timeout=30)

    # ---- stop -----------------------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop kernels and server; kill by pid anything of its process tree still alive after that.

        Returns descriptions of the processes that had to be killed (empty when the shutdown was clean).
        """
        if self.proc is None:
            return []
        self.watch.snapshot()
        if self.proc.poll() is None:
            with _ignored(urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                self.shutdown_kernels()
                self.api("api/shutdown", method="POST", timeout=10)
            with _ignored(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        if self.proc.poll() is None:
            with _ignored(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group we created with start_new_session
            with _ignored(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            with _ignored(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.watch.wait_gone(15)  # kernels exit on their own once their parent is gone
        killed = self.watch.kill_leftovers()
        self._log.close()
        self.proc = None
        if self in _RUNNING:
            _RUNNING.remove(self)
        return killed

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


# ------------------------------------------------------------------------------------------------------------------
# The browser
# ------------------------------------------------------------------------------------------------------------------


class Browser:
    """Chromium driven by Playwright's sync API. `stop()` returns any of its processes that had to be killed.

    One sync Playwright can run per thread: `sibling()` launches a second, separate Chromium on the same one.
    """

    def __init__(self, executable: str):
        self.executable = executable
        self.watch = ProcessWatch()
        self._pw = self.browser = None
        self._owns_playwright = True

    def start(self) -> Browser:
        from playwright.sync_api import sync_playwright

        me = psutil.Process()
        before = {p.pid for p in me.children()}
        self._pw = sync_playwright().start()
        _RUNNING.append(self)
        self.watch.roots = [p.pid for p in me.children() if p.pid not in before]  # Playwright's driver
        self._launch()
        return self

    def sibling(self) -> Browser:
        """Another Chromium, with processes of its own, on this browser's Playwright."""
        other = Browser(self.executable)
        other._pw, other._owns_playwright = self._pw, False
        drivers = [psutil.Process(pid) for pid in self.watch.roots]
        before = {p.pid for d in drivers for p in d.children()}
        _RUNNING.append(other)
        other._launch()
        other.watch.roots = [p.pid for d in drivers for p in d.children() if p.pid not in before]
        other.watch.snapshot()
        return other

    def _launch(self) -> None:
        # args as browser-testing.md lists them; a fresh profile comes with every launch
        self.browser = self._pw.chromium.launch(executable_path=self.executable, args=CHROMIUM_ARGS,
                                                timeout=60_000)
        self.watch.snapshot()

    def new_page(self):
        page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        self.watch.snapshot()
        return page

    def stop(self) -> list[str]:
        self.watch.snapshot()
        with _ignored(Exception):
            if self.browser is not None:
                self.browser.close()
        with _ignored(Exception):
            if self._pw is not None and self._owns_playwright:
                self._pw.stop()
        self.browser = self._pw = None
        if self in _RUNNING:
            _RUNNING.remove(self)
        self.watch.wait_gone(15)
        return self.watch.kill_leftovers()

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_RUNNING: list = []  # servers and browsers started and not yet stopped


def stop_everything() -> list[str]:
    """Stop whatever a test left running (a safety net for the end of the session); returns what was killed."""
    killed = []
    for thing in reversed(list(_RUNNING)):  # browsers and servers, latest first
        killed += thing.stop()
    return killed


# ------------------------------------------------------------------------------------------------------------------
# JupyterLab pages
# ------------------------------------------------------------------------------------------------------------------


class NotebookError(AssertionError):
    """A notebook did not run to the end in the browser, or a widget callback raised."""


@dataclass
class Lab:
    """A browser page on a `LabServer`; `folder` is where the notebooks lie below the server's root."""

    server: LabServer
    page: object
    folder: str = ""
    timings: list[tuple[str, float]] = field(default_factory=list)
    opened: list[Notebook] = field(default_factory=list)
    callback_errors_expected: bool = False  # the harness self-test breaks a callback on purpose

    def dismiss_toasts(self) -> None:
        for name in ("No", "Dismiss"):  # the "official Jupyter news?" toast, should it appear
            button = self.page.locator(".Toastify__toast").get_by_role("button", name=name, exact=True)
            if button.count():
                with _ignored(Exception):
                    button.first.click(timeout=2_000)

    def file_browser_names(self) -> list[str]:
        """Open JupyterLab at its root and return the names the file browser lists."""
        self.page.goto(self.server.url("lab/tree"))
        listing = self.page.locator(".jp-DirListing-content .jp-DirListing-itemName")
        listing.first.wait_for(timeout=TIMEOUTS.kernel_ready * 1000)
        self.dismiss_toasts()
        return [name.strip() for name in listing.all_inner_texts()]

    def open_notebook(self, path: str) -> Notebook:
        """Open `path` (relative to the server's root) and wait until its kernel is connected and idle."""
        if self.opened and not self.callback_errors_expected:
            self.opened[-1].assert_no_callback_errors()  # the log console follows the notebook on show
        # reset: open this notebook alone, not the tabs a previous page left in the workspace
        self.page.goto(self.server.url(f"lab/tree/{path}").replace("?", "?reset&", 1))
        self.page.locator(".jp-NotebookPanel:visible .jp-Notebook").first.wait_for(
            timeout=TIMEOUTS.kernel_ready * 1000)
        notebook = Notebook(self, path)
        notebook.wait_for_kernel()
        self.dismiss_toasts()
        notebook.open_log_console()
        self.opened.append(notebook)
        return notebook

    def run_notebook(self, name: str) -> Notebook:
        """Open `name` (in `folder`), run all cells, and check that no cell shows an error."""
        notebook = self.open_notebook(f"{self.folder}{name}")
        clear_screenshots(notebook.stem)
        notebook.run_all()
        errors = notebook.error_outputs()
        if errors:
            raise NotebookError(f"{name}: a cell shows an error:\n{errors[0][-1500:]}")
        return notebook


_EXECUTED = re.compile(r"^\[\d+\]:$")


class Notebook:
    """One open notebook: run it, find widgets in it, read its log console."""

    def __init__(self, lab: Lab, path: str):
        self.lab, self.page, self.path = lab, lab.page, path
        self.stem = Path(path).stem
        self.panel = self.page.locator(".jp-NotebookPanel:visible").first

    # ---- the kernel -----------------------------------------------------------------------------------------

    def kernel_state(self) -> tuple[str, str]:
        """(kernel name in the toolbar, execution indicator status)."""
        name = self.panel.locator(".jp-Toolbar-kernelName").first.inner_text().strip()
        status = self.panel.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status") or ""
        return name, status

    def wait_for_kernel(self) -> None:
        """Wait until the kernel name shows *and* the indicator reads idle: 'Run All' before that does nothing."""
        deadline = time.monotonic() + TIMEOUTS.kernel_ready
        state = ("", "")
        while time.monotonic() < deadline:
            with _ignored(Exception):
                state = self.kernel_state()
                if state[0] and state[0] not in ("No Kernel", "Kernel") and state[1] == "idle":
                    return
            time.sleep(0.5)
        raise NotebookError(f"{self.path}: the kernel did not become ready in {TIMEOUTS.kernel_ready:.0f}s "
                            f"(toolbar: {state[0]!r}, indicator: {state[1]!r}).")

    def wait_idle(self, timeout: float | None = None, settle: float = 0.6) -> None:
        """Wait until the kernel has been idle for `settle` seconds (it turns busy for every widget callback)."""
        timeout = timeout or TIMEOUTS.widget
        deadline = time.monotonic() + timeout
        idle_since = None
        while time.monotonic() < deadline:
            status = self.kernel_state()[1]
            if status == "idle":
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle:
                    return
            else:
                idle_since = None
            time.sleep(0.1)
        raise NotebookError(f"{self.path}: the kernel stayed busy for more than {timeout:.0f}s.")

    # ---- running --------------------------------------------------------------------------------------------

    def code_cells(self):
        return self.panel.locator(".jp-Notebook .jp-CodeCell")

    def prompts(self) -> list[str]:
        return [p.strip() for p in self.panel.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()]

    def run_all(self, timeout: float | None = None) -> float:
        """Run > Run All Cells, then wait until every code cell has run. Returns the seconds it took.

        Raises NotebookError naming the first cell that failed (with its error) or did not run.
        """
        timeout = timeout or TIMEOUTS.run_all
        started = time.monotonic()
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        # exact: "Run All Cells" is also part of "Restart Kernel and Run All Cells…"
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        n_cells = self.code_cells().count()
        quiet_polls = 0
        while time.monotonic() - started < timeout:
            time.sleep(1.0)
            self._fail_on_dialog()
            prompts = self.prompts()
            done = sum(bool(_EXECUTED.match(p)) for p in prompts)
            running = sum(p == "[*]:" for p in prompts)
            status = self.kernel_state()[1]
            if running == 0 and status == "idle":
                quiet_polls += 1
                if done == n_cells and quiet_polls >= 2:
                    seconds = time.monotonic() - started
                    self.lab.timings.append((f"{self.stem}: run all cells", seconds))
                    return seconds
                if quiet_polls >= 5:  # idle, nothing queued, yet cells not run: execution stopped at an error
                    raise NotebookError(self._stopped_report(prompts))
            else:
                quiet_polls = 0
        raise NotebookError(f"{self.path}: Run All Cells did not finish within {timeout:.0f}s "
                            f"({sum(bool(_EXECUTED.match(p)) for p in self.prompts())} of {n_cells} code cells "
                            "ran). Stretch SAELAB_BROWSER_RUN_TIMEOUT on a slow machine.")

    def _stopped_report(self, prompts: list[str]) -> str:
        first_unrun = next(i for i, p in enumerate(prompts) if not _EXECUTED.match(p))
        errors = self.error_outputs()
        cell = self.code_cells().nth(max(first_unrun - 1, 0)).locator(".jp-InputArea-editor").inner_text()
        detail = errors[0][-1500:] if errors else "(no error output shown)"
        return (f"{self.path}: execution stopped; code cell {first_unrun + 1} of {len(prompts)} did not run. "
                f"The cell before it:\n{cell[:600]}\nError shown:\n{detail}")

    def error_outputs(self) -> list[str]:
        """Texts of the error outputs (tracebacks) shown in the notebook's cells."""
        stderr = '.jp-Notebook .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
        texts = self.panel.locator(stderr).all_inner_texts()  # warnings land here too: keep the errors only
        return [t for t in texts if "Traceback" in t or re.search(r"^\w+(Error|Exception)\b", t, re.M)]

    def _fail_on_dialog(self) -> None:
        dialog = self.page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            raise NotebookError(f"{self.path}: JupyterLab showed a dialog: {dialog.first.inner_text()[:500]!r} "
                                "(did the kernel die?)")

    # ---- the log console: where tracebacks from widget callbacks go -------------------------------------------

    def open_log_console(self) -> None:
        self.page.get_by_role("menuitem", name="View", exact=True).click()
        self.page.get_by_role("menuitem", name="Show Log Console", exact=True).click()
        self.page.locator(".jp-LogConsolePanel").first.wait_for(timeout=15_000)
        # the log console follows the active notebook: give the focus back to it
        self.panel.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})

    def callback_errors(self) -> list[str]:
        """Tracebacks that widget callbacks raised (ipywidgets sends them to the log console, not the cell)."""
        entries = self.page.locator(".jp-LogConsolePanel .jp-OutputArea-output").all_inner_texts()
        return [e for e in entries if "Traceback" in e or re.search(r"^\w*(Error|Exception)\b", e, re.M)]

    def assert_no_callback_errors(self) -> None:
        errors = self.callback_errors()
        if errors:
            raise NotebookError(f"{self.path}: a widget callback raised; the log console shows:\n"
                                + "\n---\n".join(e[-1500:] for e in errors))

    # ---- widgets --------------------------------------------------------------------------------------------

    def cell(self, code: str):
        """The code cell whose source contains `code`."""
        cells = self.code_cells().filter(has=self.page.locator(".jp-InputArea-editor", has_text=code))
        if cells.count() == 0:
            raise NotebookError(f"{self.path}: no code cell contains {code!r}.")
        return cells.last

    def widget(self, code: str, name: str | None = None) -> WidgetArea:
        """The widget displayed by the cell whose source contains `code` (e.g. ``"latent_browser("``)."""
        area = self.cell(code).locator(".jp-OutputArea").first
        area.locator(".jupyter-widgets").first.wait_for(timeout=TIMEOUTS.widget * 1000)
        return WidgetArea(self, area, name or re.sub(r"\W+", "_", code).strip("_"))


class WidgetArea:
    """The output area of one cell that shows a widget: find its controls, act on them, check what it shows."""

    def __init__(self, notebook: Notebook, root, name: str):
        self.notebook, self.root, self.name = notebook, root, name
        self.page = notebook.page
        self.shots: list[Path] = []

    # ---- finding controls -----------------------------------------------------------------------------------

    def control(self, description: str):
        """A text box, number box, drop-down or check box, by its description (its label)."""
        return self.root.get_by_label(description, exact=True)

    def by_placeholder(self, placeholder: str):
        return self.root.get_by_placeholder(placeholder, exact=False)

    def button(self, name: str):
        return self.root.get_by_role("button", name=name, exact=True)

    def slider(self, description: str | None = None, index: int = 0):
        """An IntSlider/FloatSlider by its description (or the `index`-th slider when it has none)."""
        sliders = self.root.locator(".widget-slider")
        if description is not None:
            sliders = sliders.filter(has=self.page.locator("label.widget-label", has_text=re.compile(
                rf"^\s*{re.escape(description)}\s*$")))
        return sliders.nth(index)

    # ---- acting ---------------------------------------------------------------------------------------------

    def type(self, description: str | None, text: str, placeholder: str | None = None, enter: bool = True) -> None:
        """Replace a text box's content (found by description or placeholder) and press Enter."""
        box = self.by_placeholder(placeholder) if placeholder else self.control(description)
        box.fill(text)
        if enter:
            box.press("Enter")

    def choose(self, description: str, option: str | None = None, index: int | None = None) -> None:
        """Pick an option of a drop-down by the text it shows (or by its position)."""
        select = self.control(description)
        select.select_option(label=option) if option is not None else select.select_option(index=index)

    def tick(self, description: str, on: bool = True) -> None:
        box = self.root.get_by_role("checkbox", name=description, exact=True)
        box.check() if on else box.uncheck()

    def click(self, name: str) -> None:
        self.button(name).click()

    def slider_value(self, slider) -> float:
        return float(slider.locator(".noUi-handle").get_attribute("aria-valuenow"))

    def drag_slider(self, slider, fraction: float) -> None:
        """Drag the slider's handle with the mouse to `fraction` (0..1) of its track."""
        handle = slider.locator(".noUi-handle")
        handle.scroll_into_view_if_needed()
        box, track = handle.bounding_box(), slider.locator(".noUi-base").bounding_box()
        y = box["y"] + box["height"] / 2
        self.page.mouse.move(box["x"] + box["width"] / 2, y)
        self.page.mouse.down()
        self.page.mouse.move(track["x"] + track["width"] * fraction, y, steps=12)
        self.page.mouse.up()

    def press_slider(self, slider, key: str, times: int = 1) -> None:
        """Focus the slider's handle and press a key (ArrowRight, ArrowLeft, PageUp, End, ...)."""
        handle = slider.locator(".noUi-handle")
        handle.focus()
        for _ in range(times):
            handle.press(key)

    # ---- checking -------------------------------------------------------------------------------------------

    def message(self):
        """The widget's message line (saelab widgets: `StatusBar.message`)."""
        return self.root.locator(".saelab-message").first

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait until the busy indicator is gone and the kernel is idle; returns the seconds waited."""
        timeout = timeout or TIMEOUTS.widget
        started = time.monotonic()
        self.root.locator(".saelab-busy").first.wait_for(state="hidden", timeout=timeout * 1000)
        self.notebook.wait_idle(timeout)
        return time.monotonic() - started

    def expect(self, locator, text: str | re.Pattern, exact: bool = False, what: str = "",
               timeout: float | None = None) -> float:
        """Assert that `locator` shows `text` (contains it, or equals it with exact=True) within the widget
        timeout. Returns how long it took; raises AssertionError with expected and actual text otherwise."""
        from playwright.sync_api import expect

        timeout = timeout or TIMEOUTS.widget
        started = time.monotonic()
        check = expect(locator).to_have_text if exact else expect(locator).to_contain_text
        try:
            check(text, timeout=timeout * 1000)
        except AssertionError as err:
            actual = _safe_text(locator)
            raise AssertionError(f"{self.notebook.stem} / {self.name}{' / ' + what if what else ''}: expected "
                                 f"{'exactly ' if exact else ''}{_shown(text)}, actual {actual!r}") from err
        seconds = time.monotonic() - started
        self.notebook.lab.timings.append((f"{self.notebook.stem} / {self.name}: {what or _shown(text)}", seconds))
        return seconds

    def expect_message(self, text: str | re.Pattern, what: str = "", error: bool = False) -> float:
        """The message line shows `text`; `error=True`: as an error (red), otherwise as information."""
        seconds = self.expect(self.message(), text, what=what or f"message {_shown(text)}")
        classes = self.message().get_attribute("class") or ""
        wanted, other = ("saelab-error", "saelab-info") if error else ("saelab-info", "saelab-error")
        assert wanted in classes and other not in classes, (
            f"{self.notebook.stem} / {self.name}: the message {_safe_text(self.message())!r} should be shown as "
            f"{'an error' if error else 'information'} (classes: {classes})")
        return seconds

    def shot(self, state: str) -> Path:
        """Screenshot of the widget (its cell's output area) in its current state."""
        folder = SCREENSHOTS / self.notebook.stem
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}-{len(self.shots) + 1:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', state)}.png"
        viewport = self.page.viewport_size
        box = self.root.bounding_box()
        needed = int(box["height"]) + 500 if box else 0  # room for JupyterLab's bars around the notebook
        if needed > viewport["height"]:  # a tall widget: grow the window so the whole of it is on screen
            self.page.set_viewport_size({"width": viewport["width"], "height": min(needed, 8000)})
            self.page.wait_for_timeout(300)
        try:
            self.root.scroll_into_view_if_needed()
            self.root.screenshot(path=str(path))
        finally:
            if needed > viewport["height"]:
                self.page.set_viewport_size(viewport)
        self.shots.append(path)
        return path


def _shown(text: str | re.Pattern) -> str:
    return f"/{text.pattern}/" if isinstance(text, re.Pattern) else repr(text)


def _safe_text(locator) -> str:
    try:
        return locator.inner_text(timeout=2_000)
    except Exception:  # noqa: BLE001 - only used to describe a failure
        return "(nothing shown)"


def clear_screenshots(stem: str) -> None:
    """Remove a notebook's screenshots from an earlier run, so that the folder shows this run only."""
    shutil.rmtree(SCREENSHOTS / stem, ignore_errors=True)
