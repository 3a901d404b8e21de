"""Findings that notebooks report: each notebook's closing cell records the numbers it reproduced.

`make report` runs every notebook with SAELAB_REPORT_DIR set and gathers what they record into
`reports/findings.md`, so the summary holds numbers computed by the run, never typed in by hand. It opens with one
claims table across notebooks (each research notebook passes its verdict table as `claims`, mapped onto
`CLAIM_COLUMNS` by `claims_rows`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from saelab._version import __version__
from saelab.config import smoke_mode
from saelab.io import write_json

REPORT_ENV = "SAELAB_REPORT_DIR"
#: the columns of findings.md's claims table
CLAIM_COLUMNS = ("paper", "claim", "paper's number", "ours", "margin", "verdict", "why")


def claims_rows(table, *, paper: str, claim: str, ours: str, verdict: str, paper_number: str | None = None,
                margin: str | None = None, why: str | None = None) -> list[dict[str, str]]:
    """A notebook's verdict table (a DataFrame) as claims-table rows: name the column that holds each field.

    When the table has a "rule outcome" column (`zoo.gate_claims` adds it when an SAE is below its gate), it is
    quoted in `why` where the gate changed the verdict, with the SAEs below their gate.
    """
    rows = []
    for _, row in table.iterrows():
        why_text = str(row[why]) if why else ""
        if "rule outcome" in row and verdict != "rule outcome" and str(row["rule outcome"]) != str(row[verdict]):
            why_text = f"{why_text}; " if why_text else ""
            why_text += f"the rule alone says: {row['rule outcome']}"
            if row.get("below gate"):
                why_text += f" (below their gate: {row['below gate']})"
        rows.append({"paper": paper, "claim": str(row[claim]), "paper's number": str(row[paper_number]) if
                     paper_number else "", "ours": str(row[ours]), "margin": _text(row[margin]) if margin else "",
                     "verdict": str(row[verdict]), "why": why_text})
    return rows


def _text(value) -> str:
    """A table cell as text; a missing value (None, NaN) as an empty string rather than "nan"."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def record_findings(notebook: str, findings: dict, notes: str = "", claims: list[dict[str, str]] | None = None) -> dict:
    """Record a notebook's findings (name -> value) and return them; written to disk only under `make report`.

    Values should be plain numbers or short strings. `notes` says in a sentence or two what the numbers mean.
    `claims`: the notebook's verdicts as rows of `CLAIM_COLUMNS` (see `claims_rows`), gathered at the top of
    findings.md.
    """
    if claims is not None:
        bad = [row for row in claims if set(row) != set(CLAIM_COLUMNS)]
        if bad:
            raise ValueError(f"each claim needs exactly the fields {CLAIM_COLUMNS}, got {sorted(bad[0])}: build "
                             "the rows with saelab.report.claims_rows")
    entry = {"notebook": notebook, "findings": findings, "notes": notes, "smoke_mode": smoke_mode(),
             "saelab_version": __version__, "claims": claims or []}
    folder = os.environ.get(REPORT_ENV)
    if folder:
        write_json(Path(folder) / "findings" / f"{notebook}.json", entry)
    return entry


def findings_markdown(folder: str | Path) -> str:
    """Render every recorded findings file under `folder/findings` as one markdown document."""
    lines = ["# saelab findings", "", f"saelab {__version__}. Every number below was computed by the notebook run.", ""]
    entries = [json.loads(path.read_text()) for path in sorted((Path(folder) / "findings").glob("*.json"))]
    lines += claims_markdown(entries)
    for entry in entries:
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


def claims_markdown(entries: list[dict]) -> list[str]:
    """The cross-notebook claims table (lines of markdown); smoke-mode claims are marked as not findings."""
    rows = [(entry, row) for entry in entries for row in entry.get("claims", [])]
    if not rows:
        return []
    lines = ["## Claims", "", "Every claim the research notebooks check, with the verdict their rule gave. A verdict "
             "is a finding only when the SAEs behind it pass their quality gates and its interval decides it.", "",
             "| notebook | " + " | ".join(CLAIM_COLUMNS) + " |", "|" + "---|" * (len(CLAIM_COLUMNS) + 1)]
    for entry, row in rows:
        cells = [row[column].replace("|", "/").replace("\n", " ") for column in CLAIM_COLUMNS]
        if entry.get("smoke_mode"):
            verdict = CLAIM_COLUMNS.index("verdict")
            cells[verdict] = f"smoke run, not a finding ({cells[verdict]})"
        lines.append(f"| {entry['notebook']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


__all__ = [
    "CLAIM_COLUMNS",
    "claims_markdown",
    "claims_rows",
    "REPORT_ENV",
    "findings_markdown",
    "record_findings",
]
