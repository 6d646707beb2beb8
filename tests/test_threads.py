"""Reproducible numbers: with the thread count fixed (make exports OMP_NUM_THREADS=$(THREADS)),
two runs of the same smoke training, started side by side, end with the same weights, and each
run records the count it used."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_same_thread_count_same_weights(tmp_path):
    threads = min(2, os.cpu_count() or 1)  # torch caps OMP_NUM_THREADS at the core count
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "zfnet_cli", "train", "experiment=smoke",
                               f"output_root={tmp_path / name}",
                               f"data.cache_dir={tmp_path / name / 'cache'}", "plot=false"],
                              env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for name in ("a", "b")]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out
    runs = [(tmp_path / name / "train" / "latest").resolve() for name in ("a", "b")]
    for run in runs:
        assert json.loads((run / "run.json").read_text())["torch_threads"] == threads
    a, b = (json.loads((run / "metrics.json").read_text()) for run in runs)
    assert a["rank_weights_sha1"] == b["rank_weights_sha1"]
    timing = ("seconds", "images_per_s")
    assert {k: v for k, v in a["final"].items() if k not in timing} == \
        {k: v for k, v in b["final"].items() if k not in timing}
