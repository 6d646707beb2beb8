"""User image files: every format and mode becomes the model's RGB square; bad files, one line."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet_cli.data.images import ImageError, PhotoFolder, load_image, seen_region, upright_size
from zfnet_cli.data.sources import DataConfig, for_model, load_split


def _halves(w=40, h=20):
    """Left half red, right half blue: orientation and crops are easy to read back."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    return a


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".gif", ".webp", ".bmp", ".tiff"])
def test_formats(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    Image.fromarray(_halves(60, 60)).save(path)
    x = load_image(path, 16)
    assert x.shape == (3, 16, 16) and x.dtype.is_floating_point is False
    assert x[0, 8, 1] > 200 and x[2, 8, 1] < 60  # red on the left
    assert x[2, 8, 14] > 200 and x[0, 8, 14] < 60  # blue on the right


def test_short_side_resize_and_centre_crop(tmp_path):
    a = np.zeros((20, 60, 3), np.uint8)
    a[:, 20:40] = 255  # the centre third white
    Image.fromarray(a).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 10)  # 20x60 -> 10x30 -> centre 10x10 = the white band
    assert x.shape == (3, 10, 10) and int(x[:, :, 1:9].min()) == 255
    assert int(x.min()) > 128  # the edge columns blend a little black (antialiased shrink)


def test_modes(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "grey.png")
    assert load_image(tmp_path / "grey.png", 8).unique().tolist() == [77]
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent
    assert load_image(tmp_path / "clear.png", 8).unique().tolist() == [128]  # composited on grey
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(tmp_path / "opaque.png")
    assert load_image(tmp_path / "opaque.png", 8)[:, 0, 0].tolist() == [255, 0, 0]
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(tmp_path / "pal.gif")
    assert load_image(tmp_path / "pal.gif", 8)[:, 3, 3].tolist() == [0, 255, 0]
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in CMYK
    r, g, b = load_image(tmp_path / "cmyk.jpg", 8)[:, 4, 4].tolist()
    assert r > 200 and g < 60 and b < 60
    sixteen = Image.fromarray(np.full((8, 8), 32768, np.uint16))
    sixteen.save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    assert load_image(tmp_path / "deep.png", 8).unique().tolist() == [128]  # scaled, not clipped


def test_exif_orientation(tmp_path):
    im = Image.fromarray(_halves(40, 20))  # red left, blue right, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "phone.jpg", exif=exif)
    x = load_image(tmp_path / "phone.jpg", 20)  # displayed: portrait, red on top
    assert x[0, 1, 10] > 200 and x[2, 18, 10] > 200


def test_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(_halves(200, 200)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    cases = [(tmp_path / "missing.jpg", {}, "no such file"),
             (tmp_path / "notes.txt", {}, "not an image file"),
             (tmp_path / "cut.jpg", {}, "truncated or corrupt"),
             (tmp_path / "big.png", {"max_pixels": 5000}, "above the limit of 5000"),
             (tmp_path, {}, "is a folder")]
    for path, kw, words in cases:
        with pytest.raises(ImageError) as err:
            load_image(path, 16, **kw)
        msg = str(err.value)
        assert msg.startswith(str(path)) and words in msg and "\n" not in msg


# --- a folder of your photos -----------------------------------------------------------------

def _photo(path, w=40, h=30, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def test_photo_folder_flat(tmp_path):
    root = tmp_path / "holiday"
    for name in ("b.JPG", "a.png", "c.webp"):
        _photo(root / name)
    (root / "notes.txt").write_text("not a photo")
    _photo(root / ".hidden.jpg")
    (root / "empty").mkdir()  # a sub-folder without images does not make a tree
    folder = PhotoFolder(root, resize=16)
    assert not folder.tree and folder.classes == ["holiday"]
    assert [Path(p).name for p, _ in folder.samples] == ["a.png", "b.JPG", "c.webp"]
    assert folder.targets == [0, 0, 0]
    image, label = folder[1]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and label == 0


def test_photo_folder_class_tree(tmp_path):
    _photo(tmp_path / "dog" / "x.jpg")
    _photo(tmp_path / "dog" / "deeper" / "y.jpg")  # at any depth inside its class folder
    _photo(tmp_path / "cat" / "z.png")
    _photo(tmp_path / ".git" / "w.png")
    folder = PhotoFolder(tmp_path, resize=8)
    assert folder.tree and folder.classes == ["cat", "dog"]
    assert [(Path(p).relative_to(tmp_path).as_posix(), c) for p, c in folder.samples] == [
        ("cat/z.png", 0), ("dog/deeper/y.jpg", 1), ("dog/x.jpg", 1)]


def test_photo_folder_errors_are_one_line(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ImageError, match=r"^\S+: no images in this folder or its sub-folders "
                                         r"\(looked for \.jpg"):
        PhotoFolder(tmp_path, resize=8)
    with pytest.raises(ImageError, match="no such folder"):
        PhotoFolder(tmp_path / "missing", resize=8)


def test_folder_data_source_needs_no_splits(tmp_path):
    _photo(tmp_path / "a.jpg")
    cfg = DataConfig(name="folder", root=str(tmp_path), image_size=24)
    assert len(load_split(cfg, "val")) == len(load_split(cfg, "train")) == 1
    with pytest.raises(ValueError, match="data=folder needs data.root=DIR"):
        load_split(DataConfig(name="folder"), "val")
    # read as the model reads its images: its size and mean, the folder as root
    trained = DataConfig(name="imagenet", image_size=256, crop=224, mean="channel")
    assert for_model(DataConfig(name="folder", root="photos"), trained) == DataConfig(
        name="folder", root="photos", image_size=256, crop=224, mean="channel")
    assert for_model(None, trained) is trained


def test_seen_region_is_what_load_image_keeps(tmp_path):
    # columns coded by their x: after resize + centre crop the kept columns tell where they were
    w, h = 400, 300
    xs = np.broadcast_to(np.linspace(0, 255, w), (h, w))
    Image.fromarray(np.stack([xs] * 3, -1).round().astype(np.uint8)).save(tmp_path / "p.png")
    size, crop = 256, 224
    x0, y0, x1, y1 = seen_region(w, h, size, crop)
    assert upright_size(tmp_path / "p.png") == (w, h)
    kept = load_image(tmp_path / "p.png", size)[0].double()
    top = (size - crop) // 2
    first, last = kept[top, top], kept[top, top + crop - 1]  # centre-crop columns 0 and 223
    px = 255 / (w - 1)  # grey levels per photo pixel
    assert abs(float(first) / px - (x0 + 0.5 * (x1 - x0) / crop)) < 1.5
    assert abs(float(last) / px - (x1 - 0.5 * (x1 - x0) / crop)) < 1.5
    assert y0 == pytest.approx(h * (1 - crop / size) / 2) and y1 == pytest.approx(h - y0)


# --- damaged files found by fuzzing (scripts/fuzz.py) -------------------------------------------

def _tiff(path, retag, **save):
    """A small valid TIFF (8x8 RGB, 72 dpi) whose first IFD entries are rewritten by
    ``retag(tag) -> (type or None, count or None[, new tag])``: the damage the fuzzer's byte
    flips made. ``save``: more arguments of PIL's TIFF writer (``compression``)."""
    import io
    import struct

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), np.uint8)).save(
        buf, "TIFF", dpi=(72, 72), **save)
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        tag = struct.unpack("<H", data[entry:entry + 2])[0]
        typ, count, *renamed = retag(tag)
        if renamed:
            data[entry:entry + 2] = struct.pack("<H", renamed[0])
        if typ is not None:
            data[entry + 2:entry + 4] = struct.pack("<H", typ)
        if count is not None:
            data[entry + 4:entry + 8] = struct.pack("<I", count)
    path.write_bytes(bytes(data))
    return path


def rational_strip_offsets(path):
    """StripOffsets (273) of type RATIONAL (5) instead of LONG: PIL raised TypeError
    ('IFDRational' object cannot be interpreted as an integer) out of load_image."""
    return _tiff(path, lambda tag: (5, None) if tag == 273 else (None, None))


def damaged_resolution_tags(path):
    """XResolution / YResolution (282, 283) claiming 2 values: PIL decodes the pixels and
    warns once per tag ('Metadata Warning, tag 282 had too many entries')."""
    return _tiff(path, lambda tag: (None, 2) if tag in (282, 283) else (None, None))


def test_a_tiff_whose_strip_offsets_became_a_rational_is_one_line(tmp_path):
    path = rational_strip_offsets(tmp_path / "rational.tif")
    with pytest.raises(ImageError) as err:
        load_image(path, 16)
    msg = str(err.value)
    assert msg.startswith(f"{path}: corrupt image (TypeError") and "\n" not in msg


def test_a_damaged_file_that_decodes_warns_once_naming_it(tmp_path):
    import warnings

    from zfnet_cli.data.images import DamagedImageWarning

    path = damaged_resolution_tags(tmp_path / "tags.tif")
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        x = load_image(path, 8)
    assert x.shape == (3, 8, 8)
    assert [w.category for w in heard] == [DamagedImageWarning]  # not one per damaged tag
    text = str(heard[0].message)
    assert text.startswith(f"{path}: damaged file, decoded anyway (Metadata Warning, tag 282")
    assert "1 more such" in text and "\n" not in text


def test_a_tiff_pil_logs_an_error_about_is_one_line_and_logs_nothing(caplog, capfd):
    """The fuzzer's file (SamplesPerPixel 3072): PIL logged 'More samples per pixel than can be
    decoded' at ERROR level, which Python prints to stderr when no logging is set up."""
    import logging

    path = Path(__file__).parent / "fuzz_escapes" / "samples_per_pixel_3072.tif"
    with caplog.at_level(logging.DEBUG), pytest.raises(ImageError) as err:
        load_image(path, 16)
    assert str(err.value).startswith(f"{path}: not an image file") and "\n" not in str(err.value)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("PIL")
            and r.levelno >= logging.WARNING] == []
    assert capfd.readouterr().err == ""


def test_16_bit_to_8_bit_in_integers_equals_the_rounded_float_formula():
    """The 16-bit path runs in uint32 (a small TIFF declaring 67 megapixels took 2.4 GB and
    30 s in float64); it must give the bytes round(v / 65535 * 255) gave, for every value."""
    v = np.arange(65536, dtype=np.uint16)
    im = Image.fromarray(v.reshape(256, 256))
    assert im.mode.startswith("I;16")
    from zfnet_cli.data.images import to_rgb

    got = np.asarray(to_rgb(im, (128, 128, 128)))[..., 0].reshape(-1)
    want = np.clip(v.astype(np.float64) / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(got, want)


def test_what_libtiff_prints_itself_is_caught(tmp_path, capfd):
    """An LZW TIFF (decoded by libtiff) whose StripOffsets tag became a private one: libtiff
    wrote 'MissingRequired: TIFF directory is missing required "StripOffsets" field.' to the
    process's stderr itself, past Python, after the one-line error."""
    path = _tiff(tmp_path / "lzw.tif", lambda tag: (None, None, 32773) if tag == 273 else
                 (None, None), compression="tiff_lzw")
    with pytest.raises(ImageError, match="truncated or corrupt image"):
        load_image(path, 8)
    assert capfd.readouterr().err == ""
