"""Weights trained elsewhere (zfnet_cli/pretrained.py): each format is built with its original
class (torchvision's alexnet and vgg16, pytorchcv's zfnet), saved as a state dict, loaded through
``checkpoint=`` and compared with the original's logits; then zfnet visualize and occlude on it,
with ImageNet class names."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli import checkpoint, loading, pretrained
from zfnet_cli.checkpoint import CheckpointError
from zfnet_cli.loading import load_trained
from zfnet_cli.cli import app
from zfnet_cli.data.images import load_image
from zfnet_cli.deconv import Deconvnet, Request
from zfnet_cli.layers import paper_names, read_layers
from zfnet_cli.model import ZFNet

CPU = torch.device("cpu")
CATEGORIES = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
runner = CliRunner()


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """torchvision's alexnet, randomly initialised, saved as its weights file is named."""
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "alexnet-owt-7be5be79.pth"
    torch.save(net.state_dict(), path)
    yield path, net
    path.unlink()  # 244 MB: do not leave it in pytest's kept temp folders


def test_torchvision_alexnet_is_our_zfnet_with_the_same_logits(alexnet_file):
    path, net = alexnet_file
    loaded = load_trained(str(path), "unused", CPU)
    assert isinstance(loaded.model, ZFNet) and loaded.state["format"] == "torchvision_alexnet"
    cfg = loaded.model.cfg
    assert (cfg.channels, cfg.kernels, cfg.strides, cfg.paddings) == (
        [64, 192, 384, 256, 256], [11, 5, 3, 3, 3], [4, 1, 1, 1, 1], [2, 2, 1, 1, 1])
    assert not cfg.lrn and not cfg.pool_ceil and cfg.fc_widths == [4096, 4096]
    # 224 -> 6x6 before the classifier: torchvision's AdaptiveAvgPool2d((6, 6)) is the identity
    assert loaded.model.feature_shape == (256, 6, 6)
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(_logits(loaded.model, x), _logits(net, x), rtol=0, atol=0)
    assert loaded.deconv.layers == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert loaded.input_size == 224 and loaded.class_names == CATEGORIES
    # the converted state is a checkpoint of ours too: build_model rebuilds the same network
    again = checkpoint.build_model(loaded.state)
    torch.testing.assert_close(_logits(again, x), _logits(net, x), rtol=0, atol=0)


def test_torchvision_vgg16_is_torchvisions_own_module_read_by_paper_names(tmp_path):
    torch.manual_seed(1)
    net = torchvision.models.vgg16(weights=None, init_weights=False).eval()  # torch's default init: faster
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(net.state_dict(), path)
    try:
        loaded = load_trained(str(path), "unused", CPU)
    finally:
        path.unlink()  # 553 MB
    model = loaded.model
    assert type(model) is torchvision.models.VGG and loaded.state["format"] == "torchvision_vgg16"
    assert loaded.kind == "torchvision" and loaded.input_size == 224
    names = [f"conv{k}" for k in range(1, 14)] + ["fc6", "fc7", "fc8"]
    assert list(paper_names(model)) == names
    assert paper_names(model)["conv13"] == "features.30" and paper_names(model)["fc7"] == "classifier.4"
    # 64 px: 2x2 after the features, so the adaptive average pool (to 7x7) is really used
    x = torch.randn(2, 3, 64, 64)
    logits = _logits(model, x)
    torch.testing.assert_close(logits, _logits(net, x), rtol=0, atol=0)
    with torch.no_grad():
        outs = read_layers(model, x, names)
        pooled = net.avgpool(net.features(x)).flatten(1)
        fc7 = net.classifier[:5](pooled)  # after relu7
    assert list(outs) == names
    assert outs["conv13"].shape == (2, 512, 2, 2) and outs["conv2"].shape == (2, 64, 32, 32)
    torch.testing.assert_close(outs["fc7"], fc7, rtol=0, atol=0)
    torch.testing.assert_close(outs["fc8"], logits, rtol=0, atol=0)


def test_pytorchcv_zfnet_lrn_before_pool_same_logits(tmp_path):
    models = pytest.importorskip("pytorchcv.models.zfnet")
    torch.manual_seed(2)
    net = models.zfnet().eval()  # random init (pytorchcv downloads weights only when asked)
    path = tmp_path / "zfnet-1727-d010ddca.pth"
    torch.save(net.state_dict(), path)
    loaded = load_trained(str(path), "unused", CPU)
    path.unlink()
    cfg = loaded.model.cfg
    assert loaded.state["format"] == "pytorchcv_zfnet" and cfg.lrn_before_pool and cfg.pool_ceil
    names = list(dict(loaded.model.features.named_children()))
    assert names[:4] == ["conv1", "relu1", "norm1", "pool1"]
    x = 3 * torch.randn(2, 3, 224, 224)  # large enough inputs that the LRN term matters
    torch.testing.assert_close(_logits(loaded.model, x), _logits(net, x), rtol=0, atol=0)


def _pytorchcv_reference(w: dict, x: torch.Tensor) -> torch.Tensor:
    """pytorchcv's AlexNet.forward (pytorchcv/models/alexnet.py, zfnet geometry) written out:
    per unit conv + ReLU, F.local_response_norm(size=5, k=2.0) in stages 1-2, a 3x3/2 ceil-mode
    max-pool at the end of each stage; fc1, fc2 with ReLU, fc3."""
    geometry = {"stage1.unit1": (2, 1), "stage2.unit1": (2, 0), "stage3.unit1": (1, 1),
                "stage3.unit2": (1, 1), "stage3.unit3": (1, 1)}
    for unit, (stride, pad) in geometry.items():
        x = F.relu(F.conv2d(x, w[f"features.{unit}.conv.weight"], w[f"features.{unit}.conv.bias"],
                            stride, pad))
        if unit[:6] in ("stage1", "stage2"):
            x = F.local_response_norm(x, size=5, k=2.0)
        if unit in ("stage1.unit1", "stage2.unit1", "stage3.unit3"):
            x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = x.flatten(1)
    x = F.relu(F.linear(x, w["output.fc1.fc.weight"], w["output.fc1.fc.bias"]))
    x = F.relu(F.linear(x, w["output.fc2.fc.weight"], w["output.fc2.fc.bias"]))
    return F.linear(x, w["output.fc3.weight"], w["output.fc3.bias"])


def test_pytorchcv_layout_without_pytorchcv():
    """pytorchcv's key names and shapes at small widths (10 classes), extra keys ignored as its
    loader does; against its forward pass written out by hand."""
    g = torch.Generator().manual_seed(3)
    shapes = {"features.stage1.unit1.conv": (8, 3, 7, 7), "features.stage2.unit1.conv": (16, 8, 5, 5),
              "features.stage3.unit1.conv": (16, 16, 3, 3), "features.stage3.unit2.conv": (16, 16, 3, 3),
              "features.stage3.unit3.conv": (8, 16, 3, 3), "output.fc1.fc": (32, 8 * 6 * 6),
              "output.fc2.fc": (32, 32), "output.fc3": (10, 32)}
    w = {}
    for name, shape in shapes.items():
        w[f"{name}.weight"] = torch.randn(shape, generator=g) * 0.2
        w[f"{name}.bias"] = torch.randn(shape[0], generator=g) * 0.1
    state, model = pretrained.load_foreign({**w, "output.fc3.extra": torch.zeros(1)})
    assert state["format"] == "pytorchcv_zfnet" and state["classes"] == [str(i) for i in range(10)]
    assert model.cfg.lrn_alpha * model.cfg.lrn_size == 1e-4  # torch's alpha, Krizhevsky's convention
    x = 40 * torch.randn(2, 3, 224, 224, generator=g)
    torch.testing.assert_close(_logits(model, x), _pytorchcv_reference(w, x))


def test_formats_are_told_apart_by_their_keys():
    alex = {k: torch.zeros(1) for k in torchvision.models.alexnet().state_dict()}
    assert pretrained.detect(alex) == "torchvision_alexnet"
    assert pretrained.detect({f"module.{k}": v for k, v in alex.items()}) == "torchvision_alexnet"
    assert pretrained.detect({"state_dict": alex}) == "torchvision_alexnet"
    with torch.device("meta"):
        keys = {name: list(torchvision.models.__dict__[name]().state_dict())
                for name in ("vgg11", "vgg16", "vgg19", "vgg16_bn")}
    for name in ("vgg11", "vgg16", "vgg19"):
        assert pretrained.detect(dict.fromkeys(keys[name])) == f"torchvision_{name}"
    assert pretrained.detect(dict.fromkeys(keys["vgg16_bn"])) is None
    assert pretrained.detect({"model": {}, "model_cfg": {}}) == "zfnet_cli"
    del alex["classifier.6.bias"]
    assert pretrained.detect(alex) is None


def test_unknown_weights_are_one_line_errors(tmp_path):
    cases = {"resnet.pth": {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)},
             "tensor.pth": torch.zeros(3)}
    with torch.device("meta"):
        bn = torchvision.models.vgg11_bn().state_dict()
    cases["vgg11_bn.pth"] = {k: torch.zeros(1) for k in bn}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(CheckpointError) as e:
            load_trained(str(tmp_path / name), "unused", CPU)
        message = str(e.value)
        assert "\n" not in message and message.startswith(f"{tmp_path / name}: ")
        if name == "vgg11_bn.pth":  # the right keys, (1,)-shaped: the nearest is named
            assert "fits no torchvision architecture: it looks like torchvision's vgg11_bn but " \
                "holds other shapes: features.0.weight [1] in the file vs [64, 3, 3, 3] in " \
                "vgg11_bn" in message
        elif name == "resnet.pth":  # too few keys to be any family's
            assert "looks like no torchvision architecture" in message and "module:factory" in message
        else:
            assert "not a state dict (Tensor); accepted: our zfnet train checkpoints" in message
    # a near miss that lost the key its family is recognised by: still named, with that key
    alex = torchvision.models.alexnet().state_dict()
    del alex["features.0.weight"]
    torch.save(alex, tmp_path / "mine.pth")
    with pytest.raises(CheckpointError) as e:
        load_trained(str(tmp_path / "mine.pth"), "unused", CPU)
    assert "looks like torchvision's alexnet but lacks features.0.weight;" in str(e.value)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="is not a checkpoint: a text file") as e:
        load_trained(str(tmp_path / "junk.pth"), "unused", CPU)
    assert "\n" not in str(e.value)
    # known keys, wrong shapes
    alex = torchvision.models.alexnet(num_classes=3).state_dict()
    alex["classifier.1.weight"] = torch.zeros(4096, 100)  # fc6 must read 256 x 6 x 6
    torch.save(alex, tmp_path / "bad_shapes.pth")
    with pytest.raises(CheckpointError, match="weights do not fit their architecture"):
        load_trained(str(tmp_path / "bad_shapes.pth"), "unused", CPU)


def test_preprocessing_is_torchvisions(alexnet_file, tmp_path):
    """Resize 256, centre crop 224, ToTensor, Normalize(ImageNet mean, std): torchvision's
    ``AlexNet_Weights.IMAGENET1K_V1.transforms()``, on a 640x512 photo (resized to 320x256)."""
    path, _ = alexnet_file
    loaded = load_trained(str(path), "unused", CPU)
    rng = np.random.default_rng(4)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (512, 640, 3), dtype=np.uint8)).save(photo)
    ours = loaded.preprocess()(load_image(photo, loaded.data.image_size)[None])[0]
    tv = torchvision.transforms.Compose([
        torchvision.transforms.Resize(256), torchvision.transforms.CenterCrop(224),
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize(pretrained.IMAGENET_MEAN, pretrained.IMAGENET_STD)])
    with Image.open(photo) as im:
        theirs = tv(im.convert("RGB"))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    # the occluder's grey is the mean colour (124, 116, 104) in these units
    fill = loaded.fill()
    expected = (torch.tensor([124.0, 116.0, 104.0]) / 255 - torch.tensor(pretrained.IMAGENET_MEAN)) \
        / torch.tensor(pretrained.IMAGENET_STD)
    torch.testing.assert_close(fill[:, 0, 0], expected, rtol=0, atol=1e-5)


def test_labels_by_index_wnid_or_name():
    classes, names = ["n1", "n2", "n3"], ["tench", "crane", "crane"]
    assert loading.resolve_label("1", classes, names) == 1
    assert loading.resolve_label("n3", classes, names) == 2
    assert loading.resolve_label("Tench", classes, names) == 0
    assert loading.resolve_label("crane", classes, names) == 1  # the first of that name
    with pytest.raises(ValueError, match="unknown class 'tenc'; did you mean tench"):
        loading.resolve_label("tenc", classes, names)


# ---------------------------------------------------------------- the commands on AlexNet

@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    """A torchvision ImageNet root whose meta.bin lists 1000 classes (made-up wnids, in sorted
    order, named like torchvision's categories); train/val hold 2 of them, 2 images each."""
    root = tmp_path_factory.mktemp("imagenet")
    wnids = [f"n{i:08d}" for i in range(1000)]
    torch.save(({w: (CATEGORIES[i], "other name") for i, w in enumerate(wnids)}, []),
               root / "meta.bin")
    rng = np.random.default_rng(5)
    for split in ("train", "val"):
        for w in (wnids[1], wnids[2]):  # goldfish, great white shark
            for j in range(2):
                (root / split / w).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (260, 300, 3), dtype=np.uint8)).save(
                    root / split / w / f"{w}_{j}.JPEG")
    return root


def test_occlude_and_visualize_on_torchvision_alexnet(alexnet_file, imagenet_root, tmp_path):
    path, _ = alexnet_file
    out = tmp_path / "out"
    common = [f"checkpoint={path}", f"output_root={out}", "device=cpu"]
    photo = tmp_path / "dog.jpg"
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(photo)

    # occlude on a file, the true class given by its ImageNet name
    res = runner.invoke(app, ["occlude", str(photo), "--label", "Pomeranian", "--size", "112",
                              "--stride", "56", "experiment=smoke", *common])
    assert res.exit_code == 0, res.output
    m = json.loads(((out / "occlude" / "latest").resolve() / "occlusion.json").read_text())
    (entry,) = m["images"]
    assert entry["target_name"] == "Pomeranian" and entry["target"] == CATEGORIES.index("Pomeranian")
    assert entry["layer"] == "conv5" and entry["grid"] == [3, 3]
    assert all(c["name"] in CATEGORIES for c in entry["top_classes"])
    # without an ImageNet root there are no wnids: the names are the class ids too
    assert entry["clean_label"] == entry["clean_label_name"] in CATEGORIES

    # occlude on ImageNet validation images: labels mapped wnid -> the model's class
    res = runner.invoke(app, ["occlude", "--size", "224", "experiment=smoke", "default_images=2", "data=imagenet", f"data.root={imagenet_root}",
                              "data.workers=0", *common])
    assert res.exit_code == 0, res.output
    m = json.loads(((out / "occlude" / "latest").resolve() / "occlusion.json").read_text())
    assert [(e["target_class"], e["target_name"]) for e in m["images"]] == [
        ("n00000001", "goldfish"), ("n00000002", "great white shark")]

    # Fig 2 over the 4 validation images; the JSON names each image's class
    res = runner.invoke(app, ["visualize", "--layer", "5", "--fmap", "0", "experiment=smoke",
                              "data=imagenet", f"data.root={imagenet_root}", "data.workers=0",
                              *common])
    assert res.exit_code == 0, res.output
    run = (out / "visualize" / "latest").resolve()
    index = json.loads((run / "top9.json").read_text())
    assert index["classes"][1] == "n00000001" and index["class_names"][1] == "goldfish"
    record = index["layers"]["conv5"]["0"]
    assert sorted(record["image_classes"]) == ["goldfish", "goldfish", "great white shark",
                                               "great white shark"]
    assert (run / "figures" / "fig2_conv5.png").is_file()

    # Fig 6 numbers for AlexNet's first layer
    res = runner.invoke(app, ["visualize", "--filters", "experiment=smoke", "data=imagenet",
                              f"data.root={imagenet_root}", "data.workers=0", *common])
    assert res.exit_code == 0, res.output
    metrics = json.loads(((out / "visualize" / "latest").resolve() / "metrics.json").read_text())
    (name, stats), = metrics["models"].items()
    assert name == "torchvision_alexnet conv1 11x11/4" and stats["filters"] == 64


def test_deconvnet_projection_on_converted_alexnet_matches_torchvisions(alexnet_file):
    """The deconvnet reads the converted model exactly as it reads torchvision's own module."""
    path, net = alexnet_file
    loaded = load_trained(str(path), "unused", CPU)
    x = torch.randn(1, 3, 224, 224)
    ours = loaded.deconv.project(x, [Request(0, "conv5", 3, None)])
    theirs = Deconvnet(net).project(x, [Request(0, "conv5", 3, None)])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_eval_only_on_a_torchvision_state_dict_matches_torchvision(tmp_path):
    """`zfnet train --eval-only` on a torchvision alexnet file (3 classes here, so a 3-class val
    tree is its whole label space): the loss and accuracy equal torchvision's own pipeline
    (Resize 256, CenterCrop 224, ToTensor, Normalize) through the original module."""
    from torchvision import transforms as T

    torch.manual_seed(3)
    net = torchvision.models.alexnet(weights=None, num_classes=3).eval()
    path = tmp_path / "alexnet_3.pth"
    torch.save(net.state_dict(), path)
    files = _val_tree(tmp_path)
    res = runner.invoke(app, ["train", "--eval-only", "--checkpoint", str(path), "data=imagenet",
                              f"data.root={tmp_path / 'data'}", f"output_root={tmp_path / 'out'}",
                              "progress=false", "data.workers=0"])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "out" / "train" / "latest" / "metrics.json").read_text())["val"]["1crop"]

    tv = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    x = torch.stack([tv(Image.open(f).convert("RGB")) for f, _ in files])
    y = torch.tensor([label for _, label in files])
    logits = _logits(net, x)
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-3)
    assert got["top1"] == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())


def test_eval_only_takes_the_model_source_keys_of_the_other_commands(tmp_path, monkeypatch):
    """`zfnet train --eval-only` reads a model as every other command does: arch= for a state
    dict whose name says nothing, preprocess.* for its input, a factory with --weights."""
    from torchvision import transforms as T

    torch.manual_seed(4)
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    (tmp_path / "eval_nets.py").write_text("import torchvision\n\ndef build():\n"
                                           "    return torchvision.models.resnet18(num_classes=3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    files = _val_tree(tmp_path)
    common = ["data=imagenet", f"data.root={tmp_path / 'data'}", "progress=false",
              "data.workers=0", "preprocess.input_size=64", "preprocess.std=[0.5,0.5,0.5]"]
    tv = T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor(),  # 73 = round(64 / 0.875)
                    T.Normalize((0.485, 0.456, 0.406), (0.5, 0.5, 0.5))])
    x = torch.stack([tv(Image.open(f).convert("RGB")) for f, _ in files])
    y = torch.tensor([label for _, label in files])
    want = F.cross_entropy(_logits(net, x), y).item()
    for name, source in {"arch": ["--checkpoint", str(path), "--arch", "resnet18"],
                         "factory": ["--checkpoint", "eval_nets:build", "--weights", str(path)]
                         }.items():
        out = tmp_path / name
        res = runner.invoke(app, ["train", "--eval-only", *source, *common, f"output_root={out}"])
        assert res.exit_code == 0, (name, res.output)
        got = json.loads((out / "train" / "latest" / "metrics.json").read_text())["val"]["1crop"]
        assert got["loss"] == pytest.approx(want, rel=1e-3), name
    res = runner.invoke(app, ["train", "arch=resnet18", f"output_root={tmp_path / 'no'}"])
    assert res.exit_code == 1 and "arch say(s) how eval_only=true reads checkpoint=" in res.output


def _val_tree(tmp_path):
    """An ImageNet-style tree of 3 classes, 2 val photos each (and one train photo each)."""
    rng = np.random.default_rng(2)
    files = []
    for label, wnid in enumerate(["n01", "n02", "n03"]):
        for j in range(2):
            f = tmp_path / "data" / "val" / wnid / f"{j}.JPEG"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (240, 300, 3), dtype=np.uint8)).save(f)
            files.append((f, label))
    (tmp_path / "data" / "train").mkdir()
    for wnid in ("n01", "n02", "n03"):
        (tmp_path / "data" / "train" / wnid).mkdir()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / "data" / "train" / wnid / "x.JPEG")
    return files
