# Every target bootstraps .venv with the machine's python3 when it is missing,
# so on a fresh clone each target is the only command needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench sim clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-sim

$(VENV)/.installed-sim: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[sim]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/tillmesh demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python bench/crdt.py
	$(BIN)/python bench/crypto.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/node.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/sim.py

# The simulator's one-line entry: the basement scenario, results under results/basement-1/.
sim: $(VENV)/.installed-sim
	MPLBACKEND=Agg $(BIN)/tillmesh sim run simulations/scenarios/basement.toml

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis results
