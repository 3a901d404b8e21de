"""`make report` (scripts/run_notebooks.py) survives being killed mid-notebook and a rerun finishes the job.

Two stand-in notebooks of plain Python, no model: 01 records findings and counts its executions in a file; 02 writes
a marker (with its kernel's pid), waits for a "go" file, then records findings. The script is killed while 02
waits, so the kill always lands mid-notebook; the rerun must skip 01 (still executed once) and finish 02. Also:
an edited notebook runs again, and --force reruns everything.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run_notebooks.py"
# the interpreter running the tests is the venv's; the script and its kernel use it too (see the kernelspec below)
PYTHON = sys.executable
RUN_TIMEOUT = 120  # seconds for one whole script run of the stand-ins (each takes a few seconds)


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _write_first(path: Path, state: Path, edited: bool = False) -> None:
    _notebook(
        path,
        f"import pathlib\nstate = pathlib.Path({str(state)!r})\n"
        "with open(state / '01.count', 'a') as handle:\n    handle.write('ran\\n')\n"
        "runs = len((state / '01.count').read_text().splitlines())" + ("\n# edited" if edited else ""),
        "from saelab.report import record_findings\n"
        "record_findings('01_first', {'answer': 42, 'executions': runs}, notes='Stand-in notebook 01.')",
    )


def _write_second(path: Path, state: Path) -> None:
    _notebook(
        path,
        f"import os, pathlib, time\nstate = pathlib.Path({str(state)!r})\n"
        "(state / '02.started.tmp').write_text(str(os.getpid()))\n"
        "os.replace(state / '02.started.tmp', state / '02.started')\n"
        "with open(state / '02.count', 'a') as handle:\n    handle.write('ran\\n')",
        "deadline = time.monotonic() + 100\n"
        "while not (state / 'go').exists():\n"
        "    assert time.monotonic() < deadline, 'no go file'\n"
        "    time.sleep(0.05)",
        "from saelab.report import record_findings\n"
        "record_findings('02_second', {'waited_for_go': 'yes'}, notes='Stand-in notebook 02.')",
    )


class Workspace:
    def __init__(self, root: Path, kernels: Path):
        self.notebooks = root / "notebooks"
        self.state = root / "state"
        self.out = root / "out"
        for folder in (self.notebooks, self.state):
            folder.mkdir()
        self.first = self.notebooks / "01_first.ipynb"
        _write_first(self.first, self.state)
        _write_second(self.notebooks / "02_second.ipynb", self.state)
        self.env = {
            **os.environ,
            # the kernel named python3 is this interpreter, whatever kernelspecs the user or system have
            "JUPYTER_PATH": str(kernels),
            "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "IPYTHONDIR": str(root / "ipython"),
            "SAELAB_SMOKE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("SAELAB_REPORT_DIR", None)

    def command(self, *extra: str) -> list[str]:
        return [PYTHON, str(SCRIPT), "--out", str(self.out), "--notebooks", str(self.notebooks), *extra]

    def run(self, *extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(*extra), env=self.env, capture_output=True, text=True,
                                timeout=RUN_TIMEOUT)
        print(result.stdout, result.stderr)
        return result

    def count(self, notebook: str) -> int:
        path = self.state / f"{notebook}.count"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def findings(self) -> str:
        return (self.out / "findings.md").read_text()

    def manifest(self) -> dict:
        return json.loads((self.out / "run-manifest.json").read_text())["notebooks"]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> Path:
    """A jupyter data folder whose only `python3` kernelspec runs this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test)", "language": "python",
    }))
    return root


@pytest.fixture
def ws(tmp_path, kernels) -> Workspace:
    return Workspace(tmp_path, kernels)


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _kill_while_second_runs(ws: Workspace, sig: signal.Signals, *extra: str) -> tuple[int, int, str]:
    """Start the script, wait until notebook 02 is running, kill the script's process group with `sig`.

    Returns the script's exit status, the pid of 02's kernel and what the script printed."""
    log = ws.state / f"killed-{sig.name}.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(ws.command(*extra), env=ws.env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (ws.state / "02.started").exists():
            assert proc.poll() is None, f"the script ended before notebook 02 started:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"notebook 02 never started:\n{log.read_text()}"
            time.sleep(0.05)
        time.sleep(0.3)  # let the kernel settle into the wait loop
        os.killpg(proc.pid, sig)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    kernel_pid = int((ws.state / "02.started").read_text())
    return status, kernel_pid, log.read_text()


def test_killed_report_resumes_without_redoing_finished_notebooks(ws):
    """SIGTERM mid-02, rerun; edit 01, rerun; --force with a SIGKILL mid-02, rerun.

    One workspace for all five runs: every script run and kernel start costs seconds."""
    # 1. SIGTERM while 02 runs: the script records 02 as interrupted, writes findings.md, ends 02's kernel
    status, kernel_pid, output = _kill_while_second_runs(ws, signal.SIGTERM)
    try:
        assert status == 128 + signal.SIGTERM, output
        assert "interrupted (SIGTERM) while running 02_second.ipynb" in output
        findings = ws.findings()
        assert "## 01_first" in findings and "| answer | 42 |" in findings
        assert "## 02_second" not in findings
        assert "| 01_first.ipynb | ok |" in findings and "| 02_second.ipynb | interrupted |" in findings
        assert {name: entry["status"] for name, entry in ws.manifest().items()} == {
            "01_first.ipynb": "ok", "02_second.ipynb": "interrupted"}
        assert _wait_gone(kernel_pid, 15), "the script left notebook 02's kernel running"
    finally:
        _reap(kernel_pid)

    # 2. rerun: 01 is skipped (executed once in all), 02 runs again and finishes
    (ws.state / "go").touch()
    result = ws.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipping 01_first.ipynb: already done" in result.stdout
    assert "running 02_second.ipynb (last run interrupted)" in result.stdout
    assert (ws.count("01"), ws.count("02")) == (1, 2)
    _assert_complete(ws, executions=1)

    # 3. an edited notebook (its sha256 changes) runs again; the untouched one is skipped
    _write_first(ws.first, ws.state, edited=True)
    result = ws.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "running 01_first.ipynb (notebook edited)" in result.stdout
    assert "skipping 02_second.ipynb: already done" in result.stdout
    assert (ws.count("01"), ws.count("02")) == (2, 2)
    _assert_complete(ws, executions=2)

    # 4. --force reruns everything, and this time 02 is SIGKILLed: nothing can be caught, yet findings.md
    #    already holds 01's new findings, written the moment 01 finished
    (ws.state / "go").unlink()
    (ws.state / "02.started").unlink()
    status, kernel_pid, output = _kill_while_second_runs(ws, signal.SIGKILL, "--force")
    try:
        assert status == -signal.SIGKILL
        assert "skipping" not in output and "running 01_first.ipynb (--force)" in output
        assert (ws.count("01"), ws.count("02")) == (3, 3)
        findings = ws.findings()
        assert "| executions | 3 |" in findings and "## 02_second" not in findings
        assert "| 01_first.ipynb | ok |" in findings and "| 02_second.ipynb | running |" in findings
        assert ws.manifest()["02_second.ipynb"]["status"] == "running"  # what a SIGKILL leaves behind
    finally:
        _reap(kernel_pid)  # the orphaned kernel notices its parent is gone and exits by itself

    # 5. rerun after the SIGKILL: 01 is not executed again, 02 finishes
    (ws.state / "go").touch()
    result = ws.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipping 01_first.ipynb: already done" in result.stdout
    assert (ws.count("01"), ws.count("02")) == (3, 4)
    _assert_complete(ws, executions=3)


def _reap(kernel_pid: int) -> None:
    """Make sure the stand-in's kernel is gone (killing it only if it still is that kernel)."""
    if not _wait_gone(kernel_pid, 15):
        try:
            kernel = psutil.Process(kernel_pid)
            if any("ipykernel" in part for part in kernel.cmdline()):
                kernel.kill()
        except psutil.Error:
            pass


def _assert_complete(ws: Workspace, executions: int) -> None:
    findings = ws.findings()
    assert "## 01_first" in findings and f"| executions | {executions} |" in findings
    assert "## 02_second" in findings and "| waited_for_go | yes |" in findings
    assert "interrupted" not in findings and "FAILED" not in findings
    assert {name: entry["status"] for name, entry in ws.manifest().items()} == {
        "01_first.ipynb": "ok", "02_second.ipynb": "ok"}
    for name in ("01_first", "02_second"):
        assert (ws.out / "notebooks" / f"{name}.ipynb").is_file() and (ws.out / "html" / f"{name}.html").is_file()
