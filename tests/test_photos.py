"""zfnet_cli/data/photos.py: the real photos' entries are complete, their hand-drawn boxes lie
inside the photos, the recorded view shares follow from the boxes, the real ImageNet network
(loaded through checkpoint=module:factory weights=FILE) ranks each photo's class in its top-5,
and a missing package is one line naming it."""
from __future__ import annotations

import json

import pytest
import torch

from zfnet_cli.data import photos as ph
from zfnet_cli.data.images import seen_region, upright_size

FIELDS = {"name", "package", "pip", "file", "source", "licence", "classes", "class_names", "box",
          "view_share", "minority", "top5", "note"}


def test_entries_are_complete_and_boxes_inside():
    entries = json.loads(ph.SPECS.read_text())["photos"]
    assert len(entries) >= 8
    assert len({e["name"] for e in entries}) == len(entries)
    for e in entries:
        assert set(e) == FIELDS, e["name"]
        assert e["source"] and e["licence"] and e["classes"], e["name"]
        assert len(e["class_names"]) == len(e["classes"]), e["name"]
        w, h = upright_size(ph.Photo(**e).path())
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (e["name"], e["box"], (w, h))
        # the recorded share of the model's view (short side 256, centre 224) is the box's
        vx0, vy0, vx1, vy1 = seen_region(w, h, 256, 224)
        inter = max(0, min(x1, vx1) - max(x0, vx0)) * max(0, min(y1, vy1) - max(y0, vy0))
        share = inter / ((vx1 - vx0) * (vy1 - vy0))
        assert e["view_share"] == pytest.approx(share, abs=1e-3), e["name"]
        assert e["minority"] == (share < 0.5), e["name"]
    assert sum(e["minority"] for e in entries) >= 3  # localisation needs objects that leave room


def test_real_network_top5_has_each_photos_class(real_network):
    assert real_network.kind == "factory" and real_network.input_size == 224
    for p in ph.photos():
        _, x = real_network.image(p.path())
        with torch.no_grad():
            top5 = real_network.model(x[None]).topk(5).indices[0].tolist()
        assert p.classes[0] in top5, (p.name, top5)
        assert [t[0] for t in p.top5] == top5, p.name  # the recorded top-5 is today's
        assert p.class_names == [real_network.class_names[c] for c in p.classes], p.name


def test_factory_route_equals_the_package_own_loader(real_network):
    from efficientnet_lite_pytorch import EfficientNet

    own = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=ph.efficientnet_lite0_weights()).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(real_network.model(x), own(x), atol=1e-5)


def test_photos_written_to_a_folder(tmp_path):
    folder = ph.photos(tmp_path / "p", names=["rocket", "camera"])
    files = sorted(f.name for f in folder.iterdir())
    assert files == ["camera.png", "photos.json", "rocket.jpg"]
    boxes = ph.read_boxes(folder)
    assert boxes["rocket.jpg"].box == ph.photos(names=["rocket"])[0].box
    assert (folder / "rocket.jpg").read_bytes() == ph.photos(names=["rocket"])[0].path().read_bytes()


def test_unknown_name_and_missing_package_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(ph.PhotosError, match="no photo named nope; the photos are chelsea"):
        ph.photos(names=["nope"])
    real = ph.importlib.util.find_spec
    monkeypatch.setattr(ph.importlib.util, "find_spec",
                        lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(ph.PhotosError) as err:
        ph.photos(tmp_path / "q")
    assert "scikit-image, which is not installed: pip install scikit-image" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "q").exists()  # nothing written before the failure
    with pytest.raises(ph.PhotosError, match="has no photos.json"):
        ph.read_boxes(tmp_path)


def test_localise_on_files_without_boxes_is_one_line(tmp_path, smoke_model):
    from typer.testing import CliRunner

    from conftest import one_error_line
    from zfnet_cli.cli import app

    root, run = smoke_model
    folder = ph.photos(tmp_path / "p", names=["rocket"])
    (folder / "photos.json").unlink()  # a plain photo folder: no boxes
    res = CliRunner().invoke(app, ["occlude", str(folder), f"checkpoint={run}",
                                   f"output_root={tmp_path / 'out'}", "localise=true",
                                   "progress=false", "size=32", "stride=32"])
    one_error_line(res, "localise=true on image files needs their object boxes", "photos.json")
    assert not list((tmp_path / "out" / "occlude").glob("2*"))  # no half-written run left
