"""zfnet train eval_test=true: the final model scored on the test split after the last epoch
(tune on val, read the claims on test), and refused up front where there is none."""
import json

import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import one_error_line
from zfnet_cli import checkpoint
from zfnet_cli.cli import app
from zfnet_cli.config import compose, make_run_dir
from zfnet_cli.data.sources import load_split
from zfnet_cli.experiments import train


def _top1(model, data, mean, scale):
    """Top-1 accuracy (%) of ``model`` on ``data``, written out here: the smoke crop is the
    whole image, so the centre crop is the identity and the input is (pixels - mean) x scale."""
    with torch.no_grad():
        x = (data.images.float() - mean) * scale
        pred = model(x).argmax(dim=1)
    return 100.0 * float((pred == data.labels).double().mean())


def test_eval_test_scores_the_final_model_on_the_test_split(smoke):
    over = smoke + ["epochs=2", "eval_test=true"]
    cfg = compose("train", over)
    run_dir = make_run_dir("train", cfg, argv=["test"])
    metrics = train.run(cfg, run_dir, overrides=over)
    final = metrics["final"]
    assert json.loads((run_dir / "metrics.json").read_text())["final"] == final
    test_set = load_split(cfg.data, "test", progress=False)
    val_set = load_split(cfg.data, "val", progress=False)
    assert final["test_images"] == len(test_set) != 0 and final["test_crops"] == 1
    assert final["test_top1_err"] == 100 - final["test_top1"]
    assert final["test_top5"] >= final["test_top1"] and "test_loss" in final
    # the final model (last.pt), scored independently of the engine's evaluate()
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    model = checkpoint.build_model(state).eval()
    assert abs(_top1(model, test_set, state["mean"], cfg.data.scale) - final["test_top1"]) < 1e-9
    assert abs(_top1(model, val_set, state["mean"], cfg.data.scale) - final["val_top1"]) < 1e-9
    # the per-epoch rows stay val-only
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("test_") for r in rows for k in r)


def test_without_eval_test_there_is_no_test_score(smoke_model):
    _, run = smoke_model
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert not any(k.startswith("test_") for k in final)


def test_no_test_split_fails_before_training(smoke, tmp_path):
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for c, wnid in enumerate(["n01440764", "n01443537"]):
            (root / split / wnid).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (72, 72), (40 * i, 90 * c, 0)).save(
                    root / split / wnid / f"{i}.JPEG")
    res = CliRunner().invoke(app, ["train", *smoke, "--eval-test", "data=imagenet",
                                   f"data.root={root}", "data.image_size=72", "data.crop=64",
                                   "data.workers=0", "batch_size=2"])
    one_error_line(res, "no test split")
    assert "run folder" not in res.output  # the start line, printed after the data is read
    out = tmp_path / "outputs" / "train"
    assert not out.is_dir() or not list(out.glob("20*")), list(out.iterdir())
    assert not list((tmp_path / "cache").glob("mean_*"))  # not even the mean image was computed


def test_eval_test_with_eval_only_is_one_line(smoke):
    res = CliRunner().invoke(app, ["train", *smoke, "eval_test=true", "eval_only=true"])
    one_error_line(res, "eval_test=true", "eval_only=true")
