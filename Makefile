# nero-study: `make run` (the service on its embedded default) and `make test` (the default test suite).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install run test test-all lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/nero-study serve

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ''

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/optim_step.py

clean:
	rm -rf $(VENV) build *.egg-info
