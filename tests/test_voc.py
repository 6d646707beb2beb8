"""PASCAL VOC 2012 classification in its real layout, and average precision (VOC 2010+)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet_cli.data.imagenet import DataLayoutError
from zfnet_cli.data.voc import (VOC_CLASSES, VOC2012Classification, average_precision,
                                mean_average_precision)


def _object(name, difficult="0", parts=()):
    """One <object> as the VOC XMLs write it; ``difficult=None`` leaves the tag out."""
    tag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    part_xml = "".join(f"<part><name>{p}</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                       f"<xmax>2</xmax><ymax>2</ymax></bndbox></part>" for p in parts)
    return (f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>{tag}"
            f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
            f"{part_xml}</object>")


def _annotation(image_id, objects):
    return (f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
            f"<source><database>The VOC2007 Database</database></source>"
            f"<size><width>16</width><height>12</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{''.join(objects)}</annotation>")


IMAGES = {
    # dog twice (one difficult), a person with layout parts whose <name>s are not classes
    "2008_000008": [_object("dog"), _object("dog", "1"), _object("person", parts=("head", "hand"))],
    # cat only as a difficult instance; a chair without a <difficult> tag
    "2008_000015": [_object("cat", "1"), _object("chair", None)],
    # the first and last classes
    "2009_000001": [_object("aeroplane"), _object("tvmonitor"), _object("aeroplane", "1")],
}
SPLIT_IDS = {"train": ["2008_000008", "2009_000001"], "val": ["2008_000015"]}


def _make_voc(root):
    base = root / "VOCdevkit" / "VOC2012"
    main = base / "ImageSets" / "Main"
    for folder in (base / "JPEGImages", base / "Annotations", main):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (image_id, objects) in enumerate(IMAGES.items()):
        shape = (12, 16) if k == 1 else (12, 16, 3)  # one greyscale JPEG
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            base / "JPEGImages" / f"{image_id}.jpg")
        (base / "Annotations" / f"{image_id}.xml").write_text(_annotation(image_id, objects))
    for split, ids in SPLIT_IDS.items():
        (main / f"{split}.txt").write_text("\n".join(ids) + "\n\n")
        # the per-class files sit beside them and must not be mistaken for the split file
        (main / f"dog_{split}.txt").write_text("".join(f"{i} -1\n" for i in ids))
    (main / "trainval.txt").write_text("\n".join(sorted(IMAGES)) + "\n")
    return base


@pytest.fixture
def voc(tmp_path):
    _make_voc(tmp_path)
    return tmp_path


def _hot(*names):
    target = torch.zeros(20)
    for name in names:
        target[VOC_CLASSES.index(name)] = 1
    return target


def test_classes_multi_hot_and_difficult(voc):
    ds = VOC2012Classification(voc, "trainval", resize=8)
    assert ds.classes[0] == "aeroplane" and ds.classes[14] == "person"
    assert ds.classes[-1] == "tvmonitor" and len(ds.classes) == 20
    assert ds.ids == ["2008_000008", "2008_000015", "2009_000001"]
    assert ds.targets.dtype == torch.float32 and ds.targets.shape == (3, 20)
    assert torch.equal(ds.targets[0], _hot("dog", "person"))
    assert torch.equal(ds.targets[1], _hot("chair"))            # cat: difficult only -> 0
    assert torch.equal(ds.targets[2], _hot("aeroplane", "tvmonitor"))
    assert ds.difficult.dtype == torch.bool
    assert ds.difficult.nonzero().tolist() == [[1, VOC_CLASSES.index("cat")]]


def test_items_splits_and_roots(voc):
    train = VOC2012Classification(voc, "train", resize=8)
    assert train.ids == SPLIT_IDS["train"] and len(train) == 2
    image, target = train[1]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
    assert target.dtype == torch.float32 and torch.equal(target, _hot("aeroplane", "tvmonitor"))
    grey, _ = VOC2012Classification(voc, "val", resize=8)[0]
    assert grey.shape == (3, 8, 8) and torch.equal(grey[0], grey[2])
    for root in (voc / "VOCdevkit", voc / "VOCdevkit" / "VOC2012"):
        other = VOC2012Classification(root, "train", resize=8)
        assert other.ids == train.ids and torch.equal(other.targets, train.targets)
    with pytest.raises(ValueError, match="unknown VOC split 'test'"):
        VOC2012Classification(voc, "test")


def _layout_error(root, split="train"):
    with pytest.raises(DataLayoutError) as e:
        VOC2012Classification(root, split)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("expected PASCAL VOC 2012 layout "
                              "ROOT/VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main}; ")
    return message


def test_layout_errors(tmp_path):
    assert f"no folder {tmp_path / 'nowhere'}" in _layout_error(tmp_path / "nowhere")
    (tmp_path / "VOCtrainval_11-May-2012.tar").write_bytes(b"")
    assert "VOCtrainval_11-May-2012.tar: extract it" in _layout_error(tmp_path)

    base = _make_voc(tmp_path / "a")
    (base / "ImageSets" / "Main" / "val.txt").unlink()
    assert f"no split file {base / 'ImageSets' / 'Main' / 'val.txt'}" in \
        _layout_error(tmp_path / "a", "val")
    (base / "ImageSets" / "Main" / "val.txt").write_text("\n")
    assert "lists no image ids" in _layout_error(tmp_path / "a", "val")
    (base / "ImageSets" / "Main" / "val.txt").write_text("2010_999999\n")
    assert "1 id(s) of val.txt have no" in _layout_error(tmp_path / "a", "val")
    assert "2010_999999.jpg" in _layout_error(tmp_path / "a", "val")
    (base / "JPEGImages" / "2010_999999.jpg").write_bytes(b"")
    assert "2010_999999.xml" in _layout_error(tmp_path / "a", "val")
    (base / "Annotations" / "2010_999999.xml").write_text("<annotation><object>")
    assert "not a readable XML annotation" in _layout_error(tmp_path / "a", "val")
    (base / "Annotations" / "2010_999999.xml").write_text(
        _annotation("2010_999999", [_object("unicorn")]))
    assert "unknown object name 'unicorn'" in _layout_error(tmp_path / "a", "val")

    base = _make_voc(tmp_path / "b")
    for path in (base / "JPEGImages").iterdir():
        path.unlink()
    (base / "JPEGImages").rmdir()
    assert f"no folder {base / 'JPEGImages'}" in _layout_error(tmp_path / "b")


def test_average_precision_hand_cases():
    ranked = [0.9, 0.8, 0.7, 0.6, 0.5]
    # precisions at the positives (ranks 2, 4, 5): 1/2, 2/4, 3/5; interpolated: 0.6, 0.6, 0.6.
    # Without interpolation it would be (0.5 + 0.5 + 0.6) / 3 = 0.533.
    assert average_precision(ranked, [0, 1, 0, 1, 1]) == pytest.approx(0.6)
    # positives at ranks 1, 3, 5: (1 + 2/3 + 3/5) / 3 = 34/45, already monotone
    assert average_precision(ranked, [1, 0, 1, 0, 1]) == pytest.approx(34 / 45)
    assert average_precision(ranked, [True, True, False, False, False]) == 1.0
    # unsorted input, torch tensors: ranked -, +, +; precisions 1/2, 2/3 -> interpolated 2/3, 2/3
    assert average_precision(torch.tensor([0.5, 0.9, 0.7]), torch.tensor([1, 0, 1])) == \
        pytest.approx(2 / 3)
    # ties keep the input order (stable sort, as the devkit)
    assert average_precision([0.5, 0.5], [1, 0]) == 1.0
    assert average_precision([0.5, 0.5], [0, 1]) == 0.5
    # ignored items (difficult) are neither positives nor negatives: without the negative at
    # rank 1 the ranking is +, -, +, +: precisions 1, 2/3, 3/4 -> interpolated 1, 3/4, 3/4
    assert average_precision(ranked, [0, 1, 0, 1, 1], ignore=[1, 0, 0, 0, 0]) == \
        pytest.approx((1 + 3 / 4 + 3 / 4) / 3)
    # the devkit's -1/0/1 labels: only > 0 is positive
    assert average_precision(ranked, [-1, 1, -1, 1, 1]) == pytest.approx(0.6)
    assert np.isnan(average_precision(ranked, [0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"\(5,\) and \(4,\)"):
        average_precision(ranked, [0, 1, 0, 1])


def _brute_force_ap(scores, labels):
    """Area under the interpolated PR curve by its definition: p_interp(r) = best precision at
    any cut-off whose recall is >= r, integrated over r with one sample per recall step (it is
    constant on each step ((i-1)/P, i/P])."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    cut_offs = []
    for k in range(1, len(order) + 1):
        tp = sum(labels[i] for i in order[:k])
        cut_offs.append((tp / sum(labels), tp / k))  # (recall, precision)
    n_pos = sum(labels)
    total = 0.0
    for i in range(1, n_pos + 1):
        r = (i - 0.5) / n_pos
        total += max(p for rec, p in cut_offs if rec >= r) / n_pos
    return total


def test_average_precision_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9, 20):
        for _ in range(20):
            labels = rng.integers(0, 2, n)
            if labels.sum() == 0:
                labels[rng.integers(n)] = 1
            scores = rng.integers(0, 4, n) / 4  # few distinct values: many ties
            assert average_precision(scores, labels) == pytest.approx(
                _brute_force_ap(scores.tolist(), labels.tolist()), abs=1e-12)


def test_average_precision_every_ranking_of_four():
    labels = [1, 0, 1, 0]
    for perm in itertools.permutations(range(4)):
        scores = [float(-p) for p in perm]  # item i is ranked perm[i]
        assert average_precision(scores, labels) == pytest.approx(
            _brute_force_ap(scores, labels))


def test_mean_average_precision(voc):
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.4], [0.1, 0.3, 0.3]])
    labels = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0]])
    per_class, mean = mean_average_precision(scores, labels)
    assert per_class[0] == pytest.approx((1 + 2 / 3) / 2) and np.isnan(per_class[1])
    assert per_class[2] == pytest.approx(1 / 2)
    # the class without positives is left out of the mean
    assert mean == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    ignore = np.zeros_like(labels, bool)
    ignore[1, 0] = True
    assert mean_average_precision(scores, labels, ignore)[0][0] == 1.0
    with pytest.raises(ValueError, match=r"\(3, 3\) and \(3, 2\)"):
        mean_average_precision(scores, labels[:, :2])

    ds = VOC2012Classification(voc, "trainval", resize=8)
    per_class, mean = mean_average_precision(ds.targets, ds.targets, ds.difficult)
    assert len(per_class) == 20 and mean == 1.0
    # aeroplane, chair, dog, person, tvmonitor; cat is only difficult, so it has no positive
    assert [c for c, ap in zip(VOC_CLASSES, per_class) if not np.isnan(ap)] == \
        ["aeroplane", "chair", "dog", "person", "tvmonitor"]
