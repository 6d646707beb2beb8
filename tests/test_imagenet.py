"""ImageFolder loading (paper §3 preprocessing), the mean image and its cache, layout errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet_cli.data import imagenet
from zfnet_cli.data.imagenet import DataLayoutError, ImageFolderData, compute_mean_image

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _save(path, array, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path, **kw)


def _noise(rng, h, w, c=3):
    return rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)


@pytest.fixture
def tree(tmp_path):
    """Three wnids (given unsorted on disk), images of varied sizes and modes, plus strays."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet"
    a, b, c = (root / "train" / w for w in WNIDS)
    _save(c / "n01484850_2.JPEG", _noise(rng, 240, 320))
    _save(c / "n01484850_1.JPEG", _noise(rng, 300, 256))
    _save(a / "n01440764_1.JPEG", _noise(rng, 200, 300))
    _save(a / "n01440764_2.jpg", _noise(rng, 400, 200, c=1))            # greyscale
    _save(b / "n01443537_1.png", _noise(rng, 256, 256, c=4), mode="RGBA")
    Image.fromarray(_noise(rng, 180, 190)).convert("CMYK").save(b / "n01443537_2.JPEG")
    (a / ".DS_Store").write_bytes(b"\0\1junk")
    (a / "notes.txt").write_text("not an image")
    (root / "train" / ".DS_Store").write_bytes(b"junk")
    (root / "train" / ".cache").mkdir()                                   # hidden folder: no class
    for w in WNIDS:
        _save(root / "val" / w / f"ILSVRC2012_val_{w}.JPEG", _noise(rng, 100, 150))
    return root


def test_classes_sorted_labels_and_samples(tree):
    ds = ImageFolderData(tree, "train", resize=64)
    assert ds.classes == WNIDS
    names = [(p.rsplit("/", 1)[-1], y) for p, y in ds.samples]
    assert names == [
        ("n01440764_1.JPEG", 0), ("n01440764_2.jpg", 0),
        ("n01443537_1.png", 1), ("n01443537_2.JPEG", 1),
        ("n01484850_1.JPEG", 2), ("n01484850_2.JPEG", 2),
    ]
    val = ImageFolderData(tree, "val", resize=64)
    assert val.classes == WNIDS and [y for _, y in val.samples] == [0, 1, 2]


def test_items_are_uint8_rgb_squares(tree):
    ds = ImageFolderData(tree, "train", resize=64)
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
        assert isinstance(label, int) and label == ds.samples[i][1]
    grey, _ = ds[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_extensions_case_insensitive_and_configurable(tree):
    ds = ImageFolderData(tree, "train", resize=32, extensions=(".JPEG", ".PNG"))
    assert len(ds) == 5  # the .jpg is left out, .JPEG and .png kept
    with pytest.raises(DataLayoutError, match="without images"):
        ImageFolderData(tree, "train", resize=32, extensions=(".bmp",))


def _bands(h, w, colours, vertical=True):
    """An image split into equal bands of the given colours, left to right (or top to bottom)."""
    array = np.zeros((h, w, 3), np.uint8)
    n = len(colours)
    for k, colour in enumerate(colours):
        if vertical:
            array[:, k * w // n:(k + 1) * w // n] = colour
        else:
            array[k * h // n:(k + 1) * h // n, :] = colour
    return array


RED, GREEN, BLUE = (200, 10, 10), (10, 200, 10), (10, 10, 200)


def test_centre_crop_keeps_the_centre_band(tmp_path):
    # 768 x 256 (w x h): short side is already 256, the centre 256 columns are the green band
    _save(tmp_path / "train" / WNIDS[0] / "wide.png", _bands(256, 768, [RED, GREEN, BLUE]))
    # 512 x 1536 portrait, halved to 256 x 768 first: the centre rows are the green band
    _save(tmp_path / "train" / WNIDS[0] / "tall.png",
          _bands(1536, 512, [RED, GREEN, BLUE], vertical=False))
    ds = ImageFolderData(tmp_path, "train", resize=256)
    tall, _ = ds[0]
    wide, _ = ds[1]
    green = torch.tensor(GREEN, dtype=torch.uint8)[:, None, None]
    assert torch.equal(wide, green.expand(3, 256, 256))
    # the antialiased 2x reduction blends only the outermost rows at the band edges
    assert torch.equal(tall[:, 2:-2], green.expand(3, 252, 256))
    assert tall.shape == (3, 256, 256)


def test_rgba_and_short_side_resize(tmp_path):
    rgba = np.zeros((40, 80, 4), np.uint8)
    rgba[..., :3] = (30, 60, 90)
    rgba[..., 3] = 17                                      # alpha is dropped, colour kept
    _save(tmp_path / "train" / WNIDS[0] / "a.png", rgba, mode="RGBA")
    image, _ = ImageFolderData(tmp_path, "train", resize=20)[0]
    assert image.shape == (3, 20, 20)
    assert torch.equal(image, torch.tensor([30, 60, 90], dtype=torch.uint8)[:, None, None]
                       .expand(3, 20, 20))


@pytest.fixture
def exact_tree(tmp_path):
    """Lossless images already at the target size, so the mean is computable by hand."""
    rng = np.random.default_rng(1)
    arrays = []
    for k, w in enumerate(WNIDS[:2]):
        for j in range(3):
            array = _noise(rng, 8, 8)
            arrays.append(array)
            _save(tmp_path / "data" / "train" / w / f"{w}_{j}.png", array)
    return tmp_path / "data", arrays


def test_mean_image_matches_hand_computation(exact_tree):
    root, arrays = exact_tree
    ds = ImageFolderData(root, "train", resize=8)
    mean = compute_mean_image(ds, None, batch_size=4, progress=False)
    expected = np.stack(arrays).astype(np.float64).mean(axis=0).transpose(2, 0, 1)
    assert mean.dtype == torch.float32 and mean.shape == (3, 8, 8)
    np.testing.assert_allclose(mean.numpy(), expected, rtol=0, atol=1e-4)


def test_mean_cache_reused_and_invalidated(exact_tree, monkeypatch):
    root, arrays = exact_tree
    cache = root / "cache" / "mean.pt"
    ds = ImageFolderData(root, "train", resize=8)
    first = compute_mean_image(ds, cache, batch_size=4, progress=False)
    assert cache.is_file() and [p.name for p in cache.parent.iterdir()] == ["mean.pt"]

    def no_reading(self, i):
        raise AssertionError("the cached mean should have been used")

    with monkeypatch.context() as m:
        m.setattr(ImageFolderData, "__getitem__", no_reading)
        assert torch.equal(compute_mean_image(ds, cache, progress=False), first)
        # a different key (resize) must not load the cached mean
        with pytest.raises(AssertionError, match="cached mean"):
            compute_mean_image(ImageFolderData(root, "train", resize=4), cache, progress=False)

    # one more image: the sample count changes, so the mean is recomputed and re-cached
    _save(root / "train" / WNIDS[0] / "extra.png", np.full((8, 8, 3), 255, np.uint8))
    ds2 = ImageFolderData(root, "train", resize=8)
    second = compute_mean_image(ds2, cache, progress=False)
    expected = np.stack(arrays + [np.full((8, 8, 3), 255)]).mean(axis=0).transpose(2, 0, 1)
    np.testing.assert_allclose(second.numpy(), expected, atol=1e-4)
    stored = torch.load(cache, weights_only=True)
    assert stored["key"]["num_samples"] == 7 and torch.equal(stored["mean"], second)


def test_corrupt_cache_is_recomputed(exact_tree):
    root, _ = exact_tree
    cache = root / "mean.pt"
    cache.write_bytes(b"truncated")
    ds = ImageFolderData(root, "train", resize=8)
    mean = compute_mean_image(ds, cache, progress=False)
    assert torch.equal(torch.load(cache, weights_only=True)["mean"], mean)


def _layout_message(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith("expected ImageFolder layout ROOT/{train,val}/<wnid>/*.JPEG; ")
    return message


def test_layout_errors(tmp_path, tree):
    with pytest.raises(DataLayoutError) as e:
        ImageFolderData(tmp_path / "nowhere", "train")
    assert f"no folder {tmp_path / 'nowhere'}" in _layout_message(e)

    with pytest.raises(DataLayoutError) as e:
        ImageFolderData(tree, "test")
    assert f"no folder {tree / 'test'}" in _layout_message(e)

    flat = tmp_path / "flat"
    _save(flat / "train" / "image.JPEG", np.zeros((4, 4, 3)))   # images not in class folders
    with pytest.raises(DataLayoutError) as e:
        ImageFolderData(flat, "train")
    assert f"no class folders in {flat / 'train'}" in _layout_message(e)

    (tree / "train" / "n09999999").mkdir()
    (tree / "train" / "n09999999" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DataLayoutError) as e:
        ImageFolderData(tree, "train")
    assert "without images" in _layout_message(e) and "n09999999" in str(e.value)

    # val lacks the class train now has: labels would shift
    with pytest.raises(DataLayoutError) as e:
        ImageFolderData(tree, "val")
    assert "only in train ['n09999999']" in _layout_message(e)


def test_layout_error_is_a_value_error():
    assert issubclass(DataLayoutError, ValueError)
    assert imagenet.LAYOUT == "ROOT/{train,val}/<wnid>/*.JPEG"
