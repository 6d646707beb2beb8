"""zfnet visualize (Figs 2, 4, 6) end to end on a smoke-trained model, plus Fig 6's numbers."""
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from zfnet_cli import checkpoint
from zfnet_cli.cli import app
from zfnet_cli.data.sources import DataConfig, load_split
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.experiments.visualize import filter_stats
from zfnet_cli.viz import projection_to_image

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(smoke_model, tmp_path_factory):
    """The shared smoke model (ZFNet's 7x7/2 conv1) and an AlexNet-style 11x11/4 one."""
    root, zf = smoke_model
    alex_root = tmp_path_factory.mktemp("alex")
    res = runner.invoke(app, ["train", "experiment=smoke", f"output_root={alex_root}",
                              f"data.cache_dir={root / 'cache'}", "model=small_alexnet",
                              "model.channels=[8,16,16,16,16]", "model.fc_widths=[32,32]"])
    assert res.exit_code == 0, res.output
    return root, zf, (alex_root / "train" / "latest").resolve()


def _vis(root, *args):
    res = runner.invoke(app, ["visualize", "experiment=smoke", f"output_root={root}", *args])
    return res, (root / "visualize" / "latest").resolve()


def test_top9_index_matches_the_model(trained):
    root, zf, _ = trained
    res, run = _vis(root, "--layer", "3", "--fmap", "5", "--fmap", "0")
    assert res.exit_code == 0, res.output
    assert (run / "figures" / "fig2_conv3.png").stat().st_size > 500
    index = json.loads((run / "top9.json").read_text())
    assert set(index["layers"]) == {"conv3"} and set(index["layers"]["conv3"]) == {"0", "5"}
    # independent check: recompute each recorded activation straight from the model
    state = checkpoint.load(zf / "checkpoints" / "last.pt")
    model = checkpoint.build_model(state).eval()
    data = load_split(DataConfig(**state["config"]["data"]), "val", progress=False)
    # the training preprocessing, rebuilt by hand from the checkpoint's own record
    pre = BatchPreprocess(state["mean"], state["model_cfg"]["input_size"], train=False,
                          scale=state["config"]["data"]["scale"])
    for fmap, rec in index["layers"]["conv3"].items():
        assert rec["values"] == sorted(rec["values"], reverse=True) and len(rec["values"]) == 4
        x = pre(data.images[rec["images"]])
        acts = model.layer_outputs(x)["conv3"][:, int(fmap)]  # (4, h, w)
        for j, (y, xx) in enumerate(rec["positions"]):
            assert acts[j, y, xx].item() == pytest.approx(rec["values"][j], rel=1e-5, abs=1e-6)
            assert acts[j].max().item() == pytest.approx(rec["values"][j], rel=1e-5, abs=1e-6)
        # no other image of the scanned 64 beats the 4th
        all_acts = model.layer_outputs(pre(data.images[:64]))["conv3"][:, int(fmap)].flatten(1).max(1).values
        assert all_acts.topk(4).values[-1].item() == pytest.approx(rec["values"][-1], rel=1e-5, abs=1e-6)


def test_all_layers_evolution_and_filters(trained):
    root, zf, alex = trained
    res, run = _vis(root, "--all", f"checkpoint={zf}")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (run / "figures").iterdir()) == [f"fig2_conv{i}.png" for i in range(1, 6)]
    res, run = _vis(root, "--evolution", f"checkpoint={zf}")
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == [1, 2] and (run / "figures" / "fig4_evolution.png").exists()
    res, run = _vis(root, "--filters", "--compare", str(alex), str(zf))
    assert res.exit_code == 0, res.output
    models = json.loads((run / "metrics.json").read_text())["models"]
    assert [(m["kernel"], m["stride"]) for m in models.values()] == [(11, 4), (7, 2)]
    # the claims report reads these keys: one pair of models is one seed (no renorm-off model)
    from zfnet_cli import claims

    dead, mid, renorm = claims.fig6(root)
    assert dead.verdict == mid.verdict == "single run" and renorm.verdict == "not measured"
    assert mid.a.values == [models[next(k for k in models if "7x7" in k)]["spectral_energy"]["mid"]]
    for m in models.values():
        assert math.isclose(sum(m["spectral_energy"].values()), 1.0, rel_tol=1e-6)
    assert {p.name for p in (run / "figures").iterdir()} == {"fig6_filters.png", "fig6_layer2.png"}


@pytest.mark.parametrize("args, message", [
    (["--layer", "7"], "--layer 7 is not a conv layer of this model; valid layers: 1, 2, 3, 4, 5"),
    (["--layer", "2", "--fmap", "16"], "--fmap 16 out of range: conv2 has 16 feature maps (0..15)"),
    (["stray"], "unexpected argument 'stray' (overrides are KEY=VALUE; runs to compare need --filters --compare)"),
])
def test_bad_requests_are_one_line(trained, args, message):
    root, _, _ = trained
    before = sorted((root / "visualize").glob("20*")) if (root / "visualize").exists() else []
    res, _ = _vis(root, *args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [f"zfnet visualize: error: {message}"]
    after = sorted((root / "visualize").glob("20*")) if (root / "visualize").exists() else []
    assert after == before  # no half-made run folder left behind


def test_no_trained_model_says_what_to_do(tmp_path):
    res, _ = _vis(tmp_path)
    assert res.exit_code == 1
    assert "run `zfnet train` first or pass checkpoint=PATH" in res.output


def test_filter_stats_hand_case():
    k = 16
    x = torch.arange(k, dtype=torch.float64)
    low = torch.cos(2 * math.pi * 0.0625 * x)[None, :].expand(k, k)  # 1/16 cycle per pixel
    high = torch.cos(2 * math.pi * 0.375 * x)[None, :].expand(k, k)  # 3/8 cycle per pixel
    w = torch.stack([low.expand(3, k, k), high.expand(3, k, k), 0.001 * high.expand(3, k, k)])
    stats = filter_stats(w, dead_fraction=0.1)
    assert stats["dead"] == 1 and stats["filters"] == 3  # the 0.001-scaled one
    # live filters: one low, one high; each band gets about half of the average, less what the
    # 16-pixel window leaks into the neighbouring (mid) band
    e = stats["spectral_energy"]
    assert 0.4 < e["low"] < 0.55 and 0.4 < e["high"] < 0.55 and e["mid"] < 0.2


def test_projection_display_zero_is_grey():
    p = np.zeros((3, 2, 2))
    p[0, 0, 0], p[1, 1, 1] = 2.0, -2.0
    img = projection_to_image(p)  # (h, w, 3): 128 + 127 * p / max|p|
    assert img.shape == (2, 2, 3) and img[0, 1, 2] == 128
    assert img[0, 0, 0] == 255 and img[1, 1, 1] == 1
