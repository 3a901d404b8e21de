"""Findings that notebooks report: each notebook's closing cell records the numbers it reproduced.

`make report` runs every notebook with SAELAB_REPORT_DIR set and gathers what they record into
`reports/findings.md`, so the summary holds numbers computed by the run, never typed in by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from saelab._version import __version__
from saelab.config import smoke_mode
from saelab.io import write_json

REPORT_ENV = "SAELAB_REPORT_DIR"


def record_findings(notebook: str, findings: dict, notes: str = "") -> dict:
    """Record a notebook's findings (name -> value) and return them; written to disk only under `make report`.

    Values should be plain numbers or short strings. `notes` says in a sentence or two what the numbers mean.
    """
    entry = {"notebook": notebook, "findings": findings, "notes": notes, "smoke_mode": smoke_mode(),
             "saelab_version": __version__}
    folder = os.environ.get(REPORT_ENV)
    if folder:
        write_json(Path(folder) / "findings" / f"{notebook}.json", entry)
    return entry


def findings_markdown(folder: str | Path) -> str:
    """Render every recorded findings file under `folder/findings` as one markdown document."""
    lines = ["# saelab findings", "", f"saelab {__version__}. Every number below was computed by the notebook run.", ""]
    for path in sorted((Path(folder) / "findings").glob("*.json")):
        entry = json.loads(path.read_text())
        mode = " (smoke mode)" if entry.get("smoke_mode") else ""
        lines += [f"## {entry['notebook']}{mode}", ""]
        if entry.get("notes"):
            lines += [entry["notes"], ""]
        lines += ["| finding | value |", "|---|---|"]
        for key, value in entry["findings"].items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "REPORT_ENV",
    "findings_markdown",
    "record_findings",
]
