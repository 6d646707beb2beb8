"""Models a user brings (zfnet_cli/loading.py read_model / load_model, zfnet_cli/pretrained.py
detect_architecture): torchvision state dicts recognised from their keys and shapes, wrapped
dicts, TorchScript, pickled models behind trust_pickle, package.module:factory; the one-line
errors; `zfnet layers` once per source. Random weights, nothing downloaded, 64 px inputs."""
import textwrap
import sys
import warnings

import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from zfnet_cli import pretrained
from zfnet_cli.checkpoint import CheckpointError
from zfnet_cli.loading import Preprocess, load_model, read_model
from zfnet_cli.cli import app
from zfnet_cli.layers import read_layers
from zfnet_cli.model import ModelConfig, ZFNet

runner = CliRunner()
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
ARCHS = {"resnet18": 10, "vgg11_bn": 1000, "mobilenet_v3_small": 7, "densenet121": 5,
         "efficientnet_b0": 3}  # class counts other than 1000, so head detection shows


def _logits(model, x=X):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Each architecture built by torchvision with random weights, saved as a state dict in a
    file whose name does not give the architecture away."""
    root = tmp_path_factory.mktemp("weights")
    out = {}
    for i, (name, n) in enumerate(ARCHS.items()):
        torch.manual_seed(i)
        net = torchvision.models.get_model(name, weights=None, num_classes=n).eval()
        path = root / f"weights_{i}.pth"
        torch.save(net.state_dict(), path)
        out[name] = (path, net)
    yield out
    for path, _ in out.values():
        path.unlink()


@pytest.mark.parametrize("name", list(ARCHS))
def test_torchvision_state_dicts_are_recognised_with_their_class_count(files, name):
    path, net = files[name]
    state, model = read_model(path)
    assert type(model) is type(net) and state["format"] == f"torchvision_{name}"
    assert state["num_classes"] == ARCHS[name] and state["source"] == "torchvision"
    assert state["arch"] == name
    torch.testing.assert_close(_logits(model), _logits(net), rtol=0, atol=0)
    # module names stay torchvision's
    assert [n for n, _ in model.named_modules()] == [n for n, _ in net.named_modules()]


def test_preprocessing_comes_from_torchvisions_weights_metadata(files):
    loaded = load_model(files["efficientnet_b0"][0])  # efficientnet_b0: resize 256, crop 224
    assert loaded.input_size == 224 and loaded.data.image_size == 256
    torch.testing.assert_close(loaded.mean.flatten(), torch.tensor(pretrained.IMAGENET_MEAN) * 255)
    torch.testing.assert_close(loaded.scale.flatten(),
                               1 / (torch.tensor(pretrained.IMAGENET_STD) * 255))
    assert pretrained.torchvision_preprocessing("inception_v3")["crop"] == 299
    custom = load_model(files["resnet18"][0], preprocess=Preprocess(
        mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], input_size=128))
    assert custom.input_size == 128 and custom.data.image_size == round(128 / 0.875)
    image = torch.full((1, 3, 146, 146), 255, dtype=torch.uint8)
    x = custom.preprocess()(image)
    assert x.shape == (1, 3, 128, 128)
    torch.testing.assert_close(x, torch.full_like(x, (1 - 0.5) / 0.25))
    with pytest.raises(ValueError, match=r"preprocess.std needs 3 values"):
        load_model(files["resnet18"][0], preprocess=Preprocess(std=[0.2, 0.2]))
    with pytest.raises(ValueError, match=r"input_size=300 must be .* at most .*resize=256"):
        load_model(files["resnet18"][0], preprocess=Preprocess(input_size=300, resize=256))


def test_wrapped_and_prefixed_state_dicts(files, tmp_path):
    path, net = files["resnet18"]
    sd = torch.load(path)
    variants = {"model": {"model": sd, "epoch": 3},
                "state_dict": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
                "nested": {"model_state_dict": {"_orig_mod." + k: v for k, v in sd.items()}}}
    for name, obj in variants.items():
        torch.save(obj, tmp_path / f"{name}.pth")
        state, model = read_model(tmp_path / f"{name}.pth")
        assert state["format"] == "torchvision_resnet18", name
        torch.testing.assert_close(_logits(model), _logits(net), rtol=0, atol=0)


def test_arch_named_and_errors_name_the_nearest(files, tmp_path):
    path, net = files["resnet18"]
    state, model = read_model(path, arch="resnet18")
    torch.testing.assert_close(_logits(model), _logits(net), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"unknown architecture arch='resnet1'; did you mean "
                                              r"resnet18"):
        read_model(path, arch="resnet1")
    with pytest.raises(CheckpointError, match=r"does not fit torchvision's resnet34: missing "
                                              r"layer1\.2\.conv1\.weight"):
        read_model(path, arch="resnet34")
    sd = torch.load(path)
    del sd["fc.bias"]
    sd["layer4.1.extra.weight"] = torch.zeros(1)
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(sd, tmp_path / "damaged.pth")
    with pytest.raises(CheckpointError) as e:
        read_model(tmp_path / "damaged.pth")
    message = str(e.value)
    assert "\n" not in message
    assert "fits no torchvision architecture: it looks like torchvision's resnet18 but lacks " \
        "fc.bias; also has layer4.1.extra.weight; holds other shapes: layer1.0.conv1.weight " \
        "[64, 64, 1, 1] in the file vs [64, 64, 3, 3] in resnet18, fc.weight [10, 512] in the " \
        "file vs [1000, 512] in resnet18;" in message


def test_torchscript_occlusion_only(files, tmp_path):
    path, net = files["mobilenet_v3_small"][0], files["mobilenet_v3_small"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, X), tmp_path / "net.pt")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = load_model(tmp_path / "net.pt")
    assert not seen, [str(w.message) for w in seen]  # torch's warnings do not leak
    assert loaded.kind == "torchscript" and len(loaded.classes) == 7 and loaded.input_size == 224
    torch.testing.assert_close(_logits(loaded.model), _logits(net))
    with pytest.raises(ValueError, match=r"is a TorchScript model: it supports occlusion only, "
                                         r"no deconvnet") as e:
        loaded.deconv
    assert "\n" not in str(e.value) and loaded.deconv_unavailable == str(e.value)
    # the advice works for any model: the scripted weights, loaded into the code that made it
    assert "checkpoint=package.module:factory weights=weights.pth" in str(e.value)
    torch.save(torch.jit.load(tmp_path / "net.pt").state_dict(), tmp_path / "weights.pth")
    (tmp_path / "scripted_src.py").write_text("import torchvision\n\ndef build():\n    return "
                                              "torchvision.models.mobilenet_v3_small(num_classes=7)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        again = load_model("scripted_src:build", weights=tmp_path / "weights.pth")
    finally:
        sys.path.remove(str(tmp_path))
    torch.testing.assert_close(_logits(again.model), _logits(net))
    assert again.deconv_unavailable is None


def test_pickled_model_only_when_trusted(files, tmp_path):
    net = files["resnet18"][1]
    torch.save(net, tmp_path / "whole.pt")
    torch.save({"model": net, "epoch": 1}, tmp_path / "wrapped_whole.pt")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError) as e:
            read_model(tmp_path / "whole.pt")
    assert not seen, [str(w.message) for w in seen]
    assert str(e.value) == (
        f"{tmp_path / 'whole.pt'} holds pickled Python objects (a whole model saved with "
        f"torch.save(model)?), and loading them runs code from the file: pass trust_pickle=true "
        f"(--trust-pickle) if you trust it, or save a state dict instead: "
        f"torch.save(model.state_dict(), PATH)")
    for name in ("whole.pt", "wrapped_whole.pt"):
        state, model = read_model(tmp_path / name, trust_pickle=True)
        assert state["source"] == "pickle" and state["num_classes"] == 10
        torch.testing.assert_close(_logits(model), _logits(net), rtol=0, atol=0)


FACTORY = '''
import torch
from torch import nn

NUMBER = 3


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def not_a_model():
    return 42


def broken():
    raise RuntimeError("no GPU here")
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "user_nets_zf.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_factory_path_with_and_without_weights(factory_module):
    import user_nets_zf

    reference = user_nets_zf.build()
    torch.manual_seed(5)
    for p in reference.parameters():
        p.data.normal_()
    torch.save({"state_dict": reference.state_dict()}, factory_module / "w.pth")
    loaded = load_model("user_nets_zf:build")
    assert loaded.kind == "factory" and len(loaded.classes) == 4 and loaded.input_size == 224
    assert loaded.source == "user_nets_zf:build"
    assert not torch.equal(_logits(loaded.model), _logits(reference))
    loaded = load_model("user_nets_zf:build", weights=factory_module / "w.pth")
    torch.testing.assert_close(_logits(loaded.model), _logits(reference), rtol=0, atol=0)
    out = read_layers(loaded.model, X, ["3", "1"])  # a bare Sequential: module names only
    assert out["3"].shape == (2, 6, 29, 29) and out["1"].shape == (2, 4, 62, 62)


@pytest.mark.parametrize("spec, error", [
    ("no_such_pkg_zf.nets:build", r"checkpoint=no_such_pkg_zf.nets:build: cannot import "
                                  r"'no_such_pkg_zf.nets': ModuleNotFoundError: No module named "
                                  r"'no_such_pkg_zf' \(run from the folder"),
    ("user_nets_zf:buil", r"module 'user_nets_zf' has no 'buil'; did you mean build\?"),
    ("user_nets_zf:NUMBER", r"'NUMBER' is a int, not a function or class that returns the model"),
    ("user_nets_zf:not_a_model", r"not_a_model\(\) returned a int, not an nn.Module"),
    ("user_nets_zf:broken", r"broken\(\) raised RuntimeError: no GPU here"),
])
def test_factory_errors(factory_module, spec, error):
    with pytest.raises(CheckpointError, match=error) as e:
        load_model(spec)
    assert "\n" not in str(e.value)


def test_factory_weights_that_do_not_fit(factory_module, files):
    with pytest.raises(CheckpointError, match=r"weights=.* do not fit user_nets_zf:build: missing "
                                              r"0.weight"):
        load_model("user_nets_zf:build", weights=files["resnet18"][0])


def test_read_layers_equals_zfnets_layer_outputs():
    net = ZFNet(ModelConfig(channels=[8, 16, 16, 16, 8], fc_widths=[32, 32], input_size=224),
                num_classes=5).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = net.layer_outputs(x)
        logits, ours = read_layers(net, x, list(ref), output=True)
    assert list(ours) == list(ref)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=0, atol=0)
    torch.testing.assert_close(logits, ref["fc8"], rtol=0, atol=0)


def test_in_memory_module():
    loaded = load_model(torchvision.models.squeezenet1_1(num_classes=6))
    assert loaded.kind == "module" and len(loaded.classes) == 6 and loaded.input_size == 224


# ---------------------------------------------------------------- zfnet layers, once per source

def _layers(*args):
    res = runner.invoke(app, ["layers", *args])
    return res.exit_code, res.output


def test_layers_command_on_each_source(files, factory_module, tmp_path):
    path, net = files["resnet18"]
    code, out = _layers("--checkpoint", str(path), "preprocess.input_size=64")
    assert code == 0, out
    assert out.splitlines()[0].startswith(f"torchvision_resnet18 (torchvision) from {path}: "
                                          f"input 3x64x64, 10 classes")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["layer3.1"] == ["layer3.1", "BasicBlock", "--all", "256x4x4"]  # a default of Fig 2
    assert rows["fc"] == ["fc", "Linear", "10"]
    assert "runs 2x" in " ".join(rows["layer1.0.relu"])  # torchvision calls it twice

    torch.save({"model": torch.load(files["vgg11_bn"][0])}, tmp_path / "wrapped.pth")
    code, out = _layers("--checkpoint", str(tmp_path / "wrapped.pth"), "preprocess.input_size=64")
    assert code == 0, out
    rows = {next(w for w in line.split() if "." in w): line.split()
            for line in out.splitlines()[2:] if "." in line}
    assert rows["features.28"] == ["conv8", "features.28", "MaxPool2d", "--all,", "occlude",
                                   "(b)", "512x2x2"]  # the paper's "layer 5": panel (b) too
    assert rows["classifier.4"][:3] == ["fc7", "classifier.4", "ReLU"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, X), tmp_path / "net.ts")
    code, out = _layers("--checkpoint", str(tmp_path / "net.ts"))
    assert code == 0, out
    assert "TorchScript: occlusion uses its output only; a TorchScript model's layers cannot be read" in out and "deconvnet: no" in out

    code, out = _layers("--checkpoint", "user_nets_zf:build")
    assert code == 0, out
    note, *table = out.splitlines()  # no weights=: one line says the factory's own are used
    assert note.startswith("zfnet layers: note: checkpoint=user_nets_zf:build without weights=")
    rows = [line.split() for line in table[2:]]
    assert rows[0] == ["0", "Conv2d", "--all", "4x222x222"] and rows[-1] == ["7", "Linear", "4"]

    torch.save(net, tmp_path / "whole.pt")
    code, out = _layers("--checkpoint", str(tmp_path / "whole.pt"), "--trust-pickle",
                        "preprocess.input_size=32")
    assert code == 0, out
    assert out.startswith("ResNet (pickle)")
    assert ["layer4.1", "BasicBlock", "--all", "512x1x1"] in [line.split() for line in out.splitlines()]


@pytest.mark.parametrize("args, error", [
    (["--checkpoint", "{whole}"], "holds pickled Python objects"),
    (["--checkpoint", "{weights}", "--arch", "resnet1"], "unknown architecture arch='resnet1'"),
    (["--checkpoint", "nowhere_zf.mod:build"], "cannot import 'nowhere_zf.mod'"),
    (["--checkpoint", "{weights}", "preprocess.mean=[1,2]"], "preprocess.mean needs 3 values"),
    (["--checkpoint", "{weights}", "arhc=resnet18"], "unknown config key 'arhc' (did you mean: arch?)"),
])
def test_layers_command_errors_are_one_line(files, tmp_path, args, error):
    torch.save(files["resnet18"][1], tmp_path / "whole.pt")
    args = [a.format(whole=tmp_path / "whole.pt", weights=files["resnet18"][0]) for a in args]
    res = runner.invoke(app, ["layers", *args])
    assert res.exit_code in (1, 2)
    (line,) = res.output.strip().splitlines()
    assert line.startswith("zfnet layers: error: ") and error in line


@pytest.mark.slow
def test_every_torchvision_architecture_is_a_candidate_for_its_own_keys():
    """The family keys (pretrained._FAMILY_KEYS) never cut an architecture away from its own
    state dict, and no two architectures have the same keys and shapes (so the first exact fit
    is the one)."""
    seen = {}
    for name in pretrained.torchvision_architectures():
        state = pretrained._build(name, meta=True).state_dict()
        assert name in pretrained._candidates(state, ""), name
        signature = tuple((k, tuple(v.shape)) for k, v in state.items())
        assert signature not in seen, (name, seen.get(signature))
        seen[signature] = name
