"""The project's own promises about its packaging."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirements):
    return {(Requirement(r).name.lower().replace("_", "-"), str(Requirement(r).specifier)) for r in requirements}


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _normalise(pip_section) == _normalise(declared)
    assert "python=3.11" in env["dependencies"]


def test_torch_is_pinned_exactly():
    """A looser torch requirement would pull gigabytes of CUDA builds instead of the local CPU wheel."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_reqs = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch"]
    assert [str(r.specifier) for r in torch_reqs] == ["==2.13.0"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    first_block = readme.split("```")[1]
    assert "make test" in first_block and "make report" in first_block
    assert ci.strip().splitlines()[-1] == "make test"


def test_no_notebook_is_committed_with_outputs():
    import json

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), path.name


def _locked() -> dict[str, str]:
    """name -> version from requirements.lock (pip-compile output: `name==version \\` then hash lines)."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_lock_satisfies_pyproject_and_is_hashed():
    """`make setup` installs requirements.lock with --no-deps --require-hashes: it must hold every declared
    requirement at a version pyproject allows, each file hashed, torch as the CPU build and no CUDA package."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    pins = _locked()
    for req in declared:
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is declared in pyproject.toml but missing from requirements.lock: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    assert pins["torch"] == "2.13.0+cpu"
    assert not [n for n in pins if n.startswith(("nvidia-", "triton", "cuda-"))]
    text = (ROOT / "requirements.lock").read_text()
    assert text.count("==") == len(pins) and text.count("--hash=sha256:") >= len(pins)


def test_make_lock_writes_the_lock_the_way_it_was_written():
    """The options recorded in the lock's header are the ones `make lock` passes (so a re-lock is comparable)."""
    header = (ROOT / "requirements.lock").read_text().split("pip-compile ", 2)[2].splitlines()[0]
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split(".venv-lock/bin/pip-compile", 1)[1].split("\n\n", 1)[0]
    for option in header.split():
        if option.startswith("--") and not option.startswith("--output-file"):
            flag = option.split("=")[0]
            assert flag in recipe or flag.replace("--extra", "--extra ") in recipe, option
