"""The course form of the notebooks: short code cells, a "before class" block, rated exercises with one check each,
linked further reading, exercise versions in sync with their sources, and an exercise version that runs up to its
first stub.

Only the notebooks listed in CONVERTED are held to the form (all eight now). A new notebook joins when it is
converted: add the file's stem to CONVERTED, then give the notebook (1) a markdown cell tagged "before-class" right
after the title, (2) exercises as a rating cell ("### Exercise NN.k · title" + "Difficulty 🔴... · Importance 🔵...
· about N minutes") followed by a code cell tagged "exercise" (the stub's body between "# SOLUTION" and "# END
SOLUTION", then one `exercise_checks.check_...` call), (3) a last markdown cell tagged "references" with arXiv
abstract links, and run `make exercises`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

# Notebooks in course form (all eight; a new notebook joins when converted, see the module docstring).
CONVERTED = [
    "00_setup_and_hooks",
    "01_extracting_activations",
    "02_training_saes",
    "03_classifsae",
    "04_binarized_sae_features",
    "05_polysemy",
    "06_steering_feature_selection",
    "07_prompt_reformulation",
]
MAX_CODE_LINES = 25
MIN_EXERCISES = 3
RATING = re.compile(r"Difficulty [🔴⚪]{5} · Importance [🔵⚪]{5} · about \d+(-\d+)? minutes")
ARXIV_ID = re.compile(r"\b(\d{4}\.\d{4,5})\b")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_exercises", ROOT / "scripts" / "make_exercises.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_exercises = _load_script()


def cells(stem: str) -> list[dict]:
    return json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text())["cells"]


def text(cell: dict) -> str:
    return "".join(cell["source"])


def tagged(cell: dict, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("stem", CONVERTED)
def test_code_cells_are_short(stem):
    long = {i: len(text(c).splitlines()) for i, c in enumerate(cells(stem)) if c["cell_type"] == "code"}
    long = {i: n for i, n in long.items() if n > MAX_CODE_LINES}
    assert not long, f"{stem}: code cells over {MAX_CODE_LINES} lines (cell index: lines) {long}"


@pytest.mark.parametrize("stem", CONVERTED)
def test_before_class_block(stem):
    found = [c for c in cells(stem)[:3] if c["cell_type"] == "markdown" and tagged(c, "before-class")]
    assert found, f"{stem}: no markdown cell tagged 'before-class' among the first three cells"
    block = text(found[0])
    for needed in ("## Before class", "Prerequisites", "smoke mode", "full mode", "make zoo", "set_smoke(True)",
                   "First run"):
        assert needed in block, f"{stem}: the before-class block does not mention {needed!r}"
    assert "{SMOKE_" not in block, f"{stem}: a timing placeholder was left in the before-class block"
    switch = [c for c in cells(stem) if c["cell_type"] == "code" and "saelab.set_smoke(True)" in text(c)]
    assert switch, f"{stem}: no code cell shows the in-notebook switch saelab.set_smoke(True)"


@pytest.mark.parametrize("stem", CONVERTED)
def test_references_with_links(stem):
    nb = cells(stem)
    last_md = [c for c in nb if c["cell_type"] == "markdown"][-1]
    assert tagged(last_md, "references") and text(last_md).startswith("## Further reading"), (
        f"{stem}: the last markdown cell must be the further reading, tagged 'references'")
    refs = text(last_md)
    assert "https://arxiv.org/abs/" in refs, f"{stem}: no arXiv abstract link in the further reading"
    cited = {m for c in nb for m in ARXIV_ID.findall(text(c))}
    unlinked = sorted(i for i in cited if f"https://arxiv.org/abs/{i}" not in refs)
    assert not unlinked, f"{stem}: arXiv ids cited but not linked in the further reading: {unlinked}"
    assert not re.search(r"\banchor", "".join(text(c) for c in nb), re.I), (
        f"{stem}: says 'anchor'; write 'the paper' (defined in notebook 00's glossary)")


@pytest.mark.parametrize("stem", CONVERTED)
def test_exercises_are_rated_and_checked(stem):
    nb = cells(stem)
    exercises = [i for i, c in enumerate(nb) if tagged(c, "exercise")]
    assert len(exercises) >= MIN_EXERCISES, f"{stem}: {len(exercises)} coded exercises; at least {MIN_EXERCISES}"
    for i in exercises:
        source, intro = text(nb[i]), text(nb[i - 1])
        assert nb[i]["cell_type"] == "code" and nb[i - 1]["cell_type"] == "markdown", f"{stem} cell {i}"
        assert intro.startswith("### Exercise ") and RATING.search(intro), (
            f"{stem} cell {i}: the cell before an exercise must be its heading with the rating line")
        assert source.count("exercise_checks.check_") == 1, f"{stem} cell {i}: exactly one check call"
        make_exercises.stub_source(source, stem)  # raises when the SOLUTION markers are missing or unbalanced


@pytest.mark.parametrize("stem", CONVERTED)
def test_figures_have_axis_labels_and_a_title(stem):
    """A static check: a cell that shows a figure sets x and y labels and a title (saelab.viz helpers label their
    axes themselves, so a cell that draws with one only needs the title)."""
    for i, cell in enumerate(cells(stem)):
        source = text(cell)
        if cell["cell_type"] != "code" or not re.search(r"plt\.show\(|sns\.catplot\(", source):
            continue
        assert re.search(r"title", source), f"{stem} cell {i}: a figure without a title"
        if "viz.plot_" not in source:
            assert re.search(r"xlabel|set_axis_labels", source) and re.search(r"ylabel|set_axis_labels", source), (
                f"{stem} cell {i}: a figure without axis labels")


def test_glossary_in_notebook_00():
    glossary = [text(c) for c in cells("00_setup_and_hooks") if tagged(c, "glossary")]
    assert glossary, "notebook 00 has no cell tagged 'glossary'"
    for term in ("latent", "feature", "hook_resid_post", "the paper"):
        assert term in glossary[0], f"the glossary does not define {term!r}"


def test_exercise_renderings_are_up_to_date():
    assert make_exercises.problems() == [], "run `make exercises`"
    rendered = set(make_exercises.renderings())
    assert {f"{stem}.ipynb" for stem in CONVERTED} <= rendered


def test_rendering_hides_solutions_and_keeps_checks():
    source = 'def f(x):\n    """Doc."""\n    # SOLUTION\n    return 2 * x\n    # END SOLUTION\n\n\ncheck(f)'
    stub = make_exercises.stub_source(source, "00_x.ipynb")
    assert "return 2 * x" not in stub and "SOLUTION" not in stub
    assert '    raise NotImplementedError("Exercise: write your solution here' in stub
    assert stub.startswith('def f(x):\n    """Doc."""\n') and stub.endswith("check(f)")
    with pytest.raises(ValueError, match="END SOLUTION"):
        make_exercises.stub_source("def f():\n    # SOLUTION\n    return 1", "00_x.ipynb")
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# t"},
                    {"cell_type": "markdown", "metadata": {"tags": ["solution"]}, "source": "answer"},
                    {"cell_type": "code", "metadata": {"tags": ["exercise"]}, "source": source, "outputs": [1],
                     "execution_count": 3}], "metadata": {}}
    out = make_exercises.render(nb, "00_x.ipynb")
    assert [c["source"] for c in out["cells"]][2] == stub and len(out["cells"]) == 3  # title, banner, stub
    assert out["cells"][2]["outputs"] == [] and nb["cells"][2]["source"] == source  # the source is not modified


@pytest.mark.parametrize("stem", CONVERTED)
def test_exercise_version_runs_to_its_first_stub(stem, tmp_path):
    """Each exercise version, in smoke mode on the tiny random GPT-2 (seconds, not a 270M model): every cell before
    the first exercise runs, and the first exercise stops with the stub's NotImplementedError."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NOTEBOOKS / "exercises" / f"{stem}.ipynb", as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", []))
    env = {**os.environ, "SAELAB_SMOKE": "1", "SAELAB_MODEL": "tiny-gpt2", "MPLBACKEND": "Agg"}
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel(env=env):
        for i, cell in enumerate(nb.cells[:first + 1]):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, i)
            except CellExecutionError as error:
                assert i == first, f"{stem}: cell {i} failed before the first exercise (cell {first}): {error}"
                assert "NotImplementedError" in str(error), error
                return
    pytest.fail(f"{stem}: the first exercise (cell {first}) ran without raising NotImplementedError")


def test_set_smoke_switches_the_process_the_zoo_included(monkeypatch):
    """`saelab.set_smoke(True)` in a notebook is read at call time by every part: smoke_mode() and the zoo's sizes."""
    import saelab
    from saelab import zoo

    monkeypatch.setenv("SAELAB_SMOKE", "0")  # restored after the test
    assert saelab.set_smoke(True) is True and saelab.smoke_mode()
    assert len(zoo.heldout_texts()) == zoo.HELDOUT_SMOKE["tweets"] + zoo.HELDOUT_SMOKE["topics"]
    saelab.set_smoke(False)
    assert not saelab.smoke_mode()
    assert len(zoo.heldout_texts()) == zoo.HELDOUT["tweets"] + zoo.HELDOUT["topics"]
    with pytest.raises(TypeError, match="True or False"):
        saelab.set_smoke("yes")
