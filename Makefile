# Two entry points (see README): `make demo` runs the main job on a corpus the
# project synthesises itself; `make test` runs the test suite. Both create .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo lint test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first and pinned: a bare `torch` requirement would pull GBs of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,train,gcs,hf,vad]'
	touch $@

demo: setup
	$(BIN)/wds-pipeline demo --workdir demo

# Lint and type checks; `make test` (and so CI) runs them first.
lint: setup
	$(BIN)/ruff check wds_pipeline
	$(BIN)/mypy wds_pipeline

test: lint
	@sh tools/ensure_system_deps.sh
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo .pytest_cache
