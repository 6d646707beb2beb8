#!/usr/bin/env bash
# Wall time of `zfnet explore` on EfficientNet-Lite0 (ImageNet weights), every block, over the
# photos of scripts/explorer_photos.py. Writes LOG (start / end lines with the load average, the
# per-block progress bars, and /usr/bin/time -v's "Elapsed (wall clock) time").
#   scripts/time_explore.sh LOG [extra overrides, e.g. max_units=8]
set -u
log=$1; shift
export PYTHONPATH=$PWD
[ -f outputs/photos100/crops.json ] || .venv/bin/python scripts/explorer_photos.py
weights=$(.venv/bin/python -c "from zfnet_cli.data.photos import efficientnet_lite0_weights as w; print(w())")
layers=""; for i in $(seq 0 15); do layers="$layers --layer _blocks.$i"; done
echo "start $(date -u +%FT%T) commit $(git rev-parse --short HEAD) load $(cat /proc/loadavg)" > "$log"
/usr/bin/time -v .venv/bin/zfnet explore $layers checkpoint=zfnet_cli.data.photos:efficientnet_lite0 \
    weights="$weights" data=folder data.root=outputs/photos100 output_root=outputs/explore_timing/runs \
    "$@" >> "$log" 2>&1
echo "end $(date -u +%FT%T) rc $? load $(cat /proc/loadavg)" >> "$log"
