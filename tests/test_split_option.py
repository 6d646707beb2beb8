"""split=val|test for the commands whose numbers the claims read (tune on the
validation split only, read the claims on the test split): occlude (default images and
localise=true), invariance and correspond on the shared smoke model."""
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import one_error_line
from zfnet_cli.cli import app

runner = CliRunner()


@pytest.fixture
def model(smoke_model, tmp_path):
    """Overrides that read the shared smoke model and write into this test's own root: a
    test-split run under the shared root would be what other tests' claims then read."""
    return tmp_path, [f"checkpoint={smoke_model[1]}", f"output_root={tmp_path}"]


def _run(command, model, *args):
    root, over = model
    res = runner.invoke(app, [command, "experiment=smoke", *over, *args])
    assert res.exit_code == 0, res.output
    run = (root / command / "latest").resolve()
    return json.loads((run / "metrics.json").read_text()), run


def test_occlude_reads_the_split_it_is_given(model):
    val, val_run = _run("occlude", model, "localise=true", "localise_images=3")
    test, test_run = _run("occlude", model, "split=test", "localise=true", "localise_images=3")
    assert val["split"] == "val" and test["split"] == "test"
    assert [e["image"] for e in val["images"]] == ["embedded:val/0"]
    assert [e["image"] for e in test["images"]] == ["embedded:test/0"]
    assert val["localisation"]["split"] == "val" and test["localisation"]["split"] == "test"
    # other images, so other maps: the same index of the two splits is not the same picture
    assert val["images"][0]["clean_p_target"] != test["images"][0]["clean_p_target"]
    boxes = [[r["box"] for r in json.loads((run / "localisation.json").read_text())["per_image"]]
             for run in (val_run, test_run)]
    assert len(boxes[0]) == len(boxes[1]) == 3 and boxes[0] != boxes[1]


def test_invariance_reads_the_split_it_is_given(model):
    val, _ = _run("invariance", model)
    test, _ = _run("invariance", model, "--split", "test")  # the typed option
    assert val["split"] == "val" and test["split"] == "test"
    assert all(e["image"].startswith("embedded:val/") for e in val["images"])
    assert all(e["image"].startswith("embedded:test/") for e in test["images"])
    assert val["transforms"]["translate"]["distance_conv1"] != \
        test["transforms"]["translate"]["distance_conv1"]


def test_correspond_reads_the_split_it_is_given(model):
    val, _ = _run("correspond", model)
    test, run = _run("correspond", model, "split=test")
    assert val["split"] == "val" and test["split"] == "test"
    assert all(n.startswith("embedded:test/") for n in test["images"])
    assert {n.split("/")[0] for n in val["images"]} == {"embedded:val"}
    assert val["table"]["random"]["conv5"]["draws"] != test["table"]["random"]["conv5"]["draws"]
    assert "(the test split)" in (run / "table1.md").read_text()


def test_a_bad_split_name_is_one_line(model):
    res = runner.invoke(app, ["occlude", "experiment=smoke", *model[1], "split=train"])
    one_error_line(res, "split", "val, test", code=2)


@pytest.mark.parametrize("command", ["occlude", "invariance", "correspond"])
def test_imagenet_layout_has_no_test_split(model, command):
    root, over = model
    tree = root / "imagenet"
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (tree / split / wnid).mkdir(parents=True)
            Image.new("RGB", (72, 72), (90, 0, 0)).save(tree / split / wnid / "0.JPEG")
    before = sorted((root / command).glob("20*")) if (root / command).is_dir() else []
    res = runner.invoke(app, [command, "experiment=smoke", *over, "split=test",
                              "data=imagenet", f"data.root={tree}", "data.image_size=64",
                              "data.crop=64"])
    one_error_line(res, "no test split")
    assert sorted((root / command).glob("20*")) == before  # nothing left behind
