"""split=val|test for the commands whose numbers the claims read (issue 15: tune on the
validation split only, read the claims on the test split): occlude (default images and
localise=true), invariance and correspond on the shared smoke model."""
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import one_error_line
from zfnet_cli.cli import app

runner = CliRunner()


def _run(command, root, *args):
    res = runner.invoke(app, [command, "experiment=smoke", f"output_root={root}", *args])
    assert res.exit_code == 0, res.output
    run = (root / command / "latest").resolve()
    return json.loads((run / "metrics.json").read_text()), run


def test_occlude_reads_the_split_it_is_given(smoke_model):
    root, _ = smoke_model
    val, val_run = _run("occlude", root, "localise=true", "localise_images=3")
    test, test_run = _run("occlude", root, "split=test", "localise=true", "localise_images=3")
    assert val["split"] == "val" and test["split"] == "test"
    assert [e["image"] for e in val["images"]] == ["embedded:val/0"]
    assert [e["image"] for e in test["images"]] == ["embedded:test/0"]
    assert val["localisation"]["split"] == "val" and test["localisation"]["split"] == "test"
    # other images, so other maps: the same index of the two splits is not the same picture
    assert val["images"][0]["clean_p_target"] != test["images"][0]["clean_p_target"]
    boxes = [[r["box"] for r in json.loads((run / "localisation.json").read_text())["per_image"]]
             for run in (val_run, test_run)]
    assert len(boxes[0]) == len(boxes[1]) == 3 and boxes[0] != boxes[1]


def test_invariance_reads_the_split_it_is_given(smoke_model):
    root, _ = smoke_model
    val, _ = _run("invariance", root)
    test, _ = _run("invariance", root, "--split", "test")  # the typed option
    assert val["split"] == "val" and test["split"] == "test"
    assert all(e["image"].startswith("embedded:val/") for e in val["images"])
    assert all(e["image"].startswith("embedded:test/") for e in test["images"])
    assert val["transforms"]["translate"]["distance_conv1"] != \
        test["transforms"]["translate"]["distance_conv1"]


def test_correspond_reads_the_split_it_is_given(smoke_model):
    root, _ = smoke_model
    val, _ = _run("correspond", root)
    test, run = _run("correspond", root, "split=test")
    assert val["split"] == "val" and test["split"] == "test"
    assert all(n.startswith("embedded:test/") for n in test["images"])
    assert {n.split("/")[0] for n in val["images"]} == {"embedded:val"}
    assert val["table"]["random"]["conv5"]["draws"] != test["table"]["random"]["conv5"]["draws"]
    assert "(the test split)" in (run / "table1.md").read_text()


def test_a_bad_split_name_is_one_line(smoke_model):
    root, _ = smoke_model
    res = runner.invoke(app, ["occlude", "experiment=smoke", f"output_root={root}", "split=train"])
    one_error_line(res, "split", "val, test", code=2)


@pytest.mark.parametrize("command", ["occlude", "invariance", "correspond"])
def test_imagenet_layout_has_no_test_split(smoke_model, tmp_path, command):
    root, _ = smoke_model
    tree = tmp_path / "imagenet"
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (tree / split / wnid).mkdir(parents=True)
            Image.new("RGB", (72, 72), (90, 0, 0)).save(tree / split / wnid / "0.JPEG")
    before = sorted((root / command).glob("20*")) if (root / command).is_dir() else []
    res = runner.invoke(app, [command, "experiment=smoke", f"output_root={root}", "split=test",
                              "data=imagenet", f"data.root={tree}", "data.image_size=64",
                              "data.crop=64"])
    one_error_line(res, "no test split")
    assert sorted((root / command).glob("20*")) == before  # nothing left behind
