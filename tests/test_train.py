"""zfnet train end to end on the embedded data: run folder contents, resume equivalence, DDP."""
import json
import os
import subprocess
import sys

import pytest
import torch

from zfnet_cli import checkpoint
from zfnet_cli.config import compose, make_run_dir
from zfnet_cli.engine import accuracy
from zfnet_cli.experiments import train


def _train(overrides):
    cfg = compose("train", overrides)
    run_dir = make_run_dir("train", cfg, argv=["test"])
    return train.run(cfg, run_dir, overrides=overrides), run_dir


def test_accuracy_hand_case():
    out = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    assert accuracy(out, torch.tensor([1, 1, 0]), (1, 2)) == [1, 2]
    assert accuracy(out, torch.tensor([1, 1, 0]), (1, 5)) == [1, 3]  # k capped at 3 classes


def test_smoke_run_writes_a_complete_folder(smoke):
    metrics, run_dir = _train(smoke + ["epochs=2", "keep_epochs=[1]"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_s"):
        assert all(key in r for r in rows)
    assert rows[0]["val_top5"] >= rows[0]["val_top1"]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["epochs"] == 2 and saved == json.loads(json.dumps(metrics))
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["best.pt", "epoch_001.pt", "last.pt"]
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2 and state["overrides"] == smoke + [
        "epochs=2", "keep_epochs=[1]"]
    model = checkpoint.build_model(state)
    assert model.classifier.fc8.out_features == len(state["classes"])
    assert (run_dir / "figures" / "curves.png").stat().st_size > 1000
    assert (run_dir / "config.yaml").exists() and (run_dir / "run.json").exists()


def test_resume_ends_with_the_same_weights(smoke):
    _, full = _train(smoke + ["epochs=3"])
    _, part = _train(smoke + ["epochs=1"])  # "interrupted" after epoch 1
    _, resumed = _train(smoke + ["epochs=3", f"resume={part}"])
    a = checkpoint.load(full / "checkpoints" / "last.pt")
    b = checkpoint.load(resumed / "checkpoints" / "last.pt")
    assert b["epoch"] == 3 and len(b["history"]) == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"][0]["momentum_buffer"].equal(b["optimizer"]["state"][0]["momentum_buffer"])


def test_resume_refuses_another_architecture(smoke):
    _, part = _train(smoke + ["epochs=1"])
    with pytest.raises(checkpoint.CheckpointError, match="model.channels"):
        _train(smoke + ["epochs=2", f"resume={part}", "model.channels=[8,16,16,16,8]"])


def _torchrun(args, cwd, nproc):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "zfnet_cli", "train", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_ddp_two_ranks_equal_one_process(smoke, tmp_path):
    # dropout off: its masks are drawn per rank, so only then can 2 ranks equal 1 process.
    # 10 classes x 7 = 70 images do not divide by the batch of 16: both drop the partial one.
    args = smoke + ["model.dropout=0", "batch_size=16", "data.train_per_class=7"]
    two = _torchrun(args + [f"output_root={tmp_path / 'two'}"], tmp_path, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _torchrun(args + [f"output_root={tmp_path / 'one'}"], tmp_path, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    runs = list((tmp_path / "two" / "train").glob("20*"))
    assert len(runs) == 1  # one shared run folder, not one per rank
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert len(set(metrics["rank_weights_sha1"])) == 1  # both ranks hold identical weights
    state_a = checkpoint.load(runs[0] / "checkpoints" / "last.pt")
    state_b = checkpoint.load(next((tmp_path / "one" / "train").glob("20*")) / "checkpoints" / "last.pt")
    assert state_a["history"][0]["train_images"] == state_b["history"][0]["train_images"] == 64
    a, b = state_a["model"], state_b["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_imagefolder_training_path(smoke, tmp_path):
    """The file-backed path (DataLoader workers, cached mean image) on a tiny JPEG tree in the
    ImageNet layout ROOT/{train,val}/<wnid>/*.JPEG."""
    from PIL import Image

    root = tmp_path / "imagenet"
    rng = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 2)):
        for c, wnid in enumerate(["n01440764", "n01443537", "n01484850"]):
            (root / split / wnid).mkdir(parents=True)
            for i in range(n):
                w, h = 90 + 7 * i, 80 + 5 * c
                pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=rng)
                Image.fromarray(pixels.numpy()).save(root / split / wnid / f"{wnid}_{i}.JPEG")
    over = smoke + ["data=imagenet", f"data.root={root}", "data.image_size=72", "data.crop=64",
                    "data.workers=1", "batch_size=4", "epochs=1"]
    metrics, run_dir = _train(over)
    assert metrics["num_classes"] == 3 and metrics["final"]["train_images"] == 16  # 18, last partial dropped
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert state["classes"] == ["n01440764", "n01443537", "n01484850"]
    assert state["mean"].shape == (3, 72, 72)
    assert list((tmp_path / "cache").glob("mean_imagenet_*.pt"))  # computed once, cached
