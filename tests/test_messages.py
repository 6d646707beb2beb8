"""Messages that used to stop short or mislead, and which run `latest` means (issue 12)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli import checkpoint, loading, runs
from zfnet_cli.cli import app
from conftest import one_error_line


def test_a_one_class_tree_is_refused(smoke, tmp_path):
    root = tmp_path / "one"
    for split in ("train", "val"):
        (root / split / "n01440764").mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (80, 80), (i * 40, 0, 0)).save(root / split / "n01440764" / f"{i}.JPEG")
    res = CliRunner().invoke(app, ["train", *smoke, "data=imagenet", f"data.root={root}",
                                   "data.image_size=72", "data.crop=64", "data.workers=0"])
    one_error_line(res, "1 class", "n01440764")


def test_latest_is_the_newest_finished_run(smoke_model, tmp_path):
    root, finished = smoke_model
    out = tmp_path / "out"
    shutil.copytree(root / "train", out / "train", symlinks=True)
    running = out / "train" / "2999-01-01_00-00-00"  # newer, still training: no metrics.json
    (running / "checkpoints").mkdir(parents=True)
    shutil.copy(finished / "checkpoints" / "last.pt", running / "checkpoints" / "last.pt")
    got = runs.resolve("latest", out)
    assert got == out / "train" / finished.name / "checkpoints" / "last.pt"
    # resume=latest continues the newest run with a checkpoint, finished or not
    assert runs.resolve("latest", out, finished=False) == running / "checkpoints" / "last.pt"
    for run in (out / "train").glob("20??-*"):
        if run != running:
            shutil.rmtree(run)
    with pytest.raises(checkpoint.CheckpointError, match="still training or was interrupted"):
        runs.resolve("latest", out)


def test_resume_latest_without_runs_speaks_of_resume(smoke):
    line = one_error_line(CliRunner().invoke(app, ["train", *smoke, "resume=latest"]), "resume=")
    assert "checkpoint=" not in line


def test_architecture_that_does_not_fit_its_weights_names_keys_and_shapes(smoke_model, tmp_path):
    root, run = smoke_model
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    state["model_cfg"]["channels"] = [c * 2 for c in state["model_cfg"]["channels"]]
    del state["model"]["classifier.fc8.bias"]
    bad = checkpoint.save(state, tmp_path / "bad.pt")
    with pytest.raises(checkpoint.CheckpointError) as err:
        loading.load_model(bad)
    msg = str(err.value)
    assert "\n" not in msg and "conv1.weight" in msg and "missing" in msg and "fc8.bias" in msg
    assert "in the file" in msg  # shapes on both sides, not torch's cut-off list


@pytest.mark.parametrize("content,what", [(b"hello, I am notes\n", "text"), (b"", "empty"),
                                           (b"PK\x03\x04 half a zip", "damaged")])
def test_a_file_that_is_not_a_checkpoint_says_what_it_is_not(tmp_path, content, what):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert "not a checkpoint" in msg and what in msg and "\n" not in msg
    assert "weights_only" not in msg  # never advise unsafe loading


def test_a_pickle_with_code_is_refused_without_advising_unsafe_loading(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Path("x")}, path)  # an arbitrary Python object inside
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(path)
    assert "weights_only" not in str(err.value) and "not a checkpoint" in str(err.value)
