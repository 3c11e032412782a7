# `make test` sets up .venv from a fresh clone and runs the test suite (what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test gflops

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -e .

test: install
	$(BIN)/python -m pytest -q

gflops: install
	$(BIN)/python benchmarks/gflops.py
