# Two commands from a fresh clone: `make demo` (set up .venv, train on the built-in data, print where the
# grid and checkpoint are) and `make test` (set up .venv, run the test suite: what CI runs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test gflops

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -r requirements.txt

# The demo trains with the time-to-quality winner (benchmarks/RESULTS.md): rectified flow with logit-normal t.
# DiT's own recipe is one flag away: `$(BIN)/python train.py` (or --recipe dit).
demo: install
	$(BIN)/python train.py --recipe flow-ln
	@echo "samples: results/cpu-demo-flow-ln/samples.png  checkpoints: results/cpu-demo-flow-ln/checkpoints/  EMA export: results/cpu-demo-flow-ln/export.safetensors"

# Two workers (the 2-core CI machine), a test file each at a time; tests/conftest.py gives each one thread.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

gflops: install
	$(BIN)/python benchmarks/gflops/gflops.py
