"""Fig 2 on any network: ``visualize.top9_figures`` on a torchvision resnet18 (random weights),
checked against the model itself; the top-9 scan under torchrun with 2 gloo ranks equals one
process."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from zfnet_cli.loading import load_trained
from zfnet_cli.config import compose
from zfnet_cli.data.sources import load_split
from zfnet_cli.experiments import visualize


@pytest.fixture(scope="module")
def resnet_loaded(smoke_model):
    """The smoke model's data and preprocessing with a torchvision resnet18 in its place."""
    root, run = smoke_model
    loaded = load_trained(str(run / "checkpoints" / "last.pt"), str(root), torch.device("cpu"))
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=len(loaded.classes)).eval()
    return root, dataclasses.replace(loaded, model=net)


def _activations(net, module, x):
    out = {}
    h = dict(net.named_modules())[module].register_forward_hook(
        lambda m, i, o: out.setdefault("a", o.detach().clone()))
    with torch.no_grad():
        net(x)
    h.remove()
    return out["a"]


def test_fig2_on_a_resnet_block(resnet_loaded, tmp_path):
    root, loaded = resnet_loaded
    cfg = compose("visualize", ["experiment=smoke", f"output_root={root}", "layers=[layer3.1]",
                                "fmaps=[42,7]", "max_images=24"])
    metrics = visualize.top9_figures(cfg, loaded, tmp_path, torch.device("cpu"))
    assert metrics["deconvnet"] == "GraphDeconvnet" and metrics["layers"] == ["layer3.1"]
    assert (tmp_path / "figures" / "fig2_layer3.1.png").stat().st_size > 500
    index = json.loads((tmp_path / "top9.json").read_text())["layers"]["layer3.1"]
    assert set(index) == {"7", "42"}
    data = load_split(loaded.data, "val", progress=False)
    x = loaded.preprocess()(data.images[:24])
    acts = _activations(loaded.model, "layer3.1", x)  # (24, 256, 4, 4) at 64 px
    size = loaded.input_size
    for fmap, rec in index.items():
        strongest = acts[:, int(fmap)].flatten(1).max(1).values
        assert rec["values"] == pytest.approx(strongest.topk(4).values.tolist(), rel=1e-5, abs=1e-6)
        for img, (y, xx), box in zip(rec["images"], rec["positions"], rec["receptive_fields"]):
            assert acts[img, int(fmap), y, xx].item() == pytest.approx(strongest[img].item(), rel=1e-5)
            y0, x0, y1, x1 = box
            # layer3.1 of a ResNet at 64 px: each position sees most of the image, never less
            # than the 3x3-conv chain's span and never outside it
            assert 0 <= y0 < y1 <= size and 0 <= x0 < x1 <= size and (y1 - y0) >= 40


def test_fig2_default_layers_are_the_blocks(resnet_loaded, tmp_path):
    root, loaded = resnet_loaded
    cfg = compose("visualize", ["experiment=smoke", f"output_root={root}", "max_images=8",
                                "maps_per_layer=1", "k=2"])
    metrics = visualize.top9_figures(cfg, loaded, tmp_path, torch.device("cpu"))
    blocks = [f"layer{s}.{b}" for s in range(1, 5) for b in (0, 1)]
    assert metrics["layers"] == blocks
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(
        f"fig2_{b}.png" for b in blocks)


def _torchrun(args, cwd, nproc):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "zfnet_cli", "visualize", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # three torchrun processes: about a minute on 2 shared cores
def test_top9_two_gloo_ranks_equal_one_process(smoke_model, tmp_path):
    root, run = smoke_model
    args = ["experiment=smoke", f"checkpoint={run / 'checkpoints' / 'last.pt'}", "--layer", "2",
            "--layer", "5", "--fmap", "0", "--fmap", "3", "max_images=37", "batch_size=8",
            "device=cpu"]
    results = {}
    for nproc in (2, 1):
        out = tmp_path / str(nproc)
        res = _torchrun(args + [f"output_root={out}"], tmp_path, nproc)
        assert res.returncode == 0, res.stderr[-3000:]
        runs = list((out / "visualize").glob("20*"))
        assert len(runs) == 1  # one shared run folder
        assert json.loads((runs[0] / "metrics.json").read_text())["world_size"] == nproc
        results[nproc] = json.loads((runs[0] / "top9.json").read_text())["layers"]
    for layer in ("conv2", "conv5"):
        for fmap in ("0", "3"):
            two, one = results[2][layer][fmap], results[1][layer][fmap]
            assert two["images"] == one["images"] and two["positions"] == one["positions"]
            assert two["values"] == pytest.approx(one["values"], rel=1e-6, abs=1e-7)
            assert two["receptive_fields"] == one["receptive_fields"]


CLI_ARCHS = {  # torchvision model -> (layer, fmap)
    "resnet18": ("layer3.1", 42),
    "vgg16_bn": ("conv8", 5),
    "densenet121": ("features.transition2", 3),
    "mobilenet_v3_small": ("features.6", 4),
    "efficientnet_b0": ("features.4", 2),
    "convnext_tiny": ("features.5", 1),
}

SLIM_VGG = '''
import torch, torchvision
from torch import nn


def build():
    """vgg16_bn's real features and a narrow head (the 4096-wide one is 500 MB on disk)."""
    torch.manual_seed(0)
    with torch.device("meta"):
        net = torchvision.models.vgg16_bn(num_classes=4)
    net.features = net.features.to_empty(device="cpu")
    for m in net.features.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    net.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4))
    return net
'''


# resnet18 and mobilenet_v3_small in `make test`; the bigger four (5-10 s each on 2 shared cores)
# in `make test-slow` -- every architecture is also in the fast scan and deconvnet tests
@pytest.mark.parametrize("name", [n if n in ("resnet18", "mobilenet_v3_small")
                                  else pytest.param(n, marks=pytest.mark.slow) for n in CLI_ARCHS])
def test_cli_fig2_per_architecture(name, smoke_model, tmp_path, monkeypatch):
    """`zfnet visualize --layer L --fmap F checkpoint=FILE` on a torchvision state dict (vgg16_bn
    through a factory of the user's code), over the embedded images at 64 px."""
    from typer.testing import CliRunner

    from zfnet_cli.cli import app

    root, _ = smoke_model
    layer, fmap = CLI_ARCHS[name]
    if name == "vgg16_bn":
        (tmp_path / "slim_vgg.py").write_text(SLIM_VGG)
        monkeypatch.syspath_prepend(str(tmp_path))
        source = "slim_vgg:build"
    else:
        torch.manual_seed(0)
        source = str(tmp_path / f"{name}.pth")
        torch.save(torchvision.models.get_model(name, num_classes=4).state_dict(), source)
    res = CliRunner().invoke(app, [
        "visualize", "--layer", layer, "--fmap", str(fmap), f"checkpoint={source}",
        "experiment=smoke", "data=embedded", "data.image_size=64", "data.crop=64",
        "preprocess.input_size=64", f"data.cache_dir={root / 'cache'}", "max_images=6", "k=2",
        f"output_root={tmp_path / 'out'}"])
    assert res.exit_code == 0, res.output
    run = (tmp_path / "out" / "visualize" / "latest").resolve()
    assert (run / "figures" / f"fig2_{layer}.png").stat().st_size > 300
    record = json.loads((run / "top9.json").read_text())["layers"][layer][str(fmap)]
    assert len(record["images"]) == 2 and record["values"][0] >= record["values"][1]
    assert json.loads((run / "metrics.json").read_text())["deconvnet"] == "GraphDeconvnet"
