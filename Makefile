# The commands a user and CI run. `make help` lists them.
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help setup test test-fast lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install everything: .venv (Python 3.13), node packages
	./scripts/setup.sh

test: ## run the whole test suite (unit, interop against the official Node SDK, integration)
	$(PY) -m pytest

test-fast: ## unit tests only
	$(PY) -m pytest tests/unit

lint: ## ruff, formatting and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: ## run the benchmarks; results go to benchmarks/results/*.json
	$(PY) -m benchmarks

clean: ## remove build and test artefacts (keeps .venv and node_modules)
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache
