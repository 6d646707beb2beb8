"""`zfnet transfer` (Tables 4-7, Fig 9) end to end on the smoke model: the embedded held-out
classes, small Caltech-101 / VOC trees in their real layouts, and the errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli.loading import load_trained
from zfnet_cli.cli import app
from zfnet_cli.data.caltech import few_shot_split
from zfnet_cli.data.embedded import load_embedded
from zfnet_cli.transfer import extract_features, few_shot_eval

from test_voc import _make_voc

runner = CliRunner()


def _transfer(smoke_model, tmp_path, *args):
    root, run = smoke_model
    res = runner.invoke(app, ["transfer", "experiment=smoke", f"checkpoint={run}",
                              f"output_root={tmp_path / 'out'}", *args])
    folder = (tmp_path / "out" / "transfer" / "latest").resolve() if res.exit_code == 0 else None
    return res, folder


def test_embedded_transfer_matches_an_independent_computation(smoke_model, tmp_path):
    res, folder = _transfer(smoke_model, tmp_path, "plot=true")
    assert res.exit_code == 0, res.output
    rows = json.loads((folder / "transfer.json").read_text())
    assert [r["shots"] for r in rows] == [1, 3]
    for r in rows:
        assert len(r["pretrained_accuracies"]) == len(r["scratch_accuracies"]) == 2
        assert all(0 <= a <= 100 for a in r["pretrained_accuracies"] + r["scratch_accuracies"])
    per_layer = json.loads((folder / "table7.json").read_text())
    assert [(r["classifier"], r["layer"]) for r in per_layer] == [
        (c, l) for c in ("hinge", "softmax") for l in ("conv1", "conv5", "fc7")]
    assert (folder / "figures" / "fig9.png").is_file() and (folder / "figures" / "table7.png").is_file()

    # The same numbers from the pieces, put together by hand: the held-out pool of the
    # checkpoint's data, its features, the folds, the classifier.
    loaded = load_trained(str(smoke_model[1]), str(smoke_model[0]), torch.device("cpu"))
    d = loaded.data
    pool = load_embedded("train", image_size=d.image_size, per_class=8, use="heldout",
                         seed=d.seed, cache_dir=d.cache_dir, progress=False)
    pre = loaded.preprocess()
    feats = extract_features(loaded.model, [pre(pool.images[i:i + 16]) for i in range(0, 40, 16)],
                             ["fc7"])["fc7"]
    splits = [few_shot_split(pool.labels.tolist(), 3, test_per_class=4, seed=k)[:2] for k in (0, 1)]
    ours = few_shot_eval(feats, pool.labels, splits, 5, loss="softmax", weight_decay=1e-3, epochs=50)
    assert rows[1]["pretrained_accuracies"] == pytest.approx(ours["accuracies"])


def test_embedded_multilabel_protocol_gives_table6(smoke_model, tmp_path):
    res, folder = _transfer(smoke_model, tmp_path, "task=multilabel")
    assert res.exit_code == 0, res.output
    rows = json.loads((folder / "table6.json").read_text())
    assert [r["class"] for r in rows][-1] == "mean" and len(rows) == 6
    aps = [r["ap"] for r in rows[:-1]]
    assert all(0 <= a <= 100 for a in aps) and rows[-1]["ap"] == pytest.approx(np.mean(aps))


def _caltech101(root, per_class):
    rng = np.random.default_rng(0)
    cats = root / "caltech101" / "101_ObjectCategories"
    for name, n in per_class.items():
        (cats / name).mkdir(parents=True)
        for j in range(1, n + 1):
            shape = (30, 40) if j == 1 else (30, 40, 3)  # a greyscale image in each class
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
                cats / name / f"image_{j:04d}.jpg")
    return root


def test_caltech101_tree_with_a_short_class(smoke_model, tmp_path):
    root = _caltech101(tmp_path / "data", {"accordion": 5, "BACKGROUND_Google": 4, "Faces": 5,
                                           "Faces_easy": 5, "yin_yang": 2})
    res, _ = _transfer(smoke_model, tmp_path, "target=caltech101", f"root={root}")
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "class 3 ('yin_yang') has 2 images, fewer than shots + min_test = 3 + 1" in res.output

    res, folder = _transfer(smoke_model, tmp_path, "target=caltech101", f"root={root}",
                            "on_short=skip", "--no-per-layer")
    assert res.exit_code == 0, res.output
    rows = json.loads((folder / "transfer.json").read_text())
    assert rows[0]["skipped_classes"] == [] and rows[1]["skipped_classes"] == ["yin_yang"]
    assert "| 3 |" in (folder / "transfer.md").read_text() and not (folder / "table7.json").exists()


def test_voc_tree_gives_table6(smoke_model, tmp_path):
    _make_voc(tmp_path / "data")
    res, folder = _transfer(smoke_model, tmp_path, "--target", "voc", f"root={tmp_path / 'data'}")
    assert res.exit_code == 0, res.output
    rows = {r["class"]: r for r in json.loads((folder / "table6.json").read_text())}
    assert len(rows) == 21 and rows["mean"]["paper"] == 79.0 and rows["aeroplane"]["paper"] == 96.0
    # the val split has one image: chair is its only non-difficult positive, so its AP is 100
    assert rows["chair"]["ap"] == pytest.approx(100.0)


def test_transfer_errors_are_one_line(smoke_model, tmp_path):
    res, _ = _transfer(smoke_model, tmp_path, "target=caltech256", f"root={tmp_path / 'none'}")
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert "256_ObjectCategories/001.ak47/001_0001.jpg" in res.output
    res, _ = _transfer(smoke_model, tmp_path, "target=caltech101")
    assert res.exit_code == 1 and "needs root=DIR" in res.output
    res, _ = _transfer(smoke_model, tmp_path, "target=imagenet")
    assert res.exit_code == 1 and "unknown target 'imagenet'" in res.output
    res, _ = _transfer(smoke_model, tmp_path, "classifiers=[svm]")
    assert res.exit_code == 1 and "unknown classifier 'svm'" in res.output
    assert not (tmp_path / "out" / "transfer").exists() or not any(
        p for p in (tmp_path / "out" / "transfer").iterdir() if p.name != "latest")


def test_scratch_seed_moves_with_the_pretraining_seed():
    """Fold seed + 1000 x the pretrained model's training seed: seed 0 keeps the fold's seed,
    another pretraining seed gets other scratch nets on the same folds; a model without a
    training seed (foreign weights) counts as seed 0."""
    from types import SimpleNamespace

    from zfnet_cli.experiments.transfer import scratch_seed

    assert scratch_seed(3, SimpleNamespace(state={"config": {"seed": 0}})) == 3
    assert scratch_seed(3, SimpleNamespace(state={"config": {"seed": 2}})) == 2003
    assert scratch_seed(4, SimpleNamespace(state={"config": {"data": {}}})) == 4
    assert scratch_seed(4, SimpleNamespace(state={})) == 4
