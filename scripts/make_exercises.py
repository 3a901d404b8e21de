"""Render the exercise version of every notebook that has tagged exercises: `notebooks/NN_x.ipynb` (the solution
version, the one source) -> `notebooks/exercises/NN_x.ipynb`.

Cell tags (cell metadata "tags") drive it:
- ``exercise``: a code cell holding one or more blocks between a ``# SOLUTION`` line and an ``# END SOLUTION``
  line. In the exercise version each block becomes ``raise NotImplementedError(...)`` at the block's indentation;
  the rest of the cell (the stub's signature and docstring, the one-line check) stays.
- ``solution``: a cell that only the solution version shows (a worked answer, a discussion of the result); dropped.
- ``before-class`` and ``references``: the block at the top and the further reading at the end (kept; the form
  test requires them).

    .venv/bin/python scripts/make_exercises.py           # (re)write notebooks/exercises/
    .venv/bin/python scripts/make_exercises.py --check   # exit 1 if a rendering is missing, stale or orphaned
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = NOTEBOOKS / "exercises"
START, END = re.compile(r"^(\s*)# SOLUTION\s*$"), re.compile(r"^\s*# END SOLUTION\s*$")
STUB = 'raise NotImplementedError("Exercise: write your solution here (solution in ../{name})")'


def tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def stub_source(source: str, notebook: str) -> str:
    """`source` with every ``# SOLUTION`` ... ``# END SOLUTION`` block replaced by a `NotImplementedError` stub."""
    out, indent, n_blocks = [], None, 0
    for line in source.splitlines(keepends=True):
        if indent is None and (start := START.match(line)):
            indent, n_blocks = start.group(1), n_blocks + 1
            out.append(indent + STUB.format(name=notebook) + "\n")
        elif indent is not None and END.match(line):
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ValueError(f"{notebook}: a '# SOLUTION' block has no '# END SOLUTION' line")
    if n_blocks == 0:
        raise ValueError(f"{notebook}: a cell tagged 'exercise' has no '# SOLUTION' ... '# END SOLUTION' block")
    return "".join(out)


def banner(name: str) -> dict:
    text = (f"> **Exercise version** of [`{name}`](../{name}), written by `make exercises` "
            "(`scripts/make_exercises.py`): do not edit it here, edit the solution notebook and rerun. Each exercise "
            "stub raises `NotImplementedError` until you write it; the check under it then tells you whether it is "
            "right and, if not, names the likely mistake. The solutions are in the solution notebook.")
    return {"cell_type": "markdown", "id": "exercise-version-banner", "metadata": {"tags": ["generated"]},
            "source": text}


def render(nb: dict, name: str) -> dict:
    """The exercise version of notebook `nb` (a parsed .ipynb) named `name`: stubs in, solution cells out."""
    out = copy.deepcopy(nb)
    cells = []
    for cell in out["cells"]:
        if "solution" in tags(cell):
            continue
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if "exercise" in tags(cell):
                cell["source"] = stub_source("".join(cell["source"]), name)
        cells.append(cell)
    out["cells"] = [cells[0], banner(name), *cells[1:]]
    return out


def has_exercises(nb: dict) -> bool:
    return any("exercise" in tags(c) for c in nb["cells"])


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def renderings(src: Path = NOTEBOOKS) -> dict[str, str]:
    """{file name: exercise-version text} for every numbered notebook in `src` that has tagged exercises."""
    result = {}
    for path in sorted(src.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        if has_exercises(nb):
            result[path.name] = dumps(render(nb, path.name))
    return result


def problems(src: Path = NOTEBOOKS, out: Path = OUT) -> list[str]:
    """What is out of date in `out`: missing or stale renderings, and renderings whose source has no exercises."""
    wanted = renderings(src)
    found = {p.name for p in out.glob("*.ipynb")} if out.exists() else set()
    issues = [f"{n}: missing" for n in sorted(set(wanted) - found)]
    issues += [f"{n}: stale" for n in sorted(set(wanted) & found) if (out / n).read_text() != wanted[n]]
    issues += [f"{n}: no source notebook with exercises" for n in sorted(found - set(wanted))]
    return issues


def write(src: Path = NOTEBOOKS, out: Path = OUT) -> list[str]:
    """Write every rendering into `out`, remove orphans; returns the names written."""
    out.mkdir(parents=True, exist_ok=True)
    wanted = renderings(src)
    for name, text in wanted.items():
        (out / name).write_text(text)
    for orphan in set(p.name for p in out.glob("*.ipynb")) - set(wanted):
        (out / orphan).unlink()
    return sorted(wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the renderings are up to date")
    args = parser.parse_args(argv)
    if args.check:
        issues = problems()
        for issue in issues:
            print(f"notebooks/exercises/{issue}", file=sys.stderr)
        if issues:
            print("run `make exercises` to rewrite them", file=sys.stderr)
        return 1 if issues else 0
    for name in write():
        print(f"wrote notebooks/exercises/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
