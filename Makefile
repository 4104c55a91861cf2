# Two commands for a new user: `make demo` and `make test`. Each creates .venv when absent.
# `make demo` installs the package alone; `make test`, `lint` and `docs` add the test and docs
# extras. torch is installed first, pinned; TORCH_INDEX picks its build, e.g.
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu    # CPU-only build (Linux)
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cu126  # a CUDA 12.6 build
# (default: pip's choice: PyPI's build for the platform, CUDA on Linux x86_64, or a local wheel).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_INDEX ?=
TORCH := torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))

$(VENV)/.base: pyproject.toml requirements/ci-constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c requirements/ci-constraints.txt -e .
	touch $@

$(VENV)/.installed: $(VENV)/.base
	$(PY) -m pip install -q -c requirements/ci-constraints.txt -e ".[test,docs]"
	touch $@

.PHONY: install install-base test lint demo docs
install-base: $(VENV)/.base
install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts

test: install
	$(PY) -m pytest

demo: install-base
	$(VENV)/bin/sclong demo --out sclong_demo

docs: install
	$(VENV)/bin/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
