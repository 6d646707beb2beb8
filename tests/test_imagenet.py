"""ImageFolder loading (paper §3 preprocessing), the mean image and its cache, layout errors;
torchvision's ImageNet root (meta.bin, the devkit tarball) and the class names it gives."""
from __future__ import annotations

import base64
import io
import tarfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet_cli.data import imagenet
from zfnet_cli.data.imagenet import (DEVKIT_FILE, DEVKIT_META, DEVKIT_VAL, META_FILE,
                                     DataLayoutError, ImageFolderData, compute_mean_image,
                                     read_mat, read_meta)

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
    rgba[..., 3] = 17                  # composited over grey, as `zfnet prepare` and user files
    _save(tmp_path / "train" / WNIDS[0] / "a.png", rgba, mode="RGBA")
    image, _ = ImageFolderData(tmp_path, "train", resize=20)[0]
    assert image.shape == (3, 20, 20)
    # c * 17/255 + 128 * (1 - 17/255): 30 -> 121.47, 60 -> 123.47, 90 -> 125.47
    assert torch.equal(image, torch.tensor([121, 123, 125], dtype=torch.uint8)[:, None, None]
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


# ---------------------------------------------------------------- torchvision's ImageNet root

NAMES = {"n01440764": ("tench", "Tinca tinca"), "n01443537": ("goldfish", "Carassius auratus"),
         "n01484850": ("great white shark", "white shark", "man-eater", "man-eating shark",
                       "Carcharodon carcharias")}
VAL_WNIDS = ["n01443537", "n01440764", "n01484850", "n01484850"]

# A devkit-style data/meta.mat written by SciPy (an independent writer):
# scipy.io.savemat(f, {"synsets": a}, do_compression=True) with ``a`` a (4, 1) struct array of
# the devkit's fields ILSVRC2012_ID, WNID, words, gloss, num_children, children, wordnet_height,
# num_train_images: the three leaf classes of NAMES (ids 1-3, no children) and their parent
# "fish" (id 4, children [1, 2, 3]), which is not a class. torchvision's parse_devkit_archive
# (with SciPy) gives NAMES and VAL_WNIDS from a tarball of this file and the ground truth
# 2 1 3 3, as read_meta does here.
META_MAT = base64.b64decode(
    "TUFUTEFCIDUuMCBNQVQtZmlsZSBQbGF0Zm9ybTogcG9zaXgsIENyZWF0ZWQgb246IFN1biBOb3YgMjIgMTI6NTA6MDkgMjAy"
    "NgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSU0PAAAADQIAAHic7Vbdatsw"
    "FFY3r2tuSreLURgMPUACzl+buwa6ixZGKWvZLrNT+0QWtSUmyQl5gz7AHmyP0keYVDuJIwqCeneb8In1HfN9R7I+H3JICPnd"
    "IWTf3g9svCLVeFPjyMZeHW9t6JXQaLR9HpF3df7BxuWXm29fzwdxfzC7/OwEvl9V981YSpXqZoLlUu8kRFnMkoznqULxlNgB"
    "aw2BZpYhZ5mpKUYBFzNeAENNDm1yQrb72ff2s9cINzp1vhqPZ44/bfCjZ/idBv+oxiLuj0bx6cmozjudi4DOe0/HYYMiybr0"
    "losEqHG/W73rgN4nT8/huUKdLcGgoikk2Mv5PVIGBdI51xlp+b4qfhzgE4+/5rWt+2L+9a9py/rTVj4ZjoenjX2EzvWjp+Mw"
    "k3nqTrBLz0GB1rzUFEoFptQb3R8B3a6n67AuIM+pU0dBpbIXCIY9hSltWMlVRt36HMi/6p+DVv6ZjCbjuLGPh4DOjafjMFMI"
    "hi4zbpDqDNR9dxcUIHroznoz5YKtH1rLJXYmUyloUs05bH0X6nsfvPU4nINiSIHZdVkzL+p1/PfXy+oftfDXYNwfxONhYx9x"
    "QCfa0YmI6w6OlwV4J159h0GsqJzThXWUtC2tkNrkK5rYftS7y6VMbR+Cn6V1Y0IXqAze2ZbnOtHf+B4vAvzXHv94w388qyfT"
    "pl7b/yFt/PcH+XWwIg=="
)


def _devkit(root, meta_mat=META_MAT, truth=b"2\n1\n3\n3\n", members=(DEVKIT_META, DEVKIT_VAL)):
    """An ILSVRC2012_devkit_t12.tar.gz in the devkit's layout."""
    files = {DEVKIT_META: meta_mat, DEVKIT_VAL: truth,
             "ILSVRC2012_devkit_t12/COPYING": b"licence"}
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / DEVKIT_FILE, "w:gz") as tar:
        for name, data in files.items():
            if name in members or not name.startswith("ILSVRC2012_devkit_t12/data"):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root / DEVKIT_FILE


def test_read_mat_reads_the_devkit_struct_array_compressed_or_not():
    synsets = read_mat(META_MAT)["synsets"]
    assert [s["WNID"] for s in synsets] == [*NAMES, "n02512053"]
    assert synsets[2]["words"] == ", ".join(NAMES["n01484850"])
    assert [s["ILSVRC2012_ID"] for s in synsets] == [1, 2, 3, 4]
    assert [s["num_children"] for s in synsets] == [0, 0, 0, 3]
    assert synsets[0]["children"] == [] and synsets[3]["children"] == [1, 2, 3]
    # the same file uncompressed: the header, then the miCOMPRESSED element's zlib payload
    # (itself a complete miMATRIX element, tag included)
    length = int.from_bytes(META_MAT[132:136], "little")
    plain = META_MAT[:128] + zlib.decompress(META_MAT[136:136 + length])
    assert read_mat(plain) == read_mat(META_MAT)
    for bad in (b"short", b"x" * 200, META_MAT[:300]):
        with pytest.raises(ValueError):
            read_mat(bad)


def _class_tree(root, split_wnids=WNIDS):
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for w in split_wnids:
            _save(root / split / w / f"{w}_1.JPEG", _noise(rng, 40, 50))
    return root


def test_meta_bin_gives_the_class_names(tmp_path):
    root = _class_tree(tmp_path / "imagenet")
    torch.save((NAMES, VAL_WNIDS), root / META_FILE)  # what torchvision's ImageNet writes
    for split in ("train", "val"):
        ds = ImageFolderData(root, split, resize=32)
        assert ds.classes == WNIDS  # labels stay in sorted-wnid order
        assert ds.class_names == ["tench", "goldfish", "great white shark"]
        assert ds.meta.val_wnids == VAL_WNIDS and ds.meta.source == root / META_FILE
    # a wnid the meta file does not know keeps its wnid as its name
    torch.save(({k: v for k, v in NAMES.items() if k != WNIDS[1]}, VAL_WNIDS), root / META_FILE)
    assert ImageFolderData(root, "train", resize=32).class_names == ["tench", WNIDS[1],
                                                                     "great white shark"]


def test_devkit_tarball_alone_gives_the_same_names(tmp_path):
    root = _class_tree(tmp_path / "imagenet")
    _devkit(root)
    meta = read_meta(root)
    assert meta.wnid_to_classes == NAMES and meta.val_wnids == VAL_WNIDS
    assert meta.source == root / DEVKIT_FILE and not (root / META_FILE).exists()  # nothing written
    assert ImageFolderData(root, "val", resize=32).class_names == ["tench", "goldfish",
                                                                   "great white shark"]
    torch.save(({"n01440764": ("from meta.bin",)}, []), root / META_FILE)  # meta.bin wins
    assert ImageFolderData(root, "train", resize=32).class_names[0] == "from meta.bin"


def test_plain_image_folder_has_wnids_for_names(tree):
    ds = ImageFolderData(tree, "train", resize=32)
    assert ds.meta is None and read_meta(tree) is None and ds.class_names == WNIDS


def test_bad_meta_files_are_one_line_errors(tmp_path):
    root = _class_tree(tmp_path / "bin")
    (root / META_FILE).write_bytes(b"not a torch file")
    with pytest.raises(DataLayoutError, match="not torchvision's ImageNet meta file") as e:
        ImageFolderData(root, "train", resize=32)
    assert "\n" not in str(e.value) and "parse_devkit_archive" in str(e.value)

    for name, kwargs, words in [
        ("no_truth", {"members": (DEVKIT_META,)}, "ILSVRC2012_validation_ground_truth.txt"),
        ("bad_mat", {"meta_mat": b"MATLAB 7.3 MAT-file" + bytes(200)}, "level-5 MAT-file"),
        ("bad_truth", {"truth": b"2\n7\n"}, "KeyError: 7"),
    ]:
        root = _class_tree(tmp_path / name)
        _devkit(root, **kwargs)
        with pytest.raises(DataLayoutError) as e:
            ImageFolderData(root, "train", resize=32)
        assert "\n" not in str(e.value) and "cannot read the ImageNet devkit" in str(e.value)
        assert words in str(e.value)
