"""The rule that keeps CI honest: under CI=true a skipped test fails the run; elsewhere it stays a skip."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
SKIPPING = """
import pytest

def test_needs_a_missing_module():
    pytest.importorskip("saelab_no_such_module")

def test_needs_a_missing_file():
    pytest.skip("WordNet is not installed")

def test_runs():
    assert True

@pytest.mark.xfail(reason="a known failure", strict=True)
def test_known_failure():
    assert False
"""


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_skip_fails_under_ci(pytester, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(SKIPPING)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    result.stdout.fnmatch_lines(["*would be skipped*WordNet is not installed*nothing may be skipped*"])


def test_a_skip_stays_a_skip_outside_ci(pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(SKIPPING)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2, xfailed=1)
