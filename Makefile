# zfnet: every target sets itself up (a .venv with the package installed) on a fresh clone.
# `make demo` and `make test` are the two commands; the rest reproduce figures and tables.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ZFNET  := $(BIN)/zfnet
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test test-slow bench clean-outputs help

help:
	@echo "make demo       train the small ZFNet on the embedded data (CPU, ~10 min)"
	@echo "make test       run the test suite (CPU, a few minutes)"
	@echo "make test-slow  also the long tests"
	@echo "make bench      benchmarks, written to outputs/bench/<date_time>/"
	@echo "make setup      only create .venv and install the package"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(ZFNET) train

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	$(BIN)/python scripts/bench_train.py
