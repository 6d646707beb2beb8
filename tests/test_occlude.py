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
    (["IMG", "method=fast"], "method must be one of ['auto', 'incremental', 'full'], got 'fast'"),
    (["IMG", "memory_budget_mb=0"], "memory_budget_mb must be >= 1 (MiB), got 0"),
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


def test_incremental_and_full_methods_give_the_same_maps(smoke_model):
    root, _ = smoke_model
    arrays = []
    for method in ("incremental", "full"):
        res, run = _occ(root, f"method={method}", "memory_budget_mb=1")
        assert res.exit_code == 0, res.output
        (entry,) = json.loads((run / "metrics.json").read_text())["images"]
        arrays.append(np.load(run / entry["arrays"]))
    inc, full = arrays
    assert np.array_equal(inc["positions"], full["positions"])
    assert np.array_equal(inc["top_label"], full["top_label"])
    np.testing.assert_allclose(inc["fmap_total"], full["fmap_total"], rtol=1e-5)
    np.testing.assert_allclose(inc["p_target"], full["p_target"], rtol=1e-5, atol=1e-7)
