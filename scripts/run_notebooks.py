"""Run every numbered notebook (full mode unless SAELAB_SMOKE=1) and write the results under an output folder.

Writes `<out>/notebooks/NN_topic.ipynb` (executed), `<out>/html/NN_topic.html` and `<out>/findings.md` (the
numbers each notebook recorded with `saelab.report.record_findings`). Stops at the first failing notebook but
still writes what ran, with the error, so nothing is lost.

An interrupted run loses nothing and a rerun picks up where it stopped:

- `<out>/run-manifest.json` records, per notebook, that it finished OK together with what it depended on (the
  notebook file's sha256, smoke mode, the saelab version, the Python and key package versions). A rerun skips a
  notebook that finished OK with the same fingerprint whose executed notebook, HTML and findings are still there;
  everything else runs again (the interrupted notebook reruns, cheaply where saelab's caches already hold its
  activations, SAEs and models). `--force` reruns everything.
- `findings.md` is rewritten after every notebook, and on SIGINT / SIGTERM / SIGHUP, which also mark the notebook
  that was running as interrupted, shut its kernel down and exit non-zero (128 + the signal number). After a
  SIGKILL the copy written after the last finished notebook remains.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import signal
import sys
import time
from importlib import metadata
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saelab._version import __version__  # noqa: E402
from saelab.config import SMOKE_ENV, smoke_mode  # noqa: E402
from saelab.io import atomic_path, read_json, sha256_file, write_json  # noqa: E402
from saelab.report import REPORT_ENV, findings_markdown  # noqa: E402

MANIFEST = "run-manifest.json"
MANIFEST_FORMAT = 1
# libraries whose version can change a notebook's numbers; a change reruns every notebook
KEY_PACKAGES = ("torch", "transformers", "transformer-lens", "sae-lens", "numpy", "scipy", "scikit-learn")
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """Raised by the signal handler (and for Ctrl-C) so the run can record what it finished before it exits."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def _ignore_stop_signals() -> None:
    """Once interrupted, let the clean-up finish: a second Ctrl-C must not cut the findings write short."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment_fingerprint() -> dict:
    """What every notebook depends on besides its own file."""
    return {
        "smoke_mode": smoke_mode(),
        "saelab_version": __version__,
        "python": platform.python_version(),
        "packages": {name: _package_version(name) for name in KEY_PACKAGES},
    }


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _outputs(notebook: Path) -> dict[str, str]:
    """Where a notebook's executed copy and HTML go, relative to the output folder."""
    return {"notebook": f"notebooks/{notebook.name}", "html": f"html/{notebook.with_suffix('.html').name}"}


def _findings_snapshot(out: Path) -> dict[str, tuple[int, int]]:
    folder = out / "findings"
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.json")}


class Run:
    """One invocation: the notebooks to run, the manifest, and what happened to each notebook so far."""

    def __init__(self, out: Path, notebooks: list[Path], all_notebooks: list[Path], timeout: int, force: bool):
        self.out = out
        self.notebooks = notebooks
        self.all_notebooks = all_notebooks
        self.timeout = timeout
        self.force = force
        self.env = environment_fingerprint()
        self.manifest = self._load_manifest()
        self.status: dict[str, tuple[str, float | None]] = {}  # notebook name -> (status shown, seconds)
        self.current: Path | None = None
        self.current_started = 0.0
        self.partial = None  # (notebook path, NotebookNode) of the notebook cut short, written after the manifest

    # --- manifest ---------------------------------------------------------------------------------------------

    def _load_manifest(self) -> dict:
        path = self.out / MANIFEST
        if path.exists():
            try:
                manifest = read_json(path)
                if manifest.get("format") == MANIFEST_FORMAT and isinstance(manifest.get("notebooks"), dict):
                    return manifest
                print(f"ignoring {path}: unknown format; every notebook runs", flush=True)
            except (OSError, ValueError, AttributeError) as err:
                print(f"ignoring unreadable {path} ({err}); every notebook runs", flush=True)
        return {"format": MANIFEST_FORMAT, "notebooks": {}}

    def write_manifest(self) -> None:
        self.manifest["updated"] = _now()
        write_json(self.out / MANIFEST, self.manifest)

    def fingerprint(self, notebook: Path) -> dict:
        return {"notebook_sha256": sha256_file(notebook), **self.env}

    def done_reason(self, notebook: Path, fingerprint: dict) -> tuple[bool, str]:
        """(True, "") when the notebook finished OK earlier with this fingerprint and its outputs are all there."""
        entry = self.manifest["notebooks"].get(notebook.name)
        if not entry:
            return False, "not run before"
        if entry.get("status") != "ok":
            return False, f"last run {entry.get('status', 'unknown')}"
        old = entry.get("fingerprint") or {}
        if old != fingerprint:
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            names = {"notebook_sha256": "notebook edited", "smoke_mode": "smoke mode changed",
                     "saelab_version": "saelab version changed", "python": "Python version changed",
                     "packages": "package versions changed"}
            return False, ", ".join(names.get(k, f"{k} changed") for k in changed)
        wanted = [*(entry.get("outputs") or {}).values(), *(entry.get("findings") or [])]
        missing = [p for p in wanted if not (self.out / p).is_file()]
        if missing or not entry.get("outputs"):
            return False, f"output missing ({', '.join(missing) or 'no outputs recorded'})"
        return True, ""

    # --- findings.md ------------------------------------------------------------------------------------------

    def write_findings(self) -> None:
        rows = []
        for notebook in self.all_notebooks:
            status, seconds = self.status.get(notebook.name, (None, None))
            if status is None:
                entry = self.manifest["notebooks"].get(notebook.name) or {}
                selected = notebook in self.notebooks
                done = entry.get("status") == "ok" and self.done_reason(notebook, self.fingerprint(notebook))[0]
                if not selected and done:
                    status, seconds = "ok (earlier run)", entry.get("seconds")
                elif selected and entry.get("status") == "ok" and entry.get("findings"):
                    status = "not run yet (findings above from an earlier run)"
                else:
                    status = "not run" if selected or not entry else f"not selected (last run: {entry.get('status')})"
            shown = "" if seconds is None else f"{seconds:.0f}"
            rows.append(f"| {notebook.name} | {status} | {shown} |")
        summary = findings_markdown(self.out) + "\n## Run\n\n| notebook | status | seconds |\n|---|---|---|\n"
        summary += "\n".join(rows) + "\n"
        with atomic_path(self.out / "findings.md") as tmp:
            tmp.write_text(summary, encoding="utf-8")

    # --- one notebook -----------------------------------------------------------------------------------------

    def execute(self, notebook: Path) -> tuple[bool, float]:
        nb = nbformat.read(notebook, as_version=4)
        self.partial = (notebook, nb)
        client = NotebookClient(nb, timeout=self.timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(notebook.parent)}})
        started = time.perf_counter()
        ok = True
        try:
            _execute_cells(client)
        except Exception as err:  # noqa: BLE001 - a failing cell, a cell timeout, a dead kernel, a kernel that would not start
            ok = False
            text = f"{err.ename}: {err.evalue}" if getattr(err, "ename", None) else str(err).strip()
            print(f"  FAILED: {type(err).__name__}: {text.splitlines()[0] if text else ''}", flush=True)
        elapsed = time.perf_counter() - started
        self.partial = None
        write_outputs(notebook, nb, self.out)
        return ok, elapsed

    def run_one(self, notebook: Path, fingerprint: dict) -> bool:
        entries = self.manifest["notebooks"]
        previous = entries.get(notebook.name) or {}
        # this notebook's findings from an earlier run describe a run that is being replaced: drop them, so
        # findings.md only ever shows numbers from runs that finished
        stale = {*(previous.get("findings") or []), f"findings/{notebook.stem}.json"}
        for rel in stale:
            (self.out / rel).unlink(missing_ok=True)
        entries[notebook.name] = {"status": "running", "fingerprint": fingerprint, "started": _now()}
        self.status[notebook.name] = ("running", None)  # what findings.md says if a SIGKILL ends the run now
        self.write_manifest()
        self.write_findings()
        before = _findings_snapshot(self.out)
        self.current, self.current_started = notebook, time.perf_counter()
        ok, elapsed = self.execute(notebook)
        after = _findings_snapshot(self.out)
        recorded = sorted(f"findings/{name}" for name, stamp in after.items() if before.get(name) != stamp)
        entries[notebook.name] = {
            "status": "ok" if ok else "failed", "fingerprint": fingerprint, "finished": _now(),
            "seconds": round(elapsed, 1), "outputs": _outputs(notebook), "findings": recorded,
        }
        self.current = None
        self.status[notebook.name] = ("ok" if ok else "FAILED", elapsed)
        self.write_manifest()
        self.write_findings()
        return ok

    # --- the whole run ----------------------------------------------------------------------------------------

    def run(self) -> int:
        for notebook in self.notebooks:
            fingerprint = self.fingerprint(notebook)
            done, reason = (False, "--force") if self.force else self.done_reason(notebook, fingerprint)
            if done:
                entry = self.manifest["notebooks"][notebook.name]
                print(f"skipping {notebook.name}: already done (finished OK {entry.get('finished', '')}, same "
                      "notebook, mode and versions; --force reruns it)", flush=True)
                self.status[notebook.name] = ("ok (done earlier, skipped)", entry.get("seconds"))
                continue
            print(f"running {notebook.name} ({reason}) ...", flush=True)
            ok = self.run_one(notebook, fingerprint)
            print(f"  {'ok' if ok else 'FAILED'} in {self.status[notebook.name][1]:.0f}s", flush=True)
            if not ok:
                break
        self.write_findings()
        print(f"wrote {self.out / 'findings.md'}")
        skipped = [n.name for n in self.notebooks if self.status.get(n.name, ("",))[0].startswith("ok (done")]
        if skipped:
            print(f"skipped as already done: {', '.join(skipped)}")
        return 0 if all(self.status.get(n.name, ("",))[0].startswith("ok") for n in self.notebooks) else 1

    def record_interruption(self, err: Interrupted) -> int:
        """Mark the running notebook as interrupted and write the manifest, findings.md and its partial outputs."""
        notebook = self.current
        if notebook is not None:
            elapsed = time.perf_counter() - self.current_started
            entry = self.manifest["notebooks"].get(notebook.name) or {}
            entry.update({"status": "interrupted", "signal": str(err), "finished": _now(),
                          "seconds": round(elapsed, 1)})
            entry.pop("outputs", None)
            self.manifest["notebooks"][notebook.name] = entry
            self.status[notebook.name] = ("interrupted", elapsed)
            print(f"\ninterrupted ({err}) while running {notebook.name}; a rerun continues from it", flush=True)
        else:
            print(f"\ninterrupted ({err})", flush=True)
        self.write_manifest()
        self.write_findings()
        print(f"wrote {self.out / 'findings.md'}", flush=True)
        if self.partial is not None:  # the cells that did run, for a look at where it stopped
            try:
                write_outputs(*self.partial, self.out)
            except Exception as write_err:  # noqa: BLE001 - the manifest and findings are already safe
                print(f"could not write the partial notebook: {write_err}", flush=True)
        return 128 + err.signum


def _execute_cells(client: NotebookClient) -> None:
    """`client.execute()`, minus the SIGINT/SIGTERM handlers it installs (they would replace ours), and with a kernel
    that is shut down whatever happens: gracefully after the last cell, at once when interrupted."""
    client.reset_execution_trackers()
    client.km = client.create_kernel_manager()
    interrupted = False
    try:
        client.start_new_kernel()
        client.start_new_kernel_client()
        info = client.wait_for_reply(client.kc.kernel_info())
        if info is not None and "language_info" in info["content"]:
            client.nb.metadata["language_info"] = info["content"]["language_info"]
        for index, cell in enumerate(client.nb.cells):
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        client.set_widgets_metadata()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        try:
            _shutdown_kernel(client, now=interrupted)
        except KeyboardInterrupt:  # interrupted during a graceful shutdown: end the kernel at once, then stop
            _shutdown_kernel(client, now=True)
            raise


def _shutdown_kernel(client: NotebookClient, now: bool) -> None:
    if now:
        _ignore_stop_signals()
        _cancel_pending_tasks()
        client.shutdown_kernel = "immediate"
    if client.km is not None:
        try:
            client._cleanup_kernel()
        except Exception as err:  # noqa: BLE001
            print(f"  (kernel clean-up: {err})", flush=True)


def _cancel_pending_tasks() -> None:
    """An interrupt leaves nbclient's cell coroutines pending on the loop; cancel them before the kernel goes."""
    from jupyter_core.utils import ensure_event_loop

    loop = ensure_event_loop()
    if loop.is_running():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def write_outputs(notebook: Path, nb, out: Path) -> None:
    with atomic_path(out / "notebooks" / notebook.name) as tmp:
        nbformat.write(nb, tmp)
    html, _ = HTMLExporter().from_notebook_node(nb)
    with atomic_path(out / "html" / notebook.with_suffix(".html").name) as tmp:
        tmp.write_text(html, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports", type=Path)
    parser.add_argument("--notebooks", default=ROOT / "notebooks", type=Path,
                        help="folder holding the NN_*.ipynb notebooks (default: the repository's notebooks/)")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun every notebook, even those already done")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ[REPORT_ENV] = str(out)
    all_notebooks = sorted(args.notebooks.resolve().glob("[0-9][0-9]_*.ipynb"))
    notebooks = all_notebooks
    if args.only:
        notebooks = [n for n in notebooks if any(n.name.startswith(p) for p in args.only)]
    if not notebooks:
        print(f"no notebooks to run in {args.notebooks}", file=sys.stderr)
        return 2
    mode = "smoke" if smoke_mode() else "full"
    print(f"{len(notebooks)} notebook(s) from {args.notebooks} in {mode} mode ({SMOKE_ENV}) -> {out}", flush=True)

    run = Run(out, notebooks, all_notebooks, args.timeout, args.force)
    for sig in STOP_SIGNALS:  # each raises Interrupted, which carries the signal's name and number
        signal.signal(sig, _raise_interrupted)
    try:
        return run.run()
    except KeyboardInterrupt as err:
        _ignore_stop_signals()
        return run.record_interruption(err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT))


if __name__ == "__main__":
    sys.exit(main())
