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
