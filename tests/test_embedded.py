"""The embedded data set: determinism, splits, class selection, boxes and the Fig 5 transforms."""
import numpy as np
import pytest
import torch

from zfnet_cli.data.embedded import (ALL_CLASSES, BODIES, COMPOSED_CLASSES, COMPOSED_HELD_OUT,
                                     COMPOSED_PARTS, DEFAULT_HELD_OUT, OBJECT_CLASSES,
                                     PART_CLASS, PARTS, TEXTURES, EmbeddedData, load_embedded,
                                     render_scene, scene_seeds)

SIZE = 48  # tiny images: these tests must run in seconds on 2 CPU cores


def _load(split="train", **kw):
    kw.setdefault("image_size", SIZE)
    kw.setdefault("per_class", 2)
    kw.setdefault("progress", False)
    kw.setdefault("workers", 1)
    return load_embedded(split, **kw)


def _assert_same(a: EmbeddedData, b: EmbeddedData):
    assert a.classes == b.classes
    for name in ("images", "labels", "boxes", "seeds"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.parts.keys() == b.parts.keys()
    for name in a.parts:  # NaN rows: compare with equal_nan
        assert torch.allclose(a.parts[name], b.parts[name], rtol=0, atol=0, equal_nan=True), name


def test_class_list():
    assert len(ALL_CLASSES) >= 10 and len(set(ALL_CLASSES)) == len(ALL_CLASSES)
    assert PART_CLASS in ALL_CLASSES and PART_CLASS not in DEFAULT_HELD_OUT
    assert {"left_eye", "right_eye", "nose"} <= set(PARTS)
    assert set(DEFAULT_HELD_OUT) < set(ALL_CLASSES)


def test_composed_classes_share_factors_with_pretraining_but_not_combinations():
    assert len(COMPOSED_CLASSES) == len(BODIES) * len(COMPOSED_PARTS) * len(TEXTURES) == 90
    assert ALL_CLASSES[:len(OBJECT_CLASSES)] == OBJECT_CLASSES  # old classes keep their seeds
    pre = [c.split("-") for c in COMPOSED_CLASSES if c not in COMPOSED_HELD_OUT]
    assert len(COMPOSED_HELD_OUT) == 15 and len(pre) == 75
    for held in COMPOSED_HELD_OUT:
        body, part, texture = held.split("-")
        # each factor appears in pretraining, in other classes
        assert any(b == body for b, _, _ in pre) and any(p == part for _, p, _ in pre)
        assert any(t == texture for _, _, t in pre)
    # every body, part and texture is somewhere in the held-out set too
    held = [c.split("-") for c in COMPOSED_HELD_OUT]
    for k, names in enumerate((BODIES, COMPOSED_PARTS, TEXTURES)):
        assert {h[k] for h in held} == set(names)


def test_rich_class_set():
    pre = _load(per_class=1, class_set="rich", image_size=32)
    held = _load(per_class=1, class_set="rich", use="heldout", image_size=32)
    assert len(pre.classes) == 85 and len(held.classes) == 20
    assert not set(pre.classes) & set(held.classes) and PART_CLASS in pre.classes
    assert set(held.classes) == set(DEFAULT_HELD_OUT) | set(COMPOSED_HELD_OUT)
    # an object class draws the same scene in both sets (its seed keys on ALL_CLASSES' index)
    obj = _load(per_class=1, classes=["car"], image_size=32)
    assert torch.equal(obj.images[0], pre.images[pre.classes.index("car")])
    # the texture is drawn: plain, striped and dotted versions of one body and part differ
    # inside the body (same scene seed, so only the texture can change the pixels there)
    imgs = {t: render_scene(f"block-legs-{t}", 5, 64)[0] for t in TEXTURES}
    assert not np.array_equal(imgs["plain"], imgs["stripes"])
    assert not np.array_equal(imgs["plain"], imgs["dots"])


def test_render_scene_is_deterministic_and_seed_dependent():
    a = render_scene("car", 123, SIZE)
    b = render_scene("car", 123, SIZE)
    c = render_scene("car", 124, SIZE)
    assert a[0].shape == (SIZE, SIZE, 3) and a[0].dtype == np.uint8
    assert a[1].shape == (4,) and a[1].dtype == np.float32 and a[2] == {}
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_same_arguments_same_tensors_with_and_without_cache(tmp_path):
    fresh = _load(classes=["face", "star", "key"])
    again = _load(classes=["face", "star", "key"])
    _assert_same(fresh, again)
    written = _load(classes=["face", "star", "key"], cache_dir=tmp_path)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 3 and not list(tmp_path.glob("*.tmp"))  # one per class, no leftovers
    mtimes = [f.stat().st_mtime_ns for f in files]
    hit = _load(classes=["face", "star", "key"], cache_dir=tmp_path)
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # read, not rewritten
    _assert_same(fresh, written)
    _assert_same(fresh, hit)
    # A cache keyed on other parameters is not reused.
    _load(classes=["face"], cache_dir=tmp_path, seed=1)
    assert len(list(tmp_path.glob("*.npz"))) == 4


def test_damaged_cache_is_regenerated(tmp_path):
    fresh = _load(classes=["ring"], cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip file")
    _assert_same(fresh, _load(classes=["ring"], cache_dir=tmp_path))


def test_worker_count_does_not_change_the_data():
    # 3 classes x 24 images = 72 >= the 64 images from which a Pool is used
    kw = dict(classes=["fish", "boat", "face"], per_class=24, image_size=32)
    _assert_same(_load(workers=1, **kw), _load(workers=2, **kw))


def test_splits_never_share_scene_seeds():
    seeds = {s: set(_load(s, use="all").seeds.tolist()) for s in ("train", "val", "test")}
    assert all(len(v) == 2 * len(OBJECT_CLASSES) for v in seeds.values())  # no repeats inside
    assert not seeds["train"] & seeds["val"]
    assert not seeds["train"] & seeds["test"]
    assert not seeds["val"] & seeds["test"]
    # and the larger per_class starts with the smaller one's scenes
    assert np.array_equal(scene_seeds("val", "tree", 5)[:3], scene_seeds("val", "tree", 3))


def test_seeds_redo_the_images():
    data = _load("val", classes=["house", "face"])
    for i in range(len(data)):
        img, box, parts = render_scene(data.classes[data.labels[i]], int(data.seeds[i]), SIZE)
        assert torch.equal(data.images[i], torch.from_numpy(img).permute(2, 0, 1))
        assert torch.equal(data.boxes[i], torch.from_numpy(box))


def test_hold_out_and_label_mapping():
    pre = _load(per_class=1)
    held = _load(per_class=1, use="heldout")
    every = _load(per_class=1, use="all")
    assert pre.classes == [c for c in OBJECT_CLASSES if c not in DEFAULT_HELD_OUT]
    assert held.classes == [c for c in OBJECT_CLASSES if c in DEFAULT_HELD_OUT]
    assert every.classes == list(OBJECT_CLASSES)
    assert pre.labels.tolist() == list(range(len(pre.classes)))
    assert held.labels.tolist() == list(range(len(DEFAULT_HELD_OUT)))
    # the same scene under two label sets: "cup" is label 0 when held out, 10 in "all"
    cup_all = every.classes.index("cup")
    assert torch.equal(held.images[held.classes.index("cup")], every.images[cup_all])
    custom = _load(per_class=1, held_out=["face", "car"])
    assert custom.classes[:2] == ["house", "tree"] and len(custom) == len(OBJECT_CLASSES) - 2
    explicit = _load(per_class=3, classes=["star", "face"])
    assert explicit.classes == ["star", "face"]
    assert explicit.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(explicit) == 6 and explicit[4][1] == 1 and explicit[4][0].shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("kw", [dict(split="training"), dict(classes=["face", "dog"]),
                                dict(use="everything"), dict(held_out=["cat"]),
                                dict(per_class=0), dict(class_set="everything")])
def test_bad_arguments_raise(kw):
    split = kw.pop("split", "train")
    with pytest.raises(ValueError, match="valid|must"):
        _load(split, **kw)
    if split != "train":
        with pytest.raises(ValueError, match="train, val, test"):
            scene_seeds(split, "face", 1)


def test_bad_class_in_render_scene():
    with pytest.raises(ValueError, match="face"):
        render_scene("dog", 0, SIZE)


def test_boxes_inside_image_and_parts_inside_face():
    data = _load("test", use="all", per_class=3, image_size=64)
    b = data.boxes
    assert ((b >= 0) & (b <= 64)).all()
    assert (b[:, 2] - b[:, 0] > 8).all() and (b[:, 3] - b[:, 1] > 8).all()  # a visible object
    is_face = data.labels == data.classes.index(PART_CLASS)
    for name in PARTS:
        p = data.parts[name]
        assert p.shape == (len(data), 4)
        assert torch.isnan(p[~is_face]).all() and not torch.isnan(p[is_face]).any()
        inside = ((p[is_face, :2] >= b[is_face, :2] - 1e-4).all()
                  and (p[is_face, 2:] <= b[is_face, 2:] + 1e-4).all())
        assert inside, (name, p[is_face], b[is_face])
    # as seen from the face: its right eye is on the image's left (upright faces, +-12 deg)
    assert (data.parts["right_eye"][is_face, 0] < data.parts["left_eye"][is_face, 0]).all()
    assert (data.parts["nose"][is_face, 1] > data.parts["right_eye"][is_face, 1]).all()


def _unclipped_face(size):
    """A face scene whose box stays clear of the border under the transforms below."""
    for seed in range(200):
        _, box, _ = render_scene("face", seed, size)
        if box[0] > 20 and box[1] > 20 and box[2] < size - 20 and box[3] < size - 20:
            return seed
    raise AssertionError("no face scene away from the border")


def test_fig5_transforms_move_only_the_object():
    size = 160  # objects fill 55-80% of the side: room for them to move at this size
    seed = _unclipped_face(size)
    img0, box0, parts0 = render_scene("face", seed, size)

    img, box, parts = render_scene("face", seed, size, shift_y=10.0)
    assert np.allclose(box, box0 + [0, 10, 0, 10], atol=1e-3)
    assert np.allclose(parts["nose"], parts0["nose"] + [0, 10, 0, 10], atol=1e-3)
    # pixels far from both boxes (background, distractors) are untouched, up to none
    far = np.ones((size, size), bool)
    for b in (box0, box):
        far[max(int(b[1]) - 2, 0):int(b[3]) + 3, max(int(b[0]) - 2, 0):int(b[2]) + 3] = False
    assert np.array_equal(img[far], img0[far])
    assert not np.array_equal(img, img0)

    _, box, _ = render_scene("face", seed, size, scale=1.3)
    centre0, centre = (box0[:2] + box0[2:]) / 2, (box[:2] + box[2:]) / 2
    assert np.allclose(centre, centre0, atol=1.5)  # about the object's centre, up to its tilt
    assert np.allclose(box[2:] - box[:2], 1.3 * (box0[2:] - box0[:2]), rtol=0.02)

    # the upright face is taller than wide; a quarter turn swaps that
    _, box, parts = render_scene("face", seed, size, angle=90.0)
    w0, h0 = box0[2] - box0[0], box0[3] - box0[1]
    w, h = box[2] - box[0], box[3] - box[1]
    assert h0 > w0 and w > h and abs(w - h0) < 0.15 * h0
    # counter-clockwise on screen: the eyes (above the centre) end up on the left
    eye_x = (parts["right_eye"][0] + parts["right_eye"][2]) / 2
    assert eye_x < (box[0] + box[2]) / 2


def test_embedded_data_is_a_torch_style_dataset():
    data = _load(per_class=1, classes=["lamp", "bird"])
    x, y = data[1]
    assert x.dtype == torch.uint8 and x.shape == (3, SIZE, SIZE) and y == 1
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert data.boxes.dtype == torch.float32 and data.seeds.dtype == torch.int64
    batches = list(torch.utils.data.DataLoader(data, batch_size=2))
    assert batches[0][0].shape == (2, 3, SIZE, SIZE)
