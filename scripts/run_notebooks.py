"""Run every numbered notebook (full mode unless SAELAB_SMOKE=1) and write the results under an output folder.

Writes `<out>/notebooks/NN_topic.ipynb` (executed), `<out>/html/NN_topic.html` and `<out>/findings.md` (the
numbers each notebook recorded with `saelab.report.record_findings`). Stops at the first failing notebook but
still writes what ran, with the error, so nothing is lost.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saelab.io import atomic_path  # noqa: E402
from saelab.report import REPORT_ENV, findings_markdown  # noqa: E402


def run(notebook: Path, out: Path, timeout: int) -> tuple[bool, float]:
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}})
    started = time.perf_counter()
    ok = True
    try:
        client.execute()
    except CellExecutionError as err:
        ok = False
        print(f"  FAILED: {str(err).splitlines()[0] if str(err) else err}")
    elapsed = time.perf_counter() - started
    with atomic_path(out / "notebooks" / notebook.name) as tmp:
        nbformat.write(nb, tmp)
    html, _ = HTMLExporter().from_notebook_node(nb)
    with atomic_path(out / "html" / notebook.with_suffix(".html").name) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return ok, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="reports", type=Path)
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ[REPORT_ENV] = str(out)
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [n for n in notebooks if any(n.name.startswith(p) for p in args.only)]
    timings = []
    for notebook in notebooks:
        print(f"running {notebook.name} ...", flush=True)
        ok, elapsed = run(notebook, out, args.timeout)
        timings.append((notebook.name, ok, elapsed))
        print(f"  {'ok' if ok else 'FAILED'} in {elapsed:.0f}s", flush=True)
        if not ok:
            break
    summary = findings_markdown(out) + "\n## Run\n\n| notebook | status | seconds |\n|---|---|---|\n"
    summary += "\n".join(f"| {name} | {'ok' if ok else 'FAILED'} | {t:.0f} |" for name, ok, t in timings) + "\n"
    with atomic_path(out / "findings.md") as tmp:
        tmp.write_text(summary, encoding="utf-8")
    print(f"wrote {out / 'findings.md'}")
    return 0 if all(ok for _, ok, _ in timings) and len(timings) == len(notebooks) else 1


if __name__ == "__main__":
    sys.exit(main())
