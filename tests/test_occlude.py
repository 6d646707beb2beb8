"""zfnet occlude end to end on the shared smoke model: figures, numbers, and bad input."""
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli.cli import app

runner = CliRunner()


def _occ(root, *args):
    res = runner.invoke(app, ["occlude", "experiment=smoke", f"output_root={root}", *args])
    return res, (root / "occlude" / "latest").resolve()


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (70, 70, 4), dtype=np.uint8), "RGBA").save(tmp_path / "b.png")
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path


def test_default_images_give_fig7_and_numbers(smoke_model):
    root, _ = smoke_model
    res, run = _occ(root)
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    (entry,) = m["images"]
    assert entry["image"].startswith("embedded:val/") and entry["layer"] == "conv5"
    arrays = np.load(run / entry["arrays"])
    gh, gw = entry["grid"]
    assert arrays["p_target"].shape == (gh, gw) == arrays["fmap_total"].shape
    assert arrays["positions"].shape == (gh * gw, 2)
    assert entry["min_p_target"] == pytest.approx(float(arrays["p_target"].min()))
    assert (run / entry["figure"]).stat().st_size > 5000


def test_files_label_by_name_and_a_bad_file_listed(smoke_model, photos):
    root, _ = smoke_model
    res, run = _occ(root, str(photos / "a.jpg"), str(photos / "notes.txt"), str(photos / "b.png"),
                    "--label", "car")
    assert res.exit_code == 1  # one file failed, the others were still processed
    m = json.loads((run / "metrics.json").read_text())
    assert [e["image"] for e in m["images"]] == [str(photos / "a.jpg"), str(photos / "b.png")]
    assert all(e["target_name"] == "car" for e in m["images"])
    errors = [line for line in res.output.splitlines() if "error" in line]
    assert errors == [f"zfnet occlude: error: {photos / 'notes.txt'}: not an image file PIL can read"]


@pytest.mark.parametrize("args, words", [
    (["MISSING.jpg"], "MISSING.jpg: no such file"),
    (["--label", "99", "IMG"], "label 99 out of range: the model has 10 classes (0..9)"),
    (["--label", "caar", "IMG"], "unknown class 'caar'; did you mean car"),
    (["--size", "999", "IMG"], "occluder size 999 is larger than the 64x64 model input"),
    (["IMG", "max_pixels=100"], "above the limit of 100 (max_pixels)"),
    (["IMG", "method=fast"], "method=fast is out of bounds: expected one of auto, incremental, full"),
    (["IMG", "memory_budget_mb=0"], "memory_budget_mb=0 is out of bounds: must be >= 1"),
])
def test_bad_input_is_one_line(smoke_model, photos, args, words):
    root, _ = smoke_model
    args = [str(photos / "a.jpg") if a == "IMG" else str(photos / a) if a.endswith(".jpg") else a
            for a in args]
    before = sorted((root / "occlude").glob("20*")) if (root / "occlude").exists() else []
    res, _ = _occ(root, *args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zfnet occlude: error: ") and words in lines[0]
    after = sorted((root / "occlude").glob("20*")) if (root / "occlude").exists() else []
    assert after == before


# --- folders of photos, labels, the npz ------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    """A class-per-folder tree: car/ (a class of the smoke model), pets/ (not one)."""
    rng = np.random.default_rng(1)
    for rel, (h, w) in {"car/x.jpg": (80, 100), "car/y.png": (64, 64),
                        "pets/z.jpg": (120, 90)}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / rel)
    return tmp_path


def test_a_folder_tree_labels_from_folder_names_and_the_npz(smoke_model, tree):
    root, _ = smoke_model
    res, run = _occ(root, str(tree))
    assert res.exit_code == 0, res.output
    m = json.loads((run / "occlusion.json").read_text())
    assert [(e["image"], e["folder_class"], e["label_from"]) for e in m["images"]] == [
        (str(tree / "car/x.jpg"), "car", "folder"), (str(tree / "car/y.png"), "car", "folder"),
        (str(tree / "pets/z.jpg"), "pets", "prediction")]
    assert [e["target_name"] for e in m["images"][:2]] == ["car", "car"]
    assert m["images"][2]["target_name"] == m["images"][2]["clean_label_name"]  # predicted
    entry = m["images"][0]  # 100x80 photo -> 80x64, centre 64 from column 8: x 8..72 x 1.25
    assert entry["photo_size"] == [100, 80]
    assert entry["region"] == pytest.approx([10, 0, 90, 80])
    a = np.load(run / entry["arrays"])
    gh, gw = entry["grid"]
    h, w = a["image_size"]
    assert (h, w) == (64, 64) and a["positions"].shape == (gh * gw, 2)
    assert a["boxes"].shape == (gh, gw, 4)
    assert (a["boxes"][..., :2].reshape(-1, 2) == a["positions"]).all()
    assert (a["boxes"][..., 2:] - a["boxes"][..., :2] == int(a["size"])).all()
    for key in ("fmap_total", "p_target", "log_p_target", "top_label"):
        assert a[key].shape == (gh, gw) and a[f"{key}_input"].shape == (64, 64), key
    # a pixel covered by the top-left occluder only gets its value; the top-left corner is one
    assert a["p_target_input"][0, 0] == pytest.approx(a["p_target"][0, 0])
    assert a["top_label_input"][0, 0] == a["top_label"][0, 0]
    assert str(a["layer"]) == entry["layer"] == "conv5" and int(a["target"]) == entry["target"]
    assert (run / entry["figure"]).stat().st_size > 5000


def test_labels_one_for_all_or_one_per_image(smoke_model, tree):
    root, _ = smoke_model
    res, run = _occ(root, str(tree / "car"), "--label", "face")
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    assert [e["target_name"] for e in m["images"]] == ["face", "face"]
    res, run = _occ(root, str(tree / "car/x.jpg"), str(tree / "pets"), "--label", "face",
                    "--label", "2")
    assert res.exit_code == 0, res.output
    m = json.loads((run / "metrics.json").read_text())
    assert [e["target"] for e in m["images"]][1] == 2 and \
        [e["label_from"] for e in m["images"]] == ["label", "label"]


@pytest.mark.parametrize("make, args, words", [
    (lambda t: (t / "empty").mkdir(), ["empty"],
     "empty: no images in this folder or its sub-folders"),
    (lambda t: None, ["tree", "--label", "car", "--label", "face"],
     "2 labels for 3 images: give one --label for all images or one per image, in order"),
    (lambda t: None, ["tree/car/x.jpg", "--label", "car", "--label", "face"],
     "2 labels for 1 image: give one --label"),
    (lambda t: None, ["tree/car/x.jpg", "--layer", "conv9"], "unknown layer 'conv9'; did you mean"),
])
def test_bad_folders_and_labels_are_one_line(smoke_model, tree, make, args, words):
    root, _ = smoke_model
    make(tree)
    paths = {"tree": str(tree), "empty": str(tree / "empty")}
    args = [paths.get(a) or (str(tree / a[5:]) if a.startswith("tree/") else a) for a in args]
    before = sorted((root / "occlude").glob("20*"))
    res, _ = _occ(root, *args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zfnet occlude: error: ") and words in lines[0]
    assert sorted((root / "occlude").glob("20*")) == before


def test_a_module_inside_a_stage_gets_panel_c_too(smoke_model, tree):
    # not a stage end, but a module of the stack: the deconvnet reads every module name
    # (zfnet_cli.layers' one naming), so panel (c) is drawn, with no note
    root, _ = smoke_model
    res, run = _occ(root, str(tree / "car/y.png"), "--layer", "features.relu4")
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if line.startswith("zfnet occlude: note:")]
    assert notes == []
    (entry,) = json.loads((run / "metrics.json").read_text())["images"]
    assert entry["layer"] == "features.relu4" and entry["panel_c"] is True
    assert (run / entry["figure"]).stat().st_size > 5000


def test_visualize_reads_a_folder_of_photos(smoke_model, tree):
    root, _ = smoke_model
    res = runner.invoke(app, ["visualize", "experiment=smoke", f"output_root={root}", "--layer",
                              "1", "--fmap", "0", "data=folder", f"data.root={tree}"])
    assert res.exit_code == 0, res.output
    index = json.loads((root / "visualize" / "latest" / "top9.json").read_text())
    assert index["data"] == "folder"
    rec = index["layers"]["conv1"]["0"]
    assert len(rec["images"]) == 3 and set(rec["image_classes"]) <= {"car", "pets"}
    assert sorted(rec["image_files"]) == sorted(str(tree / p) for p in
                                                ("car/x.jpg", "car/y.png", "pets/z.jpg"))


def test_torchvision_resnet18_state_dict_on_a_folder_of_photos(tmp_path, tree):
    """The README's flow: `zfnet occlude photos/ --checkpoint resnet18.pth` (random weights)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "out"
    res = runner.invoke(app, ["occlude", str(tree), "--checkpoint", str(tmp_path / "resnet18.pth"),
                              "--size", "112", "--stride", "56", f"output_root={out}",
                              "progress=false"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    run = (out / "occlude" / "latest").resolve()
    m = json.loads((run / "occlusion.json").read_text())
    assert len(m["images"]) == 3 and m["failed"] == []
    entry = m["images"][0]  # 100x80 -> short side 256 (320x256) -> centre 224: x 48..272 / 3.2
    assert entry["layer"] == "layer4" and entry["grid"] == [3, 3]
    assert entry["region"] == pytest.approx([15, 5, 85, 75])
    assert entry["label_from"] == "prediction"  # car/ and pets/ are no ImageNet class names
    notes = [line for line in res.output.splitlines() if line.startswith("zfnet occlude: note:")]
    assert entry["panel_c"] is True and notes == []  # the graph deconvnet covers resnet18
    a = np.load(run / entry["arrays"])
    assert tuple(a["image_size"]) == (224, 224) and a["p_target_input"].shape == (224, 224)
    assert (run / entry["figure"]).stat().st_size > 5000


def test_one_cli_run_per_model_source_gives_the_same_maps(tmp_path, tree, monkeypatch):
    """`zfnet occlude DIR` on one mobilenet_v3_small brought five ways: a state dict, a wrapped
    one, TorchScript, a factory path with weights, a trusted pickle. Same weights, same maps."""
    import warnings

    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=7).eval()
    sd = tmp_path / "sd.pth"
    torch.save(net.state_dict(), sd)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "wrapped.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 224, 224)), tmp_path / "net.ts")
    torch.save(net, tmp_path / "whole.pt")
    (tmp_path / "occl_factory_nets.py").write_text(
        "import torchvision\n\ndef build():\n"
        "    return torchvision.models.mobilenet_v3_small(num_classes=7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = {"state dict": [str(sd)], "wrapped": [str(tmp_path / "wrapped.pth")],
               "torchscript": [str(tmp_path / "net.ts")],
               "factory": ["occl_factory_nets:build", "--weights", str(sd)],
               "pickle": [str(tmp_path / "whole.pt"), "--trust-pickle"]}
    maps = {}
    for name, (checkpoint, *extra) in sources.items():
        out = tmp_path / name.replace(" ", "_")
        res = runner.invoke(app, ["occlude", str(tree / "pets"), "--checkpoint", checkpoint, *extra,
                                  "--size", "112", "--stride", "112", f"output_root={out}",
                                  "progress=false"])
        assert res.exit_code == 0, (name, res.output)
        run = (out / "occlude" / "latest").resolve()
        images = json.loads((run / "occlusion.json").read_text())["images"]
        assert len(images) == 1 and images[0]["grid"] == [2, 2], name
        notes = [line for line in res.output.splitlines() if "zfnet occlude: note:" in line]
        if name == "torchscript":  # no layer taps on a ScriptModule: (d), (e), (f) only
            assert images[0]["layer"] is None and "without panels (b) and (c)" in notes[0]
        else:
            assert images[0]["layer"] == "features"
            assert len(notes) == (0 if images[0]["panel_c"] else 1), name
        maps[name] = np.load(run / images[0]["arrays"])["p_target"]
    for name, p in maps.items():
        np.testing.assert_allclose(p, maps["state dict"], rtol=1e-4, atol=1e-6, err_msg=name)


def test_incremental_and_full_methods_give_the_same_maps(smoke_model):
    root, _ = smoke_model
    arrays = []
    for method in ("incremental", "full"):
        res, run = _occ(root, f"method={method}", "memory_budget_mb=1")
        assert res.exit_code == 0, res.output
        (entry,) = json.loads((run / "metrics.json").read_text())["images"]
        assert entry["method"] == method  # every run records the method that computed it
        arrays.append(np.load(run / entry["arrays"]))
    inc, full = arrays
    assert np.array_equal(inc["positions"], full["positions"])
    assert np.array_equal(inc["top_label"], full["top_label"])
    np.testing.assert_allclose(inc["fmap_total"], full["fmap_total"], rtol=1e-5)
    np.testing.assert_allclose(inc["p_target"], full["p_target"], rtol=1e-5, atol=1e-7)


def test_damaged_tiffs_are_one_line_each(smoke_model, tmp_path):
    from test_images import damaged_resolution_tags, rational_strip_offsets

    root, _ = smoke_model
    bad = rational_strip_offsets(tmp_path / "rational.tif")
    odd = damaged_resolution_tags(tmp_path / "tags.tif")
    res, _ = _occ(root, str(bad), str(odd), "progress=false")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if "error:" in line]
    assert errors == [f"zfnet occlude: error: {bad}: corrupt image (TypeError: 'IFDRational' "
                      "object cannot be interpreted as an integer)"]
    warned = [line for line in res.output.splitlines() if "warning" in line.lower()]
    assert warned == [f"zfnet: warning: {odd}: damaged file, decoded anyway (Metadata Warning, "
                      "tag 282 had too many entries: 2, expected 1; 1 more such)"], res.output
