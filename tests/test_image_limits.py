"""max_pixels governs PIL's decompression-bomb limit; correspond reads user images through the
guarded loader."""
import json
import struct
import zlib

import pytest
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli.cli import app
from zfnet_cli.data.images import ImageError, load_image, read_image


def huge_png_header(path, width, height):
    """A few bytes of PNG whose header claims width x height pixels (no pixel data)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_max_pixels_can_raise_pils_limit(tmp_path, monkeypatch):
    # PIL's default limit (~89.5 MP) stands in at 5000 pixels: a 100x100 image is above it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    Image.new("RGB", (100, 100), (200, 10, 10)).save(tmp_path / "big.png")
    x = load_image(tmp_path / "big.png", 16, max_pixels=20_000)  # the option allows it
    assert x.shape == (3, 16, 16) and int(x[0, 8, 8]) == 200
    assert Image.MAX_IMAGE_PIXELS == 5000  # PIL's own limit is back after the load
    with pytest.raises(ImageError, match="above the limit of 9999 \\(max_pixels\\)"):
        load_image(tmp_path / "big.png", 16, max_pixels=9999)


def test_a_header_claiming_400_megapixels_is_refused_before_decoding(tmp_path):
    bomb = huge_png_header(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ImageError, match="20000x20000 = 400000000 pixels is above the limit"):
        read_image(bomb)


@pytest.mark.parametrize("kind", ["empty", "folder", "bomb", "text"])
def test_correspond_reads_user_images_through_the_guarded_loader(smoke_model, tmp_path, kind):
    root, _ = smoke_model
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (90, 90, 90)).save(good)
    bad = tmp_path / "bad.png"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "folder":
        bad.mkdir()
    elif kind == "bomb":
        huge_png_header(bad, 20000, 20000)
    else:
        bad.write_text("hello")
    box = {"right_eye": [10, 10, 20, 20], "left_eye": [30, 10, 40, 20], "nose": [20, 30, 30, 40]}
    parts = tmp_path / "parts.json"
    parts.write_text(json.dumps({"good.png": box, "bad.png": box}))
    res = CliRunner().invoke(app, ["correspond", str(good), str(bad), "--parts-file", str(parts),
                                   f"output_root={root}", "progress=false"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    errors = [line for line in res.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "bad.png" in errors[0], res.output
