# Slidebank: two set-up commands on a fresh Debian machine with Python 3.11.
#   make demo   installs into .venv, creates ./slidebank-data with a sample slide, shows it
#   make test   installs the dev extras and runs ruff, mypy, import-linter and pytest

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SLIDES ?=

.PHONY: demo test install install-dev lint typecheck layers pytest clean benchmark-ingest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/slidebank demo $(if $(SLIDES),--slides "$(SLIDES)")

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install-dev
	$(BIN)/mypy

layers: install-dev
	$(BIN)/lint-imports

pytest: install-dev
	$(BIN)/pytest

test: lint typecheck layers pytest

benchmark-ingest: install-dev
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
