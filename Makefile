# The two commands a new user needs: `make train` and `make test`. Both create ./.venv and install
# the project into it on first use (the stamp files record that an install finished); `make test`
# and `make lint` add the `test` extra (pytest, ruff), `make train` does not need it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export DS_ACCELERATOR ?= cpu

.PHONY: install train test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

train: $(STAMP)
	@# -q: a failed run ends in its one error: line, not accelerate's CalledProcessError traceback; the
	@# explicit defaults keep accelerate's "values were not passed" notice out of the console.
	$(BIN)/accelerate launch -q --num_processes 1 --num_machines 1 \
		--mixed_precision no --dynamo_backend no recipes/causal/train.py $(ARGS)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src recipes tests benchmarks
	$(BIN)/ruff format --check src recipes tests benchmarks

clean:
	rm -rf $(VENV) runs
