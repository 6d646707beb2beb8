"""The library face: ``import zfnet_cli`` names the public pieces, loads no CLI machinery,
and each piece is documented."""
import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import zfnet_cli as zf


def test_import_loads_no_cli_machinery_even_after_every_export():
    code = ("import sys, zfnet_cli\n"
            "[getattr(zfnet_cli, n) for n in zfnet_cli.__all__]\n"
            "print(sorted(m for m in ('hydra', 'omegaconf', 'typer', 'matplotlib') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_export_resolves_and_is_documented():
    for name in zf.__all__:
        obj = getattr(zf, name)
        doc = inspect.getdoc(obj) or ""
        assert len(doc.splitlines()) >= 3, f"zfnet_cli.{name} needs a docstring"
        if inspect.isfunction(obj) and inspect.signature(obj).parameters:
            assert "Args:" in doc and "Returns:" in doc, f"zfnet_cli.{name}: Args/Returns"
    with pytest.raises(AttributeError, match="no attribute 'occlusion_map'"):
        zf.occlusion_map


def test_loaded_image_is_the_centre_the_model_sees_and_its_input(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    loaded = zf.load_model(tmp_path / "r18.pth")
    seen, x = loaded.image(tmp_path / "photo.png")
    assert seen.dtype == torch.uint8 and seen.shape == x.shape == (3, 224, 224)
    # torchvision's evaluation transform: short side 256, centre 224, ImageNet mean / std.
    small = Image.fromarray(rgb).resize((341, 256), Image.BILINEAR)
    left, top = (341 - 256) // 2, 0
    square = np.asarray(small)[top:top + 256, left:left + 256]
    centre = torch.from_numpy(square[16:240, 16:240].copy()).permute(2, 0, 1)
    assert (seen.int() - centre.int()).abs().max() <= 1  # PIL resize vs load_image's resize
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(x, (seen / 255 - mean) / std, atol=1e-5, rtol=1e-5)
    # the same photo as a PIL image, an array, a uint8 tensor, a float tensor: the same pixels
    as_tensor = torch.from_numpy(rgb).permute(2, 0, 1)
    for picture in (Image.fromarray(rgb), rgb, as_tensor, as_tensor / 255.0):
        got_seen, got_x = loaded.image(picture)
        assert torch.equal(got_seen, seen), type(picture)
        torch.testing.assert_close(got_x, x)
    with pytest.raises(ValueError, match=r"an image tensor is \(3, H, W\), got \(4, 5\)"):
        loaded.image(torch.zeros(4, 5))


def test_type_checkers_see_every_export():
    """The TYPE_CHECKING imports of zfnet_cli/__init__.py name the same modules as the lazy
    table, so what a type checker sees is what `import zfnet_cli` gives."""
    import ast

    tree = ast.parse(inspect.getsource(zf))
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {a.asname: node.module.removeprefix("zfnet_cli.") for node in block.body
            for a in node.names}
    assert seen == zf._EXPORTS
    assert zf.CheckpointError.__module__ == "zfnet_cli.checkpoint"


def test_fig2_is_drawn_from_python(tmp_path):
    """zf.plot_fig2: Fig 2 of a user's model over a folder of photos, in one call; the layer by
    name or as the module itself gives the same figure, written where asked."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=4).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (230, 250, 3), dtype=np.uint8)).save(
            photos / f"p{i}.png")
    loaded = zf.load_model(tmp_path / "r18.pth")
    folder = zf.PhotoFolder(photos, resize=224)
    figure = zf.plot_fig2(loaded, folder, "layer2.1", maps=2, k=2, path=tmp_path / "fig2.png")
    assert isinstance(figure, Image.Image)
    assert figure.width > figure.height  # two maps side by side, each projections | patches
    with Image.open(tmp_path / "fig2.png") as written:
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(figure.convert("RGB")))
    by_module = zf.plot_fig2(loaded, folder, loaded.model.layer2[1], maps=2, k=2)
    assert np.array_equal(np.asarray(by_module), np.asarray(figure))
