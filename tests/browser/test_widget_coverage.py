"""Every saelab widget a notebook uses is exercised by a browser test, and every notebook with widgets is run.

Fast and static (no browser): it reads the notebooks' code cells and the browser tests'
`@pytest.mark.widget(...)` markers, so a new widget in a notebook without a browser test fails here, by name.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import nbformat

import saelab.widgets

BROWSER_TESTS = Path(__file__).resolve().parent
NOTEBOOKS = BROWSER_TESTS.parents[1] / "notebooks"


def is_widget(obj) -> bool:
    """A widget: a class that displays itself (`_ipython_display_`, or an ipywidgets widget), or a function
    annotated to return one. Helpers such as StatusBar or pooling_summary are not."""
    if isinstance(obj, type):
        import ipywidgets

        return hasattr(obj, "_ipython_display_") or issubclass(obj, ipywidgets.DOMWidget)
    returned = getattr(obj, "__annotations__", {}).get("return")
    if not callable(obj) or returned is None:
        return False
    if isinstance(returned, str):  # postponed annotations: look the name up where the function lives
        returned = getattr(importlib.import_module(obj.__module__), returned, None)
    return isinstance(returned, type) and is_widget(returned)


def widgets_used(source: str) -> set[str]:
    """Widgets from saelab.widgets (or its modules) that a notebook's code imports or calls."""
    used = set()
    pattern = r"from[ \t]+(saelab\.widgets(?:\.\w+)?)[ \t]+import[ \t]+(?:\(([^)]*)\)|([\w \t,]+))"
    for match in re.finditer(pattern, source):
        module = importlib.import_module(match.group(1))
        for name in (match.group(2) or match.group(3)).split(","):
            name = name.split(" as ")[0].strip()
            if name and is_widget(getattr(module, name, None)):
                used.add(name)
    for name in re.findall(r"\bwidgets\.(\w+)\s*\(", source):
        if is_widget(getattr(saelab.widgets, name, None)):
            used.add(name)
    return used


def widgets_tested() -> dict[str, set[str]]:
    """widget name -> the test files whose tests carry @pytest.mark.widget(name)."""
    tested: dict[str, set[str]] = {}
    for path in BROWSER_TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "widget"
                    and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "mark"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        tested.setdefault(arg.value, set()).add(path.name)
    return tested


def notebook_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")


def test_every_notebook_widget_has_a_browser_test():
    tested = widgets_tested()
    untested = {}
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        missing = sorted(widgets_used(notebook_code(path)) - set(tested))
        if missing:
            untested[path.name] = missing
    assert not untested, (f"widgets used in notebooks without a browser test: {untested}. Add a test in "
                          "tests/browser/ marked @pytest.mark.widget('<name>') that drives it (see conftest.py).")


def test_every_notebook_with_widgets_is_run_in_the_browser():
    sources = "\n".join(p.read_text() for p in BROWSER_TESTS.glob("test_*.py"))
    not_run = [p.name for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
               if widgets_used(notebook_code(p)) and f'run_notebook("{p.name}")' not in sources]
    assert not not_run, f"notebooks with widgets that no browser test runs: {not_run}"


def test_the_coverage_check_can_fail():
    code = "from saelab.widgets import latent_browser, pooling_explorer\nx = saelab.widgets.latent_browser(r)"
    assert widgets_used(code) == {"latent_browser", "pooling_explorer"}
    assert widgets_used("import saelab\nsaelab.viz.latent_dashboard(r, 3)") == set()
    assert widgets_used("from saelab.widgets import StatusBar, pooling_summary") == set()  # helpers
    assert widgets_used("from saelab.widgets import (\n    latent_browser,\n)") == {"latent_browser"}
    assert widgets_used("from saelab.widgets.pooling import pooling_explorer as pe") == {"pooling_explorer"}
    assert "latent_browser" in widgets_tested() and "pooling_explorer" in widgets_tested()
