"""The claims measured on a network that is not ours (the real ImageNet network): hand-made
output roots whose runs name EfficientNet-Lite0 (checkpoint=module:factory), one where every
row must hold (clear differences over 8 photos and 5 folds) and one where none may; the rows
say which network they were measured on and what a replicate is, and `zfnet report` puts both
networks side by side where both were measured."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_claims import _write, make_root
from zfnet_cli import claims
from zfnet_cli.data.photos import REAL_NETWORK
from zfnet_cli.experiments import report

REPO = Path(__file__).resolve().parents[1]

REAL = claims.NETWORKS[REAL_NETWORK]
KEYS = ["fig7_localisation", "fig5_translate", "fig5_scale", "fig5_output_rotation",
        "table7_depth", "transfer_few_shots", "transfer_many_shots", "fig9_gain"]
LAYERS = ["_blocks.0", "_blocks.2", "_blocks.4", "_blocks.7", "_blocks.10", "_blocks.14",
          "_blocks.15", "_dropout"]


def make_real_root(root: Path, good: bool, photos: int = 8, folds: int = 5) -> Path:
    """The runs `make claims-real` leaves: one occlude (localise on boxed photos), one
    invariance on the photos and one transfer on the real network. ``good``: every A is far
    above its B for every photo and fold; else A and B are equal up to jitter, or reversed."""
    run, real = "2026-02-01_00-00-01", {"checkpoint": REAL_NETWORK, "model_kind": "factory"}
    jit = [0.01 * ((k % 3) - 1) for k in range(max(photos, folds))]
    per_image = [{"image": f"p{k}.png", "inside": good or k % 2 == 0,
                  "chance": (0.10 if good else 0.50) + jit[k]} for k in range(photos)]
    occ = root / "occlude" / run
    _write(occ, {**real, "localisation": {"images": photos, "fraction_inside": 0.9,
                                          "chance_inside": 0.1}})
    (occ / "localisation.json").write_text(json.dumps({"per_image": per_image}))
    first, top = (0.9, 0.3) if good else (0.5, 0.5)

    def curves(amounts, near, far):  # per photo: the identity 0, small amounts, far ones
        return [[0.0 if a in (0.0, 1.0) else (near + jit[k]) if claims.SMALL["translate"](a, amounts)
                 or 1.0 < a <= 1.4 else far for a in amounts] for k in range(photos)]

    tr, sc, ro = [-4.0, -2.0, 0.0, 2.0, 4.0], [1.0, 1.2, 1.4, 1.6, 1.8], [0.0, 90.0, 180.0]
    p_tr = [[0.8, 0.79 + jit[k], 0.8, 0.79, 0.8] for k in range(photos)]
    p_ro = [[0.8, (0.3 if good else 0.79) + jit[k], 0.4 if good else 0.8] for k in range(photos)]
    _write(root / "invariance" / run, {**real, "method": "image", "layers": ["_blocks.0", "_blocks.15"],
        "transforms": {
            "translate": {"amounts": tr, "distance__blocks.0": curves(tr, first, 0.0),
                          "distance__blocks.15": curves(tr, top, 9.0), "p_true": p_tr},
            "scale": {"amounts": sc, "distance__blocks.0": curves(sc, first, 0.0),
                      "distance__blocks.15": curves(sc, top, 9.0), "p_true": p_tr},
            "rotate": {"amounts": ro, "distance__blocks.0": [[0.0, 1.0, 1.0]] * photos,
                       "distance__blocks.15": [[0.0, 1.0, 1.0]] * photos, "p_true": p_ro}}})
    acc = {l: 40.0 + 5 * i for i, l in enumerate(LAYERS)} if good else \
        {l: 60.0 - 2 * i for i, l in enumerate(LAYERS)}
    per_layer = [{"classifier": c, "layer": l, "mean": acc[l],
                  "accuracies": [acc[l] + 10 * jit[k] for k in range(folds)]}
                 for c in ("hinge", "softmax") for l in LAYERS]

    def row(shots, pre, scr):
        return {"shots": shots, "pretrained_mean": pre, "scratch_mean": scr,
                "pretrained_accuracies": [pre + 10 * jit[k] for k in range(folds)],
                "scratch_accuracies": [scr - 10 * jit[k] for k in range(folds)]}

    rows = [row(1, 60.0, 10.0), row(20, 80.0, 60.0)] if good else \
        [row(1, 30.0, 30.0), row(20, 50.0, 50.0)]
    _write(root / "transfer" / run, {**real, "task": "fewshot", "layer": "_dropout",
                                     "target": "embedded held-out, rich set (train)",
                                     "per_layer": per_layer, "rows": rows,
                                     "scratch_architecture": "outputs/x/last.pt"},
           {"target": "embedded", "task": "auto"})
    return root


@pytest.mark.parametrize("good,verdict", [(True, claims.HOLDS), (False, claims.FAILS)])
def test_real_rows_measured_per_photo_and_fold(tmp_path, good, verdict):
    rows = claims.evaluate(make_real_root(tmp_path, good))
    assert [c.key for c in rows] == KEYS  # no row of ours: no run of ours under the root
    for c in rows:
        assert c.network == REAL and c.verdict == verdict, (c.key, c.verdict, c.detail)
        assert c.n == (5 if c.key.startswith(("table7", "transfer", "fig9")) else 8), c.key
        assert c.ours.endswith("photos)" if c.key.startswith("fig") and c.key != "fig9_gain"
                               else "folds)"), c.ours
    by = {c.key: c for c in rows}
    assert by["fig5_translate"].a.label == "_blocks.0" and by["fig5_translate"].b.label == "_blocks.15"
    # Table 7: the last layer against the best of the first four layers
    assert by["table7_depth"].a.label == "_dropout"
    assert by["table7_depth"].b.label == f"best of first four ({'_blocks.7' if good else '_blocks.0'})"
    if good:  # fig7: all 8 on the object, chance 0.1 +- 0.01
        assert by["fig7_localisation"].a.mean == 1.0
        assert by["fig7_localisation"].b.mean == pytest.approx(0.10, abs=0.01)


def test_report_puts_both_networks_side_by_side(tmp_path):
    root = make_root(tmp_path / "root", 3, True)
    make_real_root(root, True)
    rows = claims.evaluate(root)
    assert {c.network for c in rows} == {claims.OURS, REAL}
    assert [c.network for c in rows].index(REAL) == 14  # ours first, all 14 of them
    folder = tmp_path / "rep"
    folder.mkdir()
    report.run(report.ReportConfig(root=str(root)), folder)
    side = (folder / "claims_by_network.md").read_text()
    head = next(line for line in side.splitlines() if line.startswith("| figure"))
    assert claims.OURS in head and REAL in head
    fig5 = next(line for line in side.splitlines() if "small vertical translations" in line)
    assert fig5.count("**holds**") == 2  # both networks' verdicts on one row
    table1 = next(line for line in side.splitlines() if "layer-5" in line)
    assert table1.rstrip(" |").endswith("-")  # not measured on the real network: no cell
    saved = json.loads((folder / "claims.json").read_text())
    assert {r["network"] for r in saved} == {claims.OURS, REAL}
    assert "### Claims side by side" in (folder / "report.md").read_text()


def test_a_root_of_ours_only_has_no_side_by_side(tmp_path):
    root = make_root(tmp_path / "root", 3, True)
    folder = tmp_path / "rep"
    folder.mkdir()
    report.run(report.ReportConfig(root=str(root)), folder)
    assert not (folder / "claims_by_network.md").exists()
    assert all(r["network"] == claims.OURS for r in json.loads((folder / "claims.json").read_text()))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_claims_real_at_a_smoke_budget(tmp_path, smoke_model):
    """The target end to end on 2 photos, a coarse occluder, 3 to 5 amounts per transform and a
    smoke transfer (the scratch nets: the smoke ZFNet's architecture): every real row is
    measured and judged, the model loaded through checkpoint=module:factory weights=FILE."""
    root = tmp_path / "claims-real"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed-stamp", "claims-real",
         f"REAL_ROOT={root}", "REAL_PHOTOS=rocket camera", f"REAL_SCRATCH={smoke_model[1]}",
         "REAL_INVARIANCE=steps_translate=5 steps_scale=3 steps_rotate=3 progress=false",
         "REAL_OCCLUDE=size=112 stride=56 progress=false",
         f"REAL_TRANSFER=experiment=smoke pool_per_class=5 test_per_class=2 "
         f"cache_dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = json.loads(((root / "report" / "latest").resolve() / "claims.json").read_text())
    assert [r["key"] for r in rows] == KEYS
    for r in rows:
        assert r["network"] == REAL and r["verdict"] != claims.UNMEASURED, r
    occ = json.loads(next((root / "occlude").glob("2*/metrics.json")).read_text())
    assert occ["checkpoint"] == REAL_NETWORK and occ["model_kind"] == "factory"
    assert [i["label_from"] for i in occ["images"]] == ["photos.json"] * 2
    assert sorted(p.name for p in (root / "photos").iterdir()) == ["camera.png", "photos.json",
                                                                   "rocket.jpg"]


def test_a_sweep_without_the_identity_leaves_the_output_row_unmeasured(tmp_path):
    root = make_real_root(tmp_path, True)
    path = next((root / "invariance").iterdir()) / "metrics.json"
    m = json.loads(path.read_text())
    m["transforms"]["translate"]["amounts"] = [-4.0, -2.0, 1.0, 2.0, 4.0]  # no 0
    path.write_text(json.dumps(m))
    by = {c.key: c for c in claims.evaluate(root)}
    assert by["fig5_output_rotation"].verdict == claims.UNMEASURED
    assert by["fig5_scale"].verdict == claims.HOLDS
