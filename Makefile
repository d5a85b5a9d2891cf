# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create ./.venv (override with VENV=...) and install mlip into it. torch is installed
# first as the pinned CPU wheel torch==2.13.0 unless the environment already has a torch
# (install a CUDA build of torch into the venv first on a GPU machine).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mlip-installed

.PHONY: install demo test test-all lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/mlip demo

test: install
	$(VENV)/bin/ruff check mlip calculators data md tests benchmarks examples
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m ""

lint: install
	$(VENV)/bin/ruff check mlip calculators data md tests benchmarks examples
