"""zfnet prepare and the packed format: pixels, labels, failures, mean, gather, checksums, resume,
and a training step on data=packed."""
from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet_cli.config import compose, make_run_dir
from zfnet_cli.data.images import load_image
from zfnet_cli.data.packed import PackedData, PackError, prepare, read_manifest, verify_pack
from zfnet_cli.data.sources import load_split, mean_image
from zfnet_cli.experiments import prepare as experiment_prepare
from zfnet_cli.experiments import train

WNIDS = ["n01440764", "n01443537", "n01484850"]
SIZE = 72  # the tiny model needs a 64 crop; small keeps the test fast
SHARD = 3  # source files per shard: several shards per split
# in the middle and at the start of a shard: the images after them move up
BAD = {"train/n01443537/n01443537_1_truncated.JPEG", "train/n01484850/n01484850_1_garbage.JPEG"}


def _jpeg_bytes(array, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _tree(root: Path) -> Path:
    """3 wnids (created unsorted), 5 train images each of varied sizes and modes (greyscale,
    RGBA PNG, CMYK), a truncated JPEG and a garbage file among them; 2 val images per wnid."""
    rng = np.random.default_rng(0)

    def noise(h, w, c=3):
        return rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)

    for k, wnid in enumerate(reversed(WNIDS)):
        d = root / "train" / wnid
        d.mkdir(parents=True)
        for i in range(4):
            h, w = int(rng.integers(60, 130)), int(rng.integers(60, 130))
            (d / f"{wnid}_{i}.JPEG").write_bytes(_jpeg_bytes(noise(h, w)))
        v = root / "val" / wnid
        v.mkdir(parents=True)
        for i in range(2):
            (v / f"ILSVRC2012_val_{k}{i}.JPEG").write_bytes(_jpeg_bytes(noise(80, 100)))
    a, b, c = (root / "train" / w for w in WNIDS)
    (a / "n01440764_1.JPEG").write_bytes(_jpeg_bytes(noise(90, 70, c=1)))           # greyscale
    Image.fromarray(noise(100, 80, c=4), "RGBA").save(a / "n01440764_4.png")
    Image.fromarray(noise(75, 95)).convert("CMYK").save(b / "n01443537_3.JPEG")
    whole = _jpeg_bytes(noise(120, 90))
    (b / "n01443537_1_truncated.JPEG").write_bytes(whole[:len(whole) // 2])
    (c / "n01484850_1_garbage.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 20)
    return root


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The tree packed by `zfnet prepare`'s run(): (source root, pack folder, metrics)."""
    tmp = tmp_path_factory.mktemp("packed")
    root = _tree(tmp / "imagenet")
    cfg = experiment_prepare.PrepareConfig(root=str(root), out=str(tmp / "pack"), image_size=SIZE,
                                           shard_size=SHARD, workers=2, chunk_size=2, progress=False,
                                           max_broken=0.2, output_root=str(tmp / "outputs"))
    run_dir = tmp / "run"
    run_dir.mkdir()
    metrics = experiment_prepare.run(cfg, run_dir)
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    return root, tmp / "pack", metrics


def _copy(pack_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "pack"
    shutil.copytree(pack_dir, dst)
    return dst


def _sources(root: Path, split: str) -> list[tuple[Path, int]]:
    files = sorted((w, p.name) for w in WNIDS for p in (root / split / w).iterdir())
    return [(root / split / w / name, WNIDS.index(w)) for w, name in files]


def test_pixels_labels_counts_and_failures(pack):
    root, out, metrics = pack
    for split in ("train", "val"):
        data = PackedData(out, split)
        good = [(p, y) for p, y in _sources(root, split) if str(p.relative_to(root)) not in BAD]
        assert len(data) == len(good) and data.classes == WNIDS == data.class_names
        assert data.labels.dtype == torch.int64 and data.labels.tolist() == [y for _, y in good]
        for i, (path, _) in enumerate(good):  # the same pixels as decoding the file now
            assert torch.equal(data.images[i], load_image(path, SIZE)), path
        image, label = data[0]
        assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8 and label == good[0][1]
    grey = PackedData(out, "train").images[1]  # n01440764_1.JPEG: greyscale -> equal channels
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])

    train = metrics["splits"]["train"]
    assert train == {"files": 15, "images": 13, "failures": 2, "shards": 5, "shards_written": 5,
                     "shards_skipped": 0}
    assert metrics["splits"]["val"]["images"] == 6 and metrics["splits"]["val"]["failures"] == 0
    assert {f["path"] for f in metrics["failures"]} == BAD
    assert all("\n" not in f["reason"] and f["reason"] for f in metrics["failures"])
    assert {f["label"] for f in metrics["failures"]} == {"n01443537", "n01484850"}
    manifest = read_manifest(out)
    assert {f["path"] for f in manifest["splits"]["train"]["failures"]} == BAD
    assert [s["count"] for s in manifest["splits"]["train"]["shards"]] == [3, 3, 2, 3, 2]
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_gather_across_shards(pack):
    _, out, _ = pack
    data = PackedData(out, "train")
    each = torch.stack([data.images[i] for i in range(len(data))])
    idx = torch.tensor([12, 0, 7, 3, 3, 10, -1])  # every shard, repeats, a negative index
    batch = data.images[idx]
    assert batch.shape == (7, 3, SIZE, SIZE) and batch.dtype == torch.uint8
    assert torch.equal(batch, each[idx])
    assert torch.equal(data.images[[2, 5]], each[[2, 5]])
    assert torch.equal(data.images[1:3], each[1:3])  # within shard 0: a view
    assert torch.equal(data.images[2:9], each[2:9])  # across shards: gathered
    assert data.images.shape == (13, 3, SIZE, SIZE) and len(data.images) == 13
    with pytest.raises(IndexError, match="out of range"):
        data.images[torch.tensor([0, 13])]
    part = PackedData(out, "train", shards=[4, 1])  # a machine's own shards, in its order
    assert len(part) == 5 and torch.equal(part.images[torch.arange(5)], each[[11, 12, 3, 4, 5]])
    assert part.labels.tolist() == data.labels[[11, 12, 3, 4, 5]].tolist()
    blob = pickle.dumps(part)  # a spawned DataLoader worker reopens the maps
    assert len(blob) < 2000 and torch.equal(pickle.loads(blob).images[4], each[5])


def test_mean_image_is_the_mean_of_the_packed_train_images(pack):
    _, out, _ = pack
    data = PackedData(out, "train")
    expected = data.images[torch.arange(len(data))].double().mean(dim=0).float()
    assert data.mean_image.shape == (3, SIZE, SIZE) and data.mean_image.dtype == torch.float32
    assert torch.allclose(data.mean_image, expected, atol=1e-4)
    cfg = compose("train", ["data=packed", f"data.root={out}", f"data.image_size={SIZE}",
                               "data.crop=64"]).data
    assert torch.equal(mean_image(cfg, load_split(cfg, "train")), data.mean_image)


def test_a_flipped_byte_fails_verification_and_only_that_shard_is_redone(pack, tmp_path):
    root, src, _ = pack
    out = _copy(src, tmp_path)
    shard = out / "train_00002.u8"
    raw = bytearray(shard.read_bytes())
    raw[1234] ^= 0x01
    shard.write_bytes(raw)
    with pytest.raises(PackError, match="train_00002.u8"):
        verify_pack(out, progress=False)
    assert verify_pack(out, shards=["train_00001.u8", "val_00000.u8"], progress=False) == 2
    kw = dict(image_size=SIZE, shard_size=SHARD, workers=2, progress=False, max_broken=0.2)
    with pytest.raises(PackError, match="verification failed for 1 shard.*train_00002.u8"):
        prepare(root, out, **kw)
    assert not (out / "manifest.json").exists() and not (out / "train_00002.json").exists()
    again = prepare(root, out, **kw)
    assert again["splits"]["train"]["shards_written"] == 1 and again["images_written"] == SHARD
    assert shard.read_bytes() == (src / "train_00002.u8").read_bytes()
    assert verify_pack(out, progress=False) == 5 + 2


def test_resume_redoes_only_what_is_missing(pack, tmp_path):
    root, src, _ = pack
    out = _copy(src, tmp_path)
    # an interruption: shard 1's data lost, shard 4 cut short (a temporary file, no record yet)
    (out / "train_00001.u8").unlink()
    (out / "train_00004.json").unlink()
    (out / "train_00004.u8").rename(out / ".train_00004.u8.tmp")
    (out / "manifest.json").unlink()
    with pytest.raises(PackError, match="has not finished"):
        PackedData(out, "train")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = prepare(root, out, image_size=SIZE, shard_size=SHARD, workers=2, progress=False,
                      max_broken=0.2)
    assert summary["splits"]["train"]["shards_written"] == 2
    assert summary["splits"]["train"]["shards_skipped"] == 3
    assert summary["splits"]["val"]["shards_written"] == 0
    assert summary["images_written"] == 6  # shard 1: 3 files, shard 4: 3 files (one unreadable)
    assert {f["path"] for f in summary["failures"]} == BAD
    for name, mtime in before.items():  # finished shards untouched
        if name.startswith(("train_00000", "train_00002", "train_00003", "val_")):
            assert (out / name).stat().st_mtime_ns == mtime, name
    assert not list(out.glob(".*"))
    for f in ("train_00001.u8", "train_00004.u8", "train_00004.labels.npy", "mean.npy"):
        assert (out / f).read_bytes() == (src / f).read_bytes(), f
    now, then = read_manifest(out), read_manifest(src)
    assert now.pop("written") >= then.pop("written") and now == then


def test_one_line_errors(pack, tmp_path):
    root, out, _ = pack
    with pytest.raises(PackError, match="has no manifest.json"):
        PackedData(tmp_path, "train")
    with pytest.raises(PackError, match="no 'test' split"):
        PackedData(out, "test")
    cfg = compose("train", ["data=packed", f"data.root={out}"]).data  # data.image_size 256
    with pytest.raises(ValueError, match=f"data.image_size=256 but the pack .* holds {SIZE}x{SIZE}") as err:
        load_split(cfg, "train")
    assert "\n" not in str(err.value)
    with pytest.raises(PackError, match="needs data.root"):
        load_split(compose("train", ["data=packed"]).data, "val")
    with pytest.raises(PackError, match=f"already holds a pack of {SIZE} px"):
        prepare(root, out, image_size=SIZE + 8, progress=False)
    cfg = experiment_prepare.PrepareConfig(progress=False)
    with pytest.raises(ValueError, match="needs the ImageNet folder"):
        experiment_prepare.run(cfg, tmp_path)
    with pytest.raises(ValueError, match="expected ImageFolder layout"):
        experiment_prepare.run(experiment_prepare.PrepareConfig(root=str(tmp_path / "nope")), tmp_path)


def test_prepare_yaml_matches_its_schema():
    from omegaconf import OmegaConf

    yaml = OmegaConf.load(Path(__file__).resolve().parent.parent / "configs" / "prepare.yaml")
    assert list(yaml.pop("defaults")) == ["prepare_schema", "_self_"]
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(experiment_prepare.PrepareConfig), yaml))
    assert cfg == experiment_prepare.PrepareConfig()
    assert experiment_prepare.pack_folder(cfg) == Path("outputs/packed/imagenet_256")


def test_one_training_step_on_packed_data(pack, smoke):
    _, out, _ = pack
    overrides = smoke + ["data=packed", f"data.root={out}", f"data.image_size={SIZE}",
                         "data.crop=64", "max_steps=1", "batch_size=8", "plot=false"]
    cfg = compose("train", overrides)
    assert cfg.data.name == "packed" and cfg.model.input_size == 64
    run_dir = make_run_dir("train", cfg, argv=["test"])
    metrics = train.run(cfg, run_dir, overrides=overrides)
    assert metrics["epochs"] == 1 and metrics["num_classes"] == len(WNIDS)
    row = metrics["final"]
    assert row["train_images"] == 8 and np.isfinite(row["train_loss"]) and 0 <= row["val_top1"] <= 100
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["classes"] == WNIDS and torch.equal(state["mean"], PackedData(out, "train").mean_image)


def test_prepare_through_the_cli_resumes_in_place(tmp_path):
    """`zfnet prepare imagenet ROOT`: unreadable files reported on the way, exit 0; a second run
    into the same pack writes nothing new and only verifies."""
    from typer.testing import CliRunner

    from zfnet_cli.cli import app

    src = _tree(tmp_path / "imagenet")
    args = ["prepare", "imagenet", str(src), "--out", str(tmp_path / "pack"), "--workers", "1",
            "--image-size", str(SIZE), "--shard-size", str(SHARD),
            f"output_root={tmp_path / 'out'}", "progress=false", "max_broken=0.2"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "unreadable, skipped: train/n01443537/n01443537_1_truncated.JPEG" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    runs = sorted(p for p in (tmp_path / "out" / "prepare").iterdir() if not p.is_symlink())
    m = json.loads((runs[-1] / "metrics.json").read_text())
    assert m["images_written"] == 0 and m["verified"]
    assert all(s["shards_written"] == 0 for s in m["splits"].values())
    bad = CliRunner().invoke(app, ["prepare", "imagenet", str(tmp_path / "nowhere"),
                                   f"output_root={tmp_path / 'out'}"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "ROOT/{train,val}" in bad.output


def test_max_broken_stops_a_pack_that_would_leave_out_too_much(tmp_path):
    """2 of 15 train files unreadable: above max_broken=0.1 the preparation stops with one line
    and no manifest (no usable pack); raised to 0.2 the same command resumes and finishes, and
    the manifest records what was left out under which threshold."""
    from typer.testing import CliRunner

    from conftest import one_error_line
    from zfnet_cli.cli import app

    src = _tree(tmp_path / "imagenet")
    args = ["prepare", "imagenet", str(src), "--out", str(tmp_path / "pack"), "--workers", "1",
            "--image-size", str(SIZE), "--shard-size", str(SHARD), "chunk_size=1",
            f"output_root={tmp_path / 'out'}", "progress=false"]
    line = one_error_line(CliRunner().invoke(app, args + ["max_broken=0.1"]),
                          "2 of 15 train images are unreadable", "max_broken=0.1 allows (1)")
    assert "n01443537_1_truncated.JPEG" in line
    assert not (tmp_path / "pack" / "manifest.json").exists()
    with pytest.raises(PackError, match="has not finished"):
        PackedData(tmp_path / "pack", "train")
    strict = CliRunner().invoke(app, args + ["max_broken=0"])
    one_error_line(strict, "unreadable train image", "max_broken=0: strict")
    ok = CliRunner().invoke(app, args + ["max_broken=0.2"])
    assert ok.exit_code == 0, ok.output
    train = read_manifest(tmp_path / "pack")["splits"]["train"]
    assert train["left_out"] == 2 and train["max_broken"] == 0.2
    assert {f["path"] for f in train["failures"]} == BAD
    assert len(PackedData(tmp_path / "pack", "train")) == 13
