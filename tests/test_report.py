"""saelab.report: findings and the cross-notebook claims table at the top of findings.md."""

import pandas as pd
import pytest

from saelab.report import CLAIM_COLUMNS, claims_rows, findings_markdown, record_findings


def test_claims_table_gathers_notebooks_and_marks_smoke_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELAB_REPORT_DIR", str(tmp_path))
    table = pd.DataFrame({"claim (anchor)": ["binarization helps", "trees gain | most"],
                          "here": ["+0.010 [-0.02, +0.04]", "+0.1"], "rule outcome": ["held", "not held"],
                          "held": ["inconclusive: SAE below quality gate"] * 2})
    rows = claims_rows(table, paper="MOSAIC", claim="claim (anchor)", ours="here", verdict="held")
    assert set(rows[0]) == set(CLAIM_COLUMNS)
    assert rows[0]["why"] == "the rule alone says: held"
    margins = claims_rows(table.assign(margin=[0.02, float("nan")]), paper="MOSAIC", claim="claim (anchor)",
                          ours="here", verdict="held", margin="margin")
    assert [r["margin"] for r in margins] == ["0.02", ""]  # no "nan" in findings.md
    monkeypatch.setenv("SAELAB_SMOKE", "0")
    record_findings("04_x", {"a": 1.0}, claims=rows)
    monkeypatch.setenv("SAELAB_SMOKE", "1")
    record_findings("05_y", {"b": 2}, claims=[{**rows[1], "paper": "PS-Eval"}])
    text = findings_markdown(tmp_path)
    claims = text[text.index("## Claims"):text.index("## 04_x")]
    assert "| 04_x | MOSAIC | binarization helps |" in claims
    assert "trees gain / most" in claims  # a pipe would break the markdown table
    assert "smoke run, not a finding (inconclusive: SAE below quality gate)" in claims
    assert claims.count("\n| 0") == 3  # two claims of 04_x, one of 05_y


def test_claims_need_every_column():
    with pytest.raises(ValueError, match="claims_rows"):
        record_findings("04_x", {}, claims=[{"claim": "x"}])
    assert "## Claims" not in findings_markdown("/nonexistent-folder")
