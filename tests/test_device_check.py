"""scripts/device_check.sh, the GPU check, run here in its dry-run mode: every stage at tiny sizes
on the CPU, through a subprocess, as a GPU box would run it (so the few minutes a GPU is lent are
not spent on a typo). Also the work count its MFU figures rest on, by hand."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"
STAGES = ["env", "install", "tests", "data", "train", "instruments"]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p))
    env.pop("OUT", None)  # the device tool's results folder: here --out decides
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    res = _run("--dry-run", "--out", str(out))
    return res, out, json.loads((out / "device_check.json").read_text())


def test_dry_run_every_stage_ok_and_three_files(dry_run):
    res, out, r = dry_run
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    # the device tool brings back at most 8 files from $OUT; the scratch data stays out of it
    assert sorted(p.name for p in out.rglob("*")) == ["device_check.json", "device_check.log", "device_check.md"]
    assert r["dry_run"] is True and r["ok"] is True
    assert [(s["name"], s["status"]) for s in r["stages"]] == [(s, "ok") for s in STAGES]
    log = (out / "device_check.log").read_text()
    for i, name in enumerate(STAGES, 1):  # one progress line per stage
        assert f"stage {i}/{len(STAGES)} {name}: ok (exit 0)" in log


def test_dry_run_collects_the_cuda_tests(dry_run):
    _, _, r = dry_run
    t = r["tests"]
    source = (ROOT / "tests" / "test_cuda.py").read_text()
    assert t["skipped"] == source.count("\ndef test_")  # every cuda test collected, none run on the CPU
    assert t["passed"] == t["failed"] == t["errors"] == 0
    assert list(t["skip_reasons"]) == ["needs a CUDA device"]


def test_dry_run_packs_and_benchmarks_every_pair(dry_run):
    _, _, r = dry_run
    assert r["data"]["prepare"]["images_written"] == 64 + 8  # train + val (2 per class, 4 classes)
    assert r["data"]["prepare"]["verified"] is True
    train = r["train"]
    rows = {(x["data"], x["batch"], x["variant"]): x for x in train["results"]}
    variants = ["fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile"]
    loader_variants = ["bf16+channels_last", "bf16+channels_last+compile"]
    want = {("device", b, v) for b in (4, 8) for v in variants} | \
           {(m, b, v) for m in ("loader", "workers") for b in (4, 8) for v in loader_variants}
    assert set(rows) == want
    for (mode, batch, variant), x in rows.items():
        assert "error" not in x and x["median_images_per_s"] > 0
        assert "note" not in x  # every measurement within one epoch of the pack: no loader restart
        if mode == "workers":  # two bursts of 2 workers' batches settled, two timed
            assert (x["settle"], x["steps"]) == (4, 4)
        if mode != "device":  # a fraction of the on-device row of the same batch and variant
            on_device = rows["device", batch, variant]["median_images_per_s"]
            assert x["fraction_of_device"] == pytest.approx(x["median_images_per_s"] / on_device)
    assert train["data_source"].startswith("pack ") and train["workers"] == 2
    assert r["top9"]["ratio_scan_over_inference"] > 0
    occ = r["occlusion"]
    assert occ["positions_per_image"] == {"ours": 169, "captum": 169}  # 64 px, occluder 16, stride 4
    try:
        import captum  # noqa: F401
        assert occ["captum"] == "measured" and occ["ratio_ours_over_captum"] > 0
    except ImportError:
        assert occ["captum"] == "not measured: captum missing" and occ["ratio_ours_over_captum"] is None


def test_dry_run_markdown(dry_run):
    _, out, r = dry_run
    md = (out / "device_check.md").read_text()
    assert "**Dry run**" in md and "| measurement | value | goal | met |" in md
    for h in r["headline"]:
        assert h["met"] is None  # a dry run's CPU figures meet or miss no GPU goal
        assert f"| {h['what']} | {h['value']} |" in md
    for name in STAGES:
        assert f"| {name} | ok |" in md
    for title in ("## Training images/s", "## Top-9 scan", "## Occlusion positions/s"):
        assert title in md


def test_a_stage_past_its_limit_is_recorded_and_the_next_runs(tmp_path):
    # 5000 JPEGs cannot be written in 1 s: the data stage (its process pool too) is stopped
    res = _run("--dry-run", "--out", str(tmp_path), "--stages", "data,install",
               "--stage-timeout", "data=1", "--images", "5000")
    assert res.returncode == 1
    r = json.loads((tmp_path / "device_check.json").read_text())
    assert [(s["name"], s["status"], s["rc"]) for s in r["stages"]] == [("data", "timeout", 124),
                                                                      ("install", "ok", 0)]
    assert r["ok"] is False and r["train"] is None
    assert "| data | timeout |" in (tmp_path / "device_check.md").read_text()


@pytest.mark.parametrize("args, match", [
    (["--stages", "env,gpu"], "unknown stage 'gpu'"),
    (["--stage-timeout", "train"], "NAME=SECONDS"),
    (["--images", "0"], "--images must be at least 1"),
    (["--frobnicate"], "unknown option '--frobnicate'")])
def test_bad_options_one_line(args, match, tmp_path):
    res = _run("--dry-run", "--out", str(tmp_path), *args)
    assert res.returncode == 2 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "device_check.json").exists()


def test_work_per_image_counted_by_hand():
    """Fig 3's ZFNet at 224 for 1000 classes: multiply-accumulates per layer from its shapes
    (out channels x out positions x in channels x kernel area; fc: in x out)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_gpu import macs_per_image

    from zfnet_cli.model import ModelConfig, ZFNet

    by_hand = (96 * 110 * 110 * 3 * 7 * 7 + 256 * 26 * 26 * 96 * 5 * 5 + 384 * 13 * 13 * 256 * 9
               + 384 * 13 * 13 * 384 * 9 + 256 * 13 * 13 * 384 * 9
               + 256 * 6 * 6 * 4096 + 4096 * 4096 + 4096 * 1000)
    with torch.device("meta"):  # shapes only: no weights drawn, no arithmetic
        model = ZFNet(ModelConfig(), 1000)
    assert macs_per_image(model, 224) == by_hand
    assert 6 * by_hand / 1e9 == pytest.approx(7.0, abs=0.01)  # the 7.0 GFLOP per trained image the GPU goal assumes
