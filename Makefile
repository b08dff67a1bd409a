# tmkt: the set-up and the pipelines. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tmkt-installed
PYTEST_ARGS ?=

.PHONY: install test test-faults demo bench lint format docs clean

install: $(STAMP)  ## create .venv and install tmkt with its dependencies (CPU route)

# The CPU route: torch's CPU wheel, then spikingjelly and tonic without their optional heavy
# dependencies (torchvision, torchaudio, librosa), then tmkt itself. See README "Installing".
$(STAMP): pyproject.toml requirements/cpu.txt requirements/nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/cpu.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

test: install  ## the test suite (offline, a few minutes)
	$(BIN)/python -m pytest -q -m "not faults" $(PYTEST_ARGS)

test-faults: install  ## the full fault-injection suite
	$(BIN)/python -m pytest -q -m faults $(PYTEST_ARGS)

demo: install  ## the whole pipeline on the embedded digits dataset
	PATH=$(abspath $(BIN)):$$PATH bash scripts/demo.sh

bench: install  ## speed benchmarks (ratios, see docs/performance.md)
	$(BIN)/python bench/run_all.py

lint: install
	$(BIN)/ruff check tmkt_cli tests bench

format: install
	$(BIN)/ruff format tmkt_cli tests bench

docs: install  ## regenerate docs/recipes.md from the schema
	$(BIN)/tmkt recipe-doc > docs/recipes.md

clean:
	rm -rf $(VENV) runs prepared .pytest_cache
