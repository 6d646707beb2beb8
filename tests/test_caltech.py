"""Caltech-101/256 in torchvision's layouts with their known strays, and the few-shot splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet_cli.data.caltech import Caltech101, Caltech256, few_shot_split
from zfnet_cli.data.imagenet import DataLayoutError


def _jpeg(path, rng, h=12, w=16, grey=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w) if grey else (h, w, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


# Caltech-101 folders (created in this unsorted order) -> number of images
C101 = {"accordion": 3, "Faces_easy": 2, "BACKGROUND_Google": 2, "yin_yang": 2, "Faces": 3,
        "Leopards": 1}
C101_CLASSES = ["Faces", "Faces_easy", "Leopards", "accordion", "yin_yang"]  # case-sensitive sort


@pytest.fixture
def c101(tmp_path):
    rng = np.random.default_rng(0)
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    for name, n in C101.items():
        for j in range(1, n + 1):
            _jpeg(cats / name / f"image_{j:04d}.jpg", rng, grey=(name == "accordion" and j == 1))
    (cats / ".DS_Store").write_bytes(b"junk")
    (cats / "Faces" / ".DS_Store").write_bytes(b"junk")
    (cats / "Leopards" / "notes.txt").write_text("not an image")
    return tmp_path


def test_caltech101_classes_labels_and_roots(c101):
    ds = Caltech101(c101, resize=8)
    assert ds.classes == C101_CLASSES  # BACKGROUND_Google dropped, Faces and Faces_easy kept
    names = [(p.rsplit("/", 2)[-2], p.rsplit("/", 1)[-1], y) for p, y in ds.samples]
    assert names[:4] == [("Faces", "image_0001.jpg", 0), ("Faces", "image_0002.jpg", 0),
                         ("Faces", "image_0003.jpg", 0), ("Faces_easy", "image_0001.jpg", 1)]
    assert ds.targets == [0, 0, 0, 1, 1, 2, 3, 3, 3, 4, 4] and len(ds) == 11
    for root in (c101 / "caltech101", c101 / "caltech101" / "101_ObjectCategories"):
        other = Caltech101(root, resize=8)
        assert other.classes == ds.classes and other.samples == ds.samples


def test_caltech101_items_uint8_rgb_and_greyscale(c101):
    ds = Caltech101(c101, resize=8)
    for i in (0, 6, 10):
        image, label = ds[i]
        assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
        assert isinstance(label, int) and label == ds.targets[i]
    grey, label = ds[6]  # accordion/image_0001.jpg was saved as mode "L"
    assert ds.classes[label] == "accordion"
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


# Caltech-256 folders -> number of real images
C256 = {"002.american-flag": 2, "001.ak47": 3, "056.dog": 2, "198.spider": 2, "257.clutter": 2}


@pytest.fixture
def c256(tmp_path):
    rng = np.random.default_rng(1)
    cats = tmp_path / "caltech256" / "256_ObjectCategories"
    for folder, n in C256.items():
        prefix = folder.split(".")[0]
        for j in range(1, n + 1):
            _jpeg(cats / folder / f"{prefix}_{j:04d}.jpg", rng)
    (cats / "198.spider" / "RENAME2").write_bytes(b"a stray file of the real archive")
    _jpeg(cats / "056.dog" / "greg" / "x.jpg", rng)       # the stray sub-folder: not recursed
    _jpeg(cats / "001.ak47" / "001_0099.JPG", rng)         # endings are case-insensitive
    (cats / "001.ak47" / ".DS_Store").write_bytes(b"junk")
    (cats / ".DS_Store").write_bytes(b"junk")
    (cats / "unpacked_notes").mkdir()                       # not "<number>.<name>": not a class
    return tmp_path


def test_caltech256_classes_strays_and_clutter(c256):
    ds = Caltech256(c256, resize=8)
    assert ds.classes == ["ak47", "american-flag", "dog", "spider"]
    assert ds.folders == ["001.ak47", "002.american-flag", "056.dog", "198.spider"]
    assert ds.targets == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    files = [p.rsplit("/", 1)[-1] for p, _ in ds.samples]
    assert "001_0099.JPG" in files and "x.jpg" not in files and "RENAME2" not in files

    kept = Caltech256(c256 / "caltech256", resize=8, clutter="keep")
    assert kept.classes[-1] == "clutter" and kept.folders[-1] == "257.clutter"
    assert len(kept.classes) == 5 and kept.targets[-2:] == [4, 4] and len(kept) == len(ds) + 2
    inner = Caltech256(c256 / "caltech256" / "256_ObjectCategories", resize=8)
    assert inner.samples == ds.samples

    image, label = ds[9]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label == 3

    with pytest.raises(ValueError, match="clutter must be 'drop' or 'keep'"):
        Caltech256(c256, clutter="yes")


def _one_line(excinfo, layout):
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"expected {layout} layout ROOT/")
    return message


def test_caltech_layout_errors(tmp_path, c101, c256):
    with pytest.raises(DataLayoutError) as e:
        Caltech101(tmp_path / "nowhere")
    assert f"no folder {tmp_path / 'nowhere'}" in _one_line(e, "Caltech-101")

    bare = tmp_path / "bare"
    (bare / "caltech101").mkdir(parents=True)
    (bare / "caltech101" / "101_ObjectCategories.tar.gz").write_bytes(b"")
    with pytest.raises(DataLayoutError) as e:
        Caltech101(bare)
    message = _one_line(e, "Caltech-101")
    assert "no folder" in message and "101_ObjectCategories.tar.gz: extract it" in message

    only_background = tmp_path / "bg" / "101_ObjectCategories"
    _jpeg(only_background / "BACKGROUND_Google" / "image_0001.jpg", np.random.default_rng(2))
    with pytest.raises(DataLayoutError) as e:
        Caltech101(only_background)
    assert "no class folders in" in _one_line(e, "Caltech-101")

    cats = c101 / "caltech101" / "101_ObjectCategories"
    (cats / "zebra").mkdir()
    (cats / "zebra" / ".DS_Store").write_bytes(b"junk")
    with pytest.raises(DataLayoutError) as e:
        Caltech101(c101)
    assert "1 class folder(s)" in _one_line(e, "Caltech-101") and "zebra" in str(e.value)

    with pytest.raises(DataLayoutError) as e:
        Caltech256(tmp_path / "bare")
    assert "256_ObjectCategories" in _one_line(e, "Caltech-256")

    empty = tmp_path / "empty" / "256_ObjectCategories"
    for folder in ("001.ak47", "002.american-flag"):
        (empty / folder).mkdir(parents=True)
    with pytest.raises(DataLayoutError) as e:
        Caltech256(empty)
    assert "no class folder" in _one_line(e, "Caltech-256") and "holds images" in str(e.value)

    unnumbered = tmp_path / "unnumbered" / "256_ObjectCategories"
    _jpeg(unnumbered / "ak47" / "001_0001.jpg", np.random.default_rng(2))
    with pytest.raises(DataLayoutError) as e:
        Caltech256(unnumbered)
    assert "no numbered class folders" in _one_line(e, "Caltech-256")

    c256_cats = c256 / "caltech256" / "256_ObjectCategories"
    for path in (c256_cats / "257.clutter").iterdir():
        path.unlink()
    (c256_cats / "257.clutter").rmdir()
    assert len(Caltech256(c256).classes) == 4
    with pytest.raises(DataLayoutError) as e:
        Caltech256(c256, clutter="keep")
    assert "no 257.clutter folder" in _one_line(e, "Caltech-256")


SIZES = [10, 7, 5, 12]  # images per class
TARGETS = [label for label, n in enumerate(SIZES) for _ in range(n)]
# interleave the classes so the indices of a class are not one contiguous run
ORDER = np.random.default_rng(3).permutation(len(TARGETS))
TARGETS = [TARGETS[i] for i in ORDER]


def _per_class(indices, targets=TARGETS):
    counts = np.bincount([targets[i] for i in indices], minlength=len(SIZES))
    return counts.tolist()


def test_few_shot_counts_caps_and_disjoint():
    train, test, skipped = few_shot_split(TARGETS, 3, test_per_class=4, seed=0)
    assert skipped == [] and train == sorted(train) and test == sorted(test)
    assert _per_class(train) == [3, 3, 3, 3]
    assert _per_class(test) == [4, 4, 2, 4]  # class 2 has only 5 - 3 = 2 left
    assert not set(train) & set(test)

    train, test, _ = few_shot_split(TARGETS, 3, test_per_class=None, seed=0)
    assert _per_class(test) == [7, 4, 2, 9] and len(train) + len(test) == len(TARGETS)

    train, test, _ = few_shot_split(TARGETS, 0, test_per_class=2, seed=0)
    assert train == [] and _per_class(test) == [2, 2, 2, 2]


def test_few_shot_deterministic_nested_and_independent_per_class():
    first = few_shot_split(TARGETS, 4, test_per_class=3, seed=7)
    assert few_shot_split(TARGETS, 4, test_per_class=3, seed=7) == first
    assert few_shot_split(TARGETS, 4, test_per_class=3, seed=8)[0] != first[0]
    # the training images at 2 shots are among those at 4 (Fig 9's curve over shots)
    assert set(few_shot_split(TARGETS, 2, test_per_class=3, seed=7)[0]) <= set(first[0])
    # skipping a short class leaves the other classes' draws unchanged
    train, test, skipped = few_shot_split(TARGETS, 5, test_per_class=3, seed=7, on_short="skip")
    full, _, _ = few_shot_split(TARGETS, 5, test_per_class=3, seed=7, min_test=0)
    assert skipped == [2] and _per_class(train) == [5, 5, 0, 5]
    assert train == [i for i in full if TARGETS[i] != 2]


def test_few_shot_short_class_error_and_skip():
    with pytest.raises(ValueError) as e:
        few_shot_split(TARGETS, 5, test_per_class=3, seed=0, classes=list("abcd"))
    message = str(e.value)
    assert "\n" not in message
    assert "class 2 ('c') has 5 images, fewer than shots + min_test = 5 + 1 = 6" in message

    train, test, skipped = few_shot_split(TARGETS, 7, test_per_class=3, seed=0, on_short="skip")
    assert skipped == [1, 2] and _per_class(train) == [7, 0, 0, 7]
    assert _per_class(test) == [3, 0, 0, 3]

    # a class with no image at all is only known from num_classes
    with pytest.raises(ValueError, match="class 4 has 0 images"):
        few_shot_split(TARGETS, 1, test_per_class=1, seed=0, num_classes=5)
    assert few_shot_split(TARGETS, 1, test_per_class=1, seed=0, num_classes=5,
                          on_short="skip")[2] == [4]

    with pytest.raises(ValueError, match="on_short"):
        few_shot_split(TARGETS, 1, test_per_class=1, seed=0, on_short="drop")
    with pytest.raises(ValueError, match="below min_test"):
        few_shot_split(TARGETS, 1, test_per_class=0, seed=0)


def test_few_shot_on_a_dataset(c256):
    ds = Caltech256(c256, resize=8)
    train, test, skipped = few_shot_split(ds.targets, 1, test_per_class=1, seed=0)
    assert skipped == [] and len(train) == 4 and len(test) == 4
    assert sorted(ds.targets[i] for i in train) == [0, 1, 2, 3]
