"""The library's house rules, checked by reading its source (ast): a leading underscore means "this module only",
saelab imports sit at the top of each file (so the import block shows the real dependency graph), and every module
says what it exports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "saelab").rglob("*.py"))
CALLERS = LIBRARY + sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_crossings(path: Path) -> list[str]:
    """`from saelab.x import _y`, or `x._y` on a saelab module bound by `import`/`from saelab import x`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "saelab":
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != here:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{alias.name}")
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("saelab"):
                    modules[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")
                and modules[node.value.id] != here):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {modules[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    crossings = [c for path in CALLERS for c in _private_crossings(path)]
    assert not crossings, "make these public where they belong:\n" + "\n".join(crossings)


def _nested_saelab_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        is_saelab = (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "saelab") or (
            isinstance(node, ast.Import) and any(a.name.split(".")[0] == "saelab" for a in node.names))
        if is_saelab and id(node) not in top:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_saelab_imports_sit_at_the_top_of_each_library_file():
    nested = [place for path in LIBRARY for place in _nested_saelab_imports(path)]
    assert not nested, "move these imports to the top of their files:\n" + "\n".join(nested)


@pytest.mark.parametrize("path", [p for p in LIBRARY if p.name != "_version.py"], ids=lambda p: _module_name(p))
def test_every_module_declares_all(path):
    tree = ast.parse(path.read_text())
    names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)]
    assert "__all__" in names, f"{path.relative_to(ROOT)} has no __all__"


def test_the_top_level_api_is_a_sorted_list_of_names():
    import types

    import saelab

    assert saelab.__all__ == sorted(saelab.__all__)
    assert not [n for n in saelab.__all__ if isinstance(getattr(saelab, n), types.ModuleType)]
    assert {"ShardedTokens", "core_metrics", "extract", "load_model", "train_sae"} <= set(saelab.__all__)


MAX_LINES = 500  # a module a newcomer can read in one sitting; cut a larger one along its seams


def test_no_library_file_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in LIBRARY if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines (split them along their sections): {long}"
