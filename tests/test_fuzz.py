"""Hostile input: a short seeded run of scripts/fuzz.py (the long one is `make fuzz`), and each
escape it found, kept as a regression test with its input."""
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from zfnet_cli.checkpoint import CheckpointError
from zfnet_cli.loading import load_model
from zfnet_cli.config import ConfigError, compose

ROOT = Path(__file__).resolve().parent.parent


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz", ROOT / "scripts" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz"] = module
    spec.loader.exec_module(module)
    return module


def test_a_short_seeded_run_has_no_escape(tmp_path):
    fuzz = _fuzz()
    code = fuzz.main(["--images", "400", "--overrides", "40", "--checkpoints", "12", "--seed",
                      "7", "--out", str(tmp_path), "--quiet"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["escapes"] == [] and code == 0, report["escapes"]
    assert report["seed"] == 7 and report["commit"]
    images = report["targets"]["images"]
    assert images["cases"] == 400 == images["refused"] + images["accepted"]
    assert images["refused"] > 100 and images["accepted"] > 20  # mutations reach both sides
    assert report["targets"]["overrides"]["cases"] == 40
    assert report["targets"]["checkpoints"]["cases"] == 12


def test_the_harness_catches_an_escape_and_saves_its_input(tmp_path, monkeypatch):
    """A loader that lets a TypeError out (what PIL did on a TIFF with a rational strip
    offset) is reported with its file; a hang past the time limit too."""
    import time

    import zfnet_cli.data.images as images

    fuzz = _fuzz()

    def broken(path, size, **kw):
        if Path(path).suffix == ".tif":
            raise TypeError("'IFDRational' object cannot be interpreted as an integer")
        if Path(path).suffix == ".gif":
            time.sleep(60)
        return torch.zeros(3, size, size, dtype=torch.uint8)

    monkeypatch.setattr(images, "load_image", broken)  # the worker processes fork from here
    code = fuzz.main(["--images", "60", "--limit", "2", "--out", str(tmp_path), "--quiet"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 1
    whats = {e["what"].split(":")[0] for e in report["escapes"]}
    assert whats == {"TypeError", "no answer within 2 s"}, whats
    tif = next(e for e in report["escapes"] if e["what"].startswith("TypeError"))
    assert tif["saved"].endswith(".tif") and Path(tif["saved"]).stat().st_size > 0
    counts = report["targets"]["images"]
    assert counts["cases"] == 60 == counts["accepted"] + counts["escapes"]


# --- escapes the fuzzer found, each fixed ------------------------------------------------------

@pytest.mark.parametrize("command,override,words", [
    ("train", "model=1.5", "'model=1.5': model takes the name of one of its configs (alexnet"),
    ("train", "data=null", "'data=null': data takes the name"),
    ("train", "optim=0", "'optim=0': optim takes the name"),
    ("occlude", "data=[2,true,inf]", "'data=[2,true,inf]': data takes the name"),
    ("train", "data=[1,[2,[3]]]", "'data=[1,[2,[3]]]': data takes the name"),
    ("correspond", "data=[null]", "'data=[null]': data takes the name"),
    ("occlude", "data=[interval(0,1),${now:%Y},interval(0,1)]", "'data=[interval(0,1)"),
    ("train", "optim=${oc.decode:'[1]'}", "'optim=${oc.decode:'[1]'}': optim takes the name"),
    ("correspond", "data={a:1}", "'data={a:1}': data takes the name"),
])
def test_a_config_group_set_to_a_number_or_null_is_one_line(command, override, words):
    """Hydra raised a plain ValueError ('Config group override must be a string or a list.
    Got float'), which named no key, or a TypeError from inside it for a list of non-names."""
    with pytest.raises(ConfigError) as err:
        compose(command, [override])
    assert str(err.value).startswith(words) and "\n" not in str(err.value)


def test_a_key_two_levels_under_a_null_group_is_one_line():
    """OmegaConf raised AssertionError('Unexpected type: None') for data.root.x=-0.5 on a
    command whose data group is null (it comes from the checkpoint)."""
    with pytest.raises(ConfigError, match=r"cannot set data\.root\.x: 'data' is null for "
                                          r"`zfnet occlude`") as err:
        compose("occlude", ["data.root.x=-0.5"])
    assert "\n" not in str(err.value)


def test_a_zip_with_a_damaged_central_directory_is_one_line(tmp_path):
    """zipfile.is_zipfile accepted it (it reads only the end record), then ZipFile raised
    BadZipFile out of load_model while checking for TorchScript."""
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(4)}, path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"PK\x01\x02", b"PK\x01\x03", 1))
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="is not a checkpoint: a damaged") as err:
        load_model(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_mutated_trees_through_prepare_and_train_with_workers(tmp_path):
    fuzz = _fuzz()
    code = fuzz.main(["--prepare", "2", "--train", "2", "--out", str(tmp_path), "--quiet"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["escapes"] == [] and code == 0, report["escapes"]
    assert report["targets"]["prepare"]["cases"] == 2 and report["targets"]["train"]["cases"] == 2
