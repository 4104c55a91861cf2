# Two commands for a new user: `make demo` and `make test`. Each creates .venv when absent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml requirements/ci-constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements/ci-constraints.txt -e ".[test,docs]"
	touch $@

.PHONY: install test lint demo docs
install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts

test: install
	$(PY) -m pytest

demo: install
	$(VENV)/bin/sclong demo --out sclong_demo

docs: install
	$(VENV)/bin/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
