"""Loading the image files a user brings (``zfnet occlude image.jpg``, ``zfnet invariance``).

Any format PIL reads (JPEG, PNG, GIF: first frame, WebP, BMP, TIFF, ...) in any mode becomes an
RGB uint8 (3, S, S) tensor prepared the way the model's training data was (short side resized to
``size``, centre crop ``size``):

* EXIF orientation is applied first (a phone photo shows upright);
* greyscale and palette images are converted to RGB; transparency (RGBA, LA, palette with a
  transparent colour) is composited over a background colour (default mid-grey, 128);
* CMYK is converted to RGB; 16-bit images (``I;16``, ``I``) are scaled to 8 bits by their range
  of representable values, not clipped;
* an image with more than ``max_pixels`` pixels is refused before it is decoded (PIL's own
  decompression-bomb guard stays on too).

Every failure is an :class:`ImageError` whose message is one line naming the file.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

MAX_PIXELS = 100_000_000  # 100 megapixels


class ImageError(ValueError):
    """A file that cannot be used as an image (missing, a folder, not an image, truncated,
    corrupt or too large); the message is one line and names the file, so the commands print
    it as it is."""


def _to_rgb(im: Image.Image, background: Sequence[int]) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        im = Image.fromarray(((a - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
        back = Image.new("RGBA", im.size, tuple(int(c) for c in background) + (255,))
        im = Image.alpha_composite(back, im)
    return im.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Paper §3: short side -> ``size`` (bilinear, antialiased when shrinking), then the centre
    size x size square."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        # PIL's resize filters over the whole footprint of each output pixel: this is the
        # antialiased resize (a plain bilinear tap would alias when shrinking 500 -> 256).
        img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | Path, size: int, *, max_pixels: int = MAX_PIXELS,
               background: Sequence[int] = (128, 128, 128)) -> torch.Tensor:
    """An image file as the model's data sees it: uint8 (3, size, size), RGB.

    Args:
        path: the file.
        size: side after resizing the short side to ``size`` and taking the centre square.
        max_pixels: refuse images larger than this (width x height), before decoding.
        background: RGB colour transparent pixels are composited over.

    Returns:
        Tensor: uint8 (3, size, size), EXIF orientation applied, the first frame of an
        animation.

    Raises:
        ImageError: missing file, not an image, truncated or corrupt, too large.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"{path}: {w}x{h} = {w * h} pixels is above the limit of "
                                     f"{max_pixels} (max_pixels)")
                im.seek(0)  # first frame of an animation
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im, background)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        what = "truncated or corrupt image" if "truncated" in str(err) or isinstance(err, OSError) \
            else "unreadable image"
        raise ImageError(f"{path}: {what} ({str(err).splitlines()[0]})") from None
    rgb = resize_center_crop(rgb, size)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class LabelledImageFiles(Dataset):
    """A data set of image files: ``samples`` of ``(path, label)``, each read by
    :func:`load_image` as uint8 (3, S, S) with S = ``resize`` (ImageNet folders, Caltech)."""

    def __init__(self, resize: int) -> None:
        self.resize = int(resize)
        self.samples: list[tuple[str, int]] = []

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in sample order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Returns ``(image, label)``: uint8 (3, S, S) RGB in 0..255 and the class index."""
        path, label = self.samples[i]
        return load_image(path, self.resize), label


# What a folder listing takes as a photo (by suffix, case-insensitive); files named one by one
# are tried whatever their suffix.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pbm")


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class PhotoFolder(LabelledImageFiles):
    """A folder of your photos as a data set (``zfnet occlude DIR``, ``zfnet visualize
    data=folder data.root=DIR``): no ``train/`` / ``val/`` level, no wnid folders.

    * **flat**: the image files directly in ``root``, all of one class named after the folder;
    * **class-per-folder**: each sub-folder of ``root`` that holds images (at any depth) is a
      class, named by the sub-folder; images lying directly in ``root`` are then one more class
      named after ``root``.

    Images are files with a suffix in :data:`IMAGE_SUFFIXES` (any case); hidden files and
    folders are skipped. Classes are sorted by name, images by path; each is read by
    :func:`load_image` as uint8 (3, S, S) with S = ``resize``.

    Args:
        root (str or Path): the folder.
        resize (int): side S (short side resized to S, centre crop S).

    Attributes:
        classes (list[str]): class names in label order.
        samples (list[tuple[str, int]]): ``(path, label)`` per image.
        tree (bool): whether ``root`` is a class-per-folder tree.

    Raises:
        ImageError: ``root`` is not a folder, or holds no images (one line naming it).

    Example:
        >>> PhotoFolder("photos/", resize=256).classes   # doctest: +SKIP
        ['cat', 'dog']
    """

    def __init__(self, root: str | Path, resize: int) -> None:
        super().__init__(resize)
        root = Path(root)
        if not root.is_dir():
            raise ImageError(f"{root}: no such folder" if not root.exists() else
                             f"{root}: not a folder")
        self.root = root
        subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        groups = [(d.name, files) for d in subfolders if (files := _images_in(d, recursive=True))]
        self.tree = bool(groups)
        top = _images_in(root, recursive=False)
        if top:
            groups.append((root.resolve().name or str(root), top))
        if not groups:
            raise ImageError(f"{root}: no images in this folder or its sub-folders (looked for "
                             f"{', '.join(IMAGE_SUFFIXES)} files)")
        groups.sort(key=lambda g: g[0])
        self.classes = [name for name, _ in groups]
        self.samples = [(str(f), label) for label, (_, files) in enumerate(groups) for f in files]


def upright_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image file as :func:`load_image` sees it (after its EXIF
    orientation), read from the header without decoding."""
    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # 5-8: rotated by 90 degrees


def seen_region(width: int, height: int, size: int, crop: int) -> tuple[float, float, float, float]:
    """The part of a ``width`` x ``height`` photo a model sees after :func:`resize_center_crop`
    to ``size`` and the centre ``crop`` x ``crop`` of that: ``(x0, y0, x1, y1)`` in the photo's
    pixel coordinates (edges, end exclusive). For torchvision's evaluation (256, 224) that is
    the centred square of side 224/256 = 0.875 of the short side.

    Example:
        >>> [round(v, 2) for v in seen_region(400, 300, 256, 224)]  # 400x300 -> 341x256 first
        [68.04, 18.75, 330.79, 281.25]
    """
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2 + (size - crop) // 2, (new_h - size) // 2 + (size - crop) // 2
    sx, sy = width / new_w, height / new_h  # resized -> photo pixels, per axis
    return (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
