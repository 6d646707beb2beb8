"""User image files: every format and mode becomes the model's RGB square; bad files, one line."""
import numpy as np
import pytest
from PIL import Image

from zfnet_cli.data.images import ImageError, load_image


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
