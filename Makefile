# Two commands on a fresh machine:  make all  (train both networks and compare)  ·  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: all setup train compare test lint bench bench-quick clean

all: compare  ## set up, train both networks, compare them

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the pinned requirements

models/cnn.keras: setup
	$(PY) train_cnn.py

models/dense.keras: setup
	$(PY) train_dense.py

train: models/cnn.keras models/dense.keras  ## train both networks (skipped when already saved)

compare: train  ## compare the saved models: table, results/comparison.png and .json
	$(PY) compare.py

test: setup  ## lint, then the test suite
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check .

bench: setup  ## the full benchmark (3 seeds, baseline + defaults + best preset): long
	$(PY) benchmark.py

bench-quick: setup  ## a smoke run of the benchmark
	$(PY) benchmark.py --quick

clean:  ## remove generated models and results (keeps the folders)
	rm -f models/*.keras results/*.json results/*.jsonl results/*.png results/*.html
