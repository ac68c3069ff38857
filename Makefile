# The two commands of the README. Each sets everything up first (scripts/bootstrap.sh: .venv from
# Python 3.10, pinned install from constraints.txt, editable install of Loopline).
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup run test quick bench clean-home

setup:
	@scripts/bootstrap.sh

run: setup
	$(VENV)/bin/loopline loop

quick: setup
	$(VENV)/bin/loopline train --quick

test: setup
	$(VENV)/bin/python -m pytest tests $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python bench/pipeline_bench.py
