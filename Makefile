# tmkt: the set-up and the pipelines. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tmkt-installed
PYTEST_ARGS ?=

.PHONY: install test test-faults test-slurm demo bench gpu-check lint format docs clean pipeline

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
	$(BIN)/python -m pytest -q -m "not faults and not slurm" $(PYTEST_ARGS)

test-faults: install  ## the full fault-injection suite
	$(BIN)/python -m pytest -q -m faults $(PYTEST_ARGS)

test-slurm: install  ## the SLURM scripts on a real single-node SLURM (needs root, slurm-wlm, munge)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -m slurm $(PYTEST_ARGS)

demo: install  ## the whole pipeline on the embedded digits dataset
	PATH=$(abspath $(BIN)):$$PATH bash tools/demo.sh

bench: install  ## speed benchmarks (ratios, see docs/performance.md)
	$(BIN)/python bench/run_all.py

gpu-check: install  ## on a GPU machine: CUDA tests + the published step and data path (bench/gpu_check.py)
	$(BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS)

lint: install
	$(BIN)/ruff check tmkt_cli tests bench

format: install
	$(BIN)/ruff format tmkt_cli tests bench

docs: install  ## regenerate docs/recipes.md from the schema
	$(BIN)/tmkt recipe-doc > docs/recipes.md

# --- make pipeline RECIPE=recipes/<dataset>/<method>.yaml [SET="--set seed=1024 ..."] -------
# prepare -> (pretrain-ann -> distill | train-tmkt) -> eval -> cam. Each target is a stamp in
# the stage's run folder, touched only after the stage completed; tmkt itself decides "up to
# date" / resume / refuse, and each folder's lock keeps `make -j` from running a stage twice.
ifdef RECIPE
TMKT   := $(abspath $(BIN))/tmkt
PATHS  := $(shell test -x $(TMKT) && $(TMKT) paths $(RECIPE) $(SET))
get     = $(patsubst $(1)=%,%,$(filter $(1)=%,$(PATHS)))
DONE   := .make-done
RECIPE_FILES := $(RECIPE) $(wildcard $(dir $(RECIPE))base.yaml)
DS_DONE := $(call get,dataset)/$(DONE)
PT_DONE := $(call get,pretrain-ann)/$(DONE)
DI_DONE := $(call get,distill)/$(DONE)
TT_DONE := $(call get,train-tmkt)/$(DONE)
EV_DONE := $(call get,eval)/$(DONE)
CAM_DONE := $(call get,cam)/$(DONE)
SOURCE_DONE := $(if $(filter distill,$(call get,eval_source)),$(DI_DONE),$(if $(filter pretrain-ann,$(call get,eval_source)),$(PT_DONE),$(TT_DONE)))

pipeline: install
	@test -n "$(PATHS)" || { echo "error: cannot resolve $(RECIPE) (see: $(TMKT) paths $(RECIPE))"; exit 2; }
	$(MAKE) --no-print-directory $(CAM_DONE) RECIPE=$(RECIPE) SET='$(SET)'

$(DS_DONE): $(RECIPE_FILES)
	$(TMKT) prepare $(RECIPE) $(SET) && touch $@
$(PT_DONE): $(DS_DONE) $(RECIPE_FILES)
	$(TMKT) pretrain-ann $(RECIPE) $(SET) && touch $@
$(DI_DONE): $(PT_DONE) $(DS_DONE) $(RECIPE_FILES)
	$(TMKT) distill $(RECIPE) $(SET) && touch $@
$(TT_DONE): $(DS_DONE) $(RECIPE_FILES)
	$(TMKT) train-tmkt $(RECIPE) $(SET) && touch $@
$(EV_DONE): $(SOURCE_DONE) $(RECIPE_FILES)
	$(TMKT) eval $(RECIPE) $(SET) && touch $@
$(CAM_DONE): $(EV_DONE) $(RECIPE_FILES)
	$(TMKT) cam $(RECIPE) $(SET) && touch $@
else
pipeline:
	@echo "usage: make pipeline RECIPE=recipes/<dataset>/<method>.yaml [SET='--set key=value']"; exit 2
endif

clean:
	rm -rf $(VENV) runs prepared .pytest_cache
