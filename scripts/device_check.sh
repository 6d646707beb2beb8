#!/usr/bin/env bash
# The GPU check in one command: install what the machine lacks, run the CUDA tests, then the
# GPU benchmarks, and write device_check.json, device_check.md and device_check.log into one
# folder. Sized for one H100 or H200 (16 cores, the same 989 TFLOP/s dense bf16 peak) in about
# 7 minutes, so that a 15-minute lease leaves room for one rerun; `--dry-run` runs the same
# stages at tiny sizes on the CPU in seconds (tests/test_device_check.py runs it in `make test`).
#
#   bash scripts/device_check.sh                  # results in $OUT, else outputs/device_check/<date_time>
#   bash scripts/device_check.sh --out DIR
#   bash scripts/device_check.sh --dry-run --out /tmp/check
#
# Stages, each under its own time limit (and all under --budget), each recorded as ok / failed /
# timeout / skipped with its log tail, the next one starting whatever happened before:
#   env        nvidia-smi, torch, CUDA, cuDNN, NCCL, package versions
#   install    the wheels in .whl/ into a --target folder, if a needed package is missing
#   tests      pytest -m cuda (tests/test_cuda.py: bf16, channels_last, compile, NCCL with one
#              process, deconvnet / top-9 / occlusion on the GPU against the CPU)
#   data       >= 20,000 generated JPEGs, packed by `zfnet prepare` (16 workers)
#   train      scripts/bench_gpu.py --part train: ZFNet at 224, batch 128 and 256, fp32 / bf16 /
#              + channels_last / + compile, on-device and end to end from the pack, MFU vs 989 TFLOP/s
#   instruments  scripts/bench_gpu.py --part top9,occlusion: the top-9 scan over all five layers
#              vs plain inference, and occlusion positions/s vs Captum's Occlusion (one process:
#              a part that fails is recorded and the other still runs)
# The folder gets three files (the device tool brings back at most 8): the scratch data (JPEGs,
# pack, per-stage files) lives in --work, a temporary folder removed at the end.
#
# Wheels the GPU machine needs: its image has torch, torchvision, typer, numpy, pillow, tqdm,
# matplotlib and pytest, but not hydra-core, omegaconf, antlr4-python3-runtime or captum. All four
# are pure Python. Fetch them once into the git-ignored .whl/ (the device tool then carries it:
# carry [".whl"]); antlr4-python3-runtime 4.9.3, which hydra-core pins, is on PyPI only as a
# source archive, so pip builds its wheel here:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     hydra-core==1.3.8 omegaconf==2.3.1 captum==0.9.0
#   python3 -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3
#
# (about 0.9 MB together; their other needs, packaging, PyYAML, matplotlib, numpy, tqdm and
# torch, are on the machine.)
set -u -o pipefail

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

Options:
  --out DIR                  results folder (default: $OUT where set, else outputs/device_check/<date_time>)
  --dry-run                  tiny sizes on the CPU: checks the script, measures nothing about a GPU
  --work DIR                 scratch folder, kept (default: a temporary folder, removed at the end)
  --budget SECONDS           total time for all stages (default 420; dry run 300)
  --stages LIST              comma list of env,install,tests,data,train,instruments, run in the
                             order given (default: all, in this order)
  --stage-timeout NAME=SEC   one stage's time limit (repeatable)
  --images N                 generated JPEGs for the pack (default 20000; dry run 64)
  --workers N                prepare processes and DataLoader workers (default 16; dry run 2)
  --install-wheels           install .whl/*.whl even when nothing is missing
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
PYTHON=${PYTHON:-python3}
COMMAND="bash scripts/device_check.sh${*:+ $*}"
ALL_STAGES=(env install tests data train instruments)
declare -A LIMIT=([env]=30 [install]=90 [tests]=180 [data]=90 [train]=200 [instruments]=90)
RESERVE=15  # seconds kept back for each stage still to come
DRY=0 OUT_DIR="" WORK="" KEEP_WORK=0 BUDGET="" STAGES="" IMAGES="" WORKERS="" FORCE_WHEELS=0
TIMEOUT_OVERRIDES=()
while (($#)); do
    case $1 in
        --out) OUT_DIR=${2:?--out needs a folder}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --work) WORK=${2:?--work needs a folder}; KEEP_WORK=1; shift 2 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
        --stages) STAGES=${2:?--stages needs a list}; shift 2 ;;
        --stage-timeout) TIMEOUT_OVERRIDES+=("${2:?--stage-timeout needs NAME=SECONDS}"); shift 2 ;;
        --images) IMAGES=${2:?--images needs a number}; shift 2 ;;
        --workers) WORKERS=${2:?--workers needs a number}; shift 2 ;;
        --install-wheels) FORCE_WHEELS=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "device_check.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
STAGES=${STAGES:-$(IFS=,; echo "${ALL_STAGES[*]}")}
for s in ${STAGES//,/ }; do
    [[ " ${ALL_STAGES[*]} " == *" $s "* ]] || { echo "device_check.sh: unknown stage '$s' (stages: ${ALL_STAGES[*]})" >&2; exit 2; }
done
for kv in "${TIMEOUT_OVERRIDES[@]+"${TIMEOUT_OVERRIDES[@]}"}"; do
    name=${kv%%=*} sec=${kv#*=}
    [[ -n ${LIMIT[$name]+x} && $sec =~ ^[0-9]+$ ]] || { echo "device_check.sh: --stage-timeout takes NAME=SECONDS with NAME one of ${ALL_STAGES[*]}, got '$kv'" >&2; exit 2; }
    LIMIT[$name]=$sec
done
for n in "$BUDGET" "$IMAGES" "$WORKERS"; do
    [[ -z $n || $n =~ ^[0-9]+$ ]] || { echo "device_check.sh: --budget, --images and --workers take whole numbers, got '$n'" >&2; exit 2; }
done
[[ $IMAGES != 0 ]] || { echo "device_check.sh: --images must be at least 1" >&2; exit 2; }
if ((DRY)); then
    BUDGET=${BUDGET:-300} IMAGES=${IMAGES:-64} WORKERS=${WORKERS:-2}
else
    BUDGET=${BUDGET:-420} IMAGES=${IMAGES:-20000} WORKERS=${WORKERS:-16}
fi

# ---- folders: results (OUT_DIR) and scratch (WORK)
if [[ -z $OUT_DIR && -n ${OUT:-} ]]; then OUT_DIR=$OUT; fi
if [[ -z $OUT_DIR ]]; then
    OUT_DIR=$(PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c \
        "from pathlib import Path; from zfnet_cli.runs import new_run_dir; print(new_run_dir(Path('outputs'), 'device_check'))" 2>/dev/null) \
        || OUT_DIR=outputs/device_check/$(date +%Y-%m-%d_%H-%M-%S)  # zfnet_cli not importable yet
fi
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)
if [[ -z $WORK ]]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/zfnet_device_check.XXXXXX") || exit 2; fi
mkdir -p "$WORK/logs" "$WORK/bench" "$WORK/site" || exit 2
WORK=$(cd "$WORK" && pwd)
cleanup() { ((KEEP_WORK)) || rm -rf "$WORK"; }
trap cleanup EXIT
: >"$WORK/stages.tsv"
LOG=$OUT_DIR/device_check.log
: >"$LOG"

export PYTHON REPO WORK DRY IMAGES WORKERS FORCE_WHEELS
export SITE=$WORK/site
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_DISABLE=1
if ((DRY)); then export CUDA_VISIBLE_DEVICES=""; fi  # the CPU, even on a GPU box

say() { echo "[device_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# ---- the stages (each runs in its own bash under `timeout`, so it can be killed as a whole)
stage_env() {
    nvidia-smi || echo "nvidia-smi: not available"
    "$PYTHON" scripts/device_check.py env "$WORK/env.json"
}

stage_install() {
    local missing
    missing=$("$PYTHON" scripts/device_check.py missing) || return 1
    echo "not importable: ${missing:-nothing}"
    if [[ -z $missing ]] && ((!FORCE_WHEELS)); then
        echo "nothing to install"
        return 0
    fi
    if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
        echo "installing into $SITE: $(cd "$REPO/.whl" && echo *.whl)"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$REPO"/.whl/*.whl || return 1
    else
        echo "no wheels in $REPO/.whl (see the pip download command at the top of scripts/device_check.sh)"
    fi
    local after rc
    after=$("$PYTHON" scripts/device_check.py missing --verify)
    rc=$?
    echo "after the install, not importable: ${after:-nothing}"
    return $rc
}

stage_tests() {
    # the test files that use the marker (collecting all of tests/ costs more than the CPU
    # tests are worth here); one that cannot be imported is reported, the others still run
    local files per_test=()
    mapfile -t files < <(grep -l 'mark\.cuda' tests/test_*.py)
    echo "test files with cuda tests: ${files[*]}"
    # where pytest-timeout is installed (the GPU image has it), a hanging test fails alone and
    # the JUnit file, written at the end, survives; -v names each test as it starts
    if "$PYTHON" -c "import pytest_timeout" 2>/dev/null; then per_test=(--timeout 90); fi
    "$PYTHON" -m pytest -m cuda -v -rfEs -p no:cacheprovider --continue-on-collection-errors \
        "${per_test[@]+"${per_test[@]}"}" --junitxml "$WORK/pytest_cuda.xml" "${files[@]}"
}

stage_data() {
    local classes=100 size=256
    if ((DRY)); then classes=4 size=72; fi  # 72: bench_gpu.py --quick's stored image size
    "$PYTHON" scripts/bench_loader.py --tree-only --images "$IMAGES" --classes "$classes" \
        --workers "$WORKERS" --cache-dir "$WORK" || return 1
    "$PYTHON" -m zfnet_cli prepare imagenet "$WORK/bench_jpeg_$IMAGES" --out "$WORK/pack" \
        --workers "$WORKERS" --image-size "$size" --shard-size 2048 progress=false \
        "output_root=$WORK/outputs"
}

bench() {  # scripts/bench_gpu.py with this run's sizes; the stage's own options follow
    local common=(--out "$WORK/bench" --max-seconds $((STAGE_LIMIT * 3 / 4)))
    if ((DRY)); then
        common+=(--quick --device cpu --repeats 1)
    else
        common+=(--model zfnet --size 224 --image-size 256 --classes 1000 --repeats 3)
    fi
    "$PYTHON" scripts/bench_gpu.py "${common[@]}" "$@"
}

stage_train() {
    local data=device,loader extra=()
    if [[ -f $WORK/pack/manifest.json ]]; then
        data=device,loader,workers
        extra=(--packed "$WORK/pack" --workers "$WORKERS")
    else
        echo "no pack (the data stage did not finish): loader mode on synthetic images, no workers mode"
    fi
    if ((DRY)); then
        extra+=(--batch 4,8 --warmup 1 --settle 1 --steps 2)
    else
        extra+=(--batch 128,256 --warmup 5 --settle 5 --steps 20 --peak-tflops 989)
    fi
    # the loader modes for the two bf16 + channels_last settings: the best one and, should
    # compilation fail, the best without it
    bench --part train --data "$data" --loader-variants bf16+channels_last,bf16+channels_last+compile \
        "${extra[@]}"
}

stage_instruments() {
    if ((DRY)); then
        bench --part top9,occlusion --top9-images 16 --top9-batch 8 --occlusion-images 1 --occlusion-batch 64
    else
        bench --part top9,occlusion --top9-images 4096 --top9-batch 256 --occlusion-images 8 --occlusion-batch 128
    fi
}
export -f stage_env stage_install stage_tests stage_data bench stage_train stage_instruments

START=$(date +%s)
DEADLINE=$((START + BUDGET))
IFS=, read -r -a selected <<<"$STAGES"
GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
say "$(((DRY)) && echo "dry run, tiny sizes on the CPU" || echo "GPU check"): stages ${selected[*]}; budget ${BUDGET} s; results in $OUT_DIR; scratch in $WORK"

i=0
for name in "${selected[@]}"; do
    i=$((i + 1))
    later=$((${#selected[@]} - i))
    left=$((DEADLINE - $(date +%s) - RESERVE * later))
    limit=${LIMIT[$name]}
    ((limit > left)) && limit=$left
    if ((limit < 1)); then
        printf '%s\tskipped\t\t0\t0\tout of time\n' "$name" >>"$WORK/stages.tsv"
        say "stage $i/${#selected[@]} $name: skipped, out of time"
        continue
    fi
    say "stage $i/${#selected[@]} $name: start (limit ${limit} s)"
    t0=$(date +%s%N)
    STAGE_LIMIT=$limit timeout -k 10 "$limit" bash -c "stage_$name" 2>&1 | tee -a "$LOG" "$WORK/logs/$name.log"
    rc=${PIPESTATUS[0]}
    seconds=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    case $rc in
        0) status=ok ;;
        124|137) status=timeout ;;
        *) status=failed ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t\n' "$name" "$status" "$rc" "$seconds" "$limit" >>"$WORK/stages.tsv"
    say "stage $i/${#selected[@]} $name: $status (exit $rc) in $seconds s"
done

total=$(($(date +%s) - START))
"$PYTHON" scripts/device_check.py summary --work "$WORK" --out "$OUT_DIR" --meta \
    "command=$COMMAND" "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "git=$GIT_REV" "dry_run=$DRY" "seconds=$total" "budget_s=$BUDGET" 2>&1 | tee -a "$LOG"
summary_rc=${PIPESTATUS[0]}
if ((summary_rc)); then say "the summary failed (exit $summary_rc): see $LOG"; exit 1; fi
grep -q -v $'\tok\t' "$WORK/stages.tsv" && exit 1  # a stage that was not ok
exit 0
