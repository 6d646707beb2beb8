# zfnet: every target sets itself up (a .venv with the package installed) on a fresh clone.
# `make demo` and `make test` are the two commands; the rest reproduce figures and tables.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ZFNET  := $(BIN)/zfnet
STAMP  := $(VENV)/.installed-stamp

# The model the figures look at: the newest `zfnet train` run (trained first if there is none).
TRAINED := outputs/train/latest/checkpoints/last.pt
# Fig 6: the same budget for each first layer (AlexNet 11x11/4, ZFNet 7x7/2, ZFNet without renorm).
FIG6_ROOT ?= outputs/fig6
FIG6_ARGS ?=

.PHONY: setup demo test test-slow bench trained fig2 fig4 fig5 fig6 fig7 table1 help

help:
	@echo "make demo       train the small ZFNet on the embedded data (CPU, ~10 min)"
	@echo "make test       run the test suite (CPU, a few minutes)"
	@echo "make test-slow  also the long tests"
	@echo "make bench      benchmarks, written to outputs/bench/<date_time>/"
	@echo "make setup      only create .venv and install the package"
	@echo "make fig2       Fig 2: top-9 projections, layers 1-5 (trains first if no model)"
	@echo "make fig4       Fig 4: feature evolution over the kept epochs"
	@echo "make fig6       Fig 6: trains 11x11/4, 7x7/2 and 7x7/2 without renorm, compares filters"
	@echo "make fig5       Fig 5: invariance to translation, scale, rotation"
	@echo "make fig7       Fig 7: occlusion maps, and the localisation check on 100 images"
	@echo "make table1     Fig 8 + Table 1: correspondence of face parts"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(ZFNET) train
	$(ZFNET) visualize --all
	$(ZFNET) visualize --evolution
	$(ZFNET) visualize --filters
	$(ZFNET) occlude localise=true
	$(ZFNET) invariance
	$(ZFNET) correspond

trained: $(STAMP)
	@test -e $(TRAINED) || $(ZFNET) train

fig2: trained
	$(ZFNET) visualize --all

fig4: trained
	$(ZFNET) visualize --evolution

fig5: trained
	$(ZFNET) invariance

fig7: trained
	$(ZFNET) occlude localise=true

table1: trained
	$(ZFNET) correspond

fig6: $(STAMP)
	set -e; \
	$(ZFNET) train model=small_alexnet output_root=$(FIG6_ROOT) $(FIG6_ARGS); a=$$(readlink -f $(FIG6_ROOT)/train/latest); \
	$(ZFNET) train model=small output_root=$(FIG6_ROOT) $(FIG6_ARGS); b=$$(readlink -f $(FIG6_ROOT)/train/latest); \
	$(ZFNET) train model=small optim.renorm=false output_root=$(FIG6_ROOT) $(FIG6_ARGS); c=$$(readlink -f $(FIG6_ROOT)/train/latest); \
	$(ZFNET) visualize --filters --compare $$a $$b $$c

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	set -e; out=$$($(BIN)/python -c "from pathlib import Path; from zfnet_cli.config import new_run_dir; print(new_run_dir(Path('outputs'), 'bench'))"); \
	$(BIN)/python scripts/bench_train.py --out $$out; \
	$(BIN)/python scripts/bench_top9.py --out $$out; \
	$(BIN)/python scripts/bench_occlusion.py --out $$out; \
	echo "benchmarks written to $$out"
