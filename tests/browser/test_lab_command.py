"""`make lab` (the README's "open the workbook" command) in a real browser: the server starts, the file browser
lists every numbered notebook, notebook 00 runs, and nothing of server, kernel or browser is left afterwards.

This test starts its own server (through make, serving the repository's notebooks/) and its own Chromium, so it
can check the teardown. JupyterLab's autosave is off, and the test checks that notebook 00 is unchanged on disk.
"""

from __future__ import annotations

import hashlib

import lab_harness as h

NOTEBOOK = "00_setup_and_hooks.ipynb"


def _fingerprint() -> str:
    return hashlib.sha256((h.NOTEBOOKS / NOTEBOOK).read_bytes()).hexdigest()


def test_make_lab_opens_the_workbook_and_leaves_nothing_running(browser, browser_timings, tmp_path):
    numbered = sorted(p.name for p in h.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert numbered, "no numbered notebooks in notebooks/"
    before = _fingerprint()
    server = h.LabServer(None, tmp_path / "state", via_make=True)
    chromium = None
    try:
        server.start()
        chromium = browser.sibling()  # a Chromium of its own, so that its teardown can be checked here
        lab = h.Lab(server, chromium.new_page())
        listed = lab.file_browser_names()
        missing = [name for name in numbered if name not in listed]
        assert not missing, f"the file browser does not list {missing}; it lists {listed}"
        lab.page.screenshot(path=str(_shot_path("file-browser")))

        nb = lab.run_notebook(NOTEBOOK)
        for code, shown in [("no hook leaked", "no hook leaked"),
                            ("exercise_checks.check_scale_hook(scale_resid, model, tokens)",
                             "correct: inside the model the residual-stream norm is"),
                            ("model.generate(prompt", "The three primary colours are")]:
            h.WidgetArea(nb, nb.cell(code).locator(".jp-OutputArea"), "output").expect(
                nb.cell(code).locator(".jp-OutputArea"), shown, what=f"output of {code!r}")
        lab.page.screenshot(path=str(_shot_path("notebook-00-after-run-all")))
        nb.assert_no_callback_errors()
        browser_timings.extend(lab.timings)
        lab.page.close()
    finally:
        killed_browser = chromium.stop() if chromium else []
        killed_server = server.stop()

    assert not killed_server, f"server processes had to be killed after shutdown: {killed_server}"
    assert not killed_browser, f"browser processes had to be killed after closing: {killed_browser}"
    assert server.watch.alive() == [] and chromium.watch.alive() == []
    # the check saw what it was meant to check: make, the server, a kernel, and Chromium
    server_cmds = " | ".join(server.watch.cmdlines.values())
    assert "jupyter-lab" in server_cmds or "jupyter lab" in server_cmds, server_cmds
    assert "ipykernel_launcher" in server_cmds, f"no kernel process was seen: {server_cmds}"
    assert any("chrom" in c for c in chromium.watch.cmdlines.values()), chromium.watch.cmdlines
    assert _fingerprint() == before, f"running {NOTEBOOK} in the browser changed the file (autosave?)"


def _shot_path(name: str):
    folder = h.SCREENSHOTS / "lab"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"
