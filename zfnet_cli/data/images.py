"""Loading the image files a user brings (``zfnet occlude image.jpg``, ``zfnet invariance``).

Any format PIL reads (JPEG, PNG, GIF: first frame, WebP, BMP, TIFF, ...) in any mode becomes an
RGB uint8 (3, S, S) tensor prepared the way the model's training data was (short side resized to
``size``, centre crop ``size``):

* EXIF orientation is applied first (a phone photo shows upright);
* greyscale and palette images are converted to RGB; transparency (RGBA, LA, palette with a
  transparent colour) is composited over a background colour (default mid-grey, 128);
* CMYK is converted to RGB; 16-bit images (``I;16``, ``I``) are scaled to 8 bits by their range
  of representable values, not clipped;
* an image with more than ``max_pixels`` pixels is refused before it is decoded; this check
  replaces PIL's own decompression-bomb limit for the load, so ``max_pixels`` can also raise it.

Every failure is an :class:`ImageError` whose message is one line naming the file, whatever
exception the damaged file made the decoder raise; a file that decodes although parts of it are
damaged (corrupt EXIF or TIFF tags) gives one :class:`DamagedImageWarning` naming it, in place
of the decoder's own warnings.

Unreadable files inside a data set (an ImageFolder tree, Caltech, VOC) follow one policy, used
by training, ``zfnet visualize``, ``zfnet transfer`` and ``zfnet prepare`` alike
(:class:`UnreadableFiles`, :func:`read_batches`): the file is skipped, counted and named (in the
run's metrics and at the end of the run), and the run stops with one line only once more than
``max_broken`` (a fraction of the split, ``data.max_broken``, default 1%) is unreadable;
``max_broken=0`` is strict: the first unreadable file stops the run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from zfnet_cli.schemas import MAX_PIXELS  # 100 megapixels


class ImageError(ValueError):
    """A file that cannot be used as an image (missing, a folder, not an image, truncated,
    corrupt or too large); the message is one line and names the file, so the commands print
    it as it is.

    Attributes:
        path: the file (``None`` when raised without one).
        reason: the message without the file name.
    """

    def __init__(self, message: str, *, path: Optional[str] = None, reason: Optional[str] = None):
        super().__init__(message)
        self.path, self.reason = path, reason if reason is not None else message


def _error(path: Path, reason: str) -> ImageError:
    return ImageError(f"{path}: {reason}", path=str(path), reason=reason)


_PIL_LIMIT = threading.Lock()


@contextlib.contextmanager
def _pil_pixel_limit():
    """PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, about 89 megapixels) lifted
    for one load, then restored: the caller's ``max_pixels`` check, made on the header before
    anything is decoded, is the one limit that acts (PIL's would refuse a 90-megapixel image
    that ``max_pixels`` allows). A lock keeps threads from restoring each other's value."""
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def to_rgb(im: Image.Image, background: Sequence[int] = (128, 128, 128)) -> Image.Image:
    """An RGB PIL image of any mode: 16-bit and float grey scaled to 8 bits, transparent pixels
    composited over ``background`` (grey, the occluder's colour)."""
    if im.mode.startswith("I;16"):
        # round(v * 255 / 65535) in uint32 arithmetic: the same bytes as the float formula
        # below (no value sits on a .5 boundary), at a fraction of its memory and time on a
        # large image (a 565-byte TIFF can declare 67 megapixels)
        a = np.asarray(im).astype(np.uint32)
        im = Image.fromarray(((a * 510 + 65535) // 131070).astype(np.uint8), "L")
    elif im.mode == "I":
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
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


class DamagedImageWarning(UserWarning):
    """An image that decoded, but whose file is damaged (corrupt EXIF or TIFF tags, a bad
    chunk the decoder stepped over): one warning per file, naming it and the first of the
    decoder's complaints, instead of each of PIL's own warnings."""


_WARNED: set[str] = set()  # files this process has warned about


@contextlib.contextmanager
def _decoding(path: Path, max_pixels: int):
    """The policy for one file handed to PIL, in one place: PIL's pixel limit replaced by the
    caller's ``max_pixels``; every exception PIL raises while parsing or decoding the file
    becomes one :class:`ImageError` line naming the file (a damaged file can reach almost any
    line of a decoder: a TIFF whose strip-offset tag became a rational raises ``TypeError``,
    others ``struct.error``, ``IndexError``, ``KeyError``, ``ZeroDivisionError``...); the
    decoder's warnings, PIL's log records (its TIFF reader logs some damage as errors, which
    Python would print) and what the caller appends to the yielded list (libtiff's messages,
    :func:`_c_messages`) end as at most one :class:`DamagedImageWarning`."""
    heard: list[warnings.WarningMessage] = []
    notes: list[str] = []
    try:
        with _pil_pixel_limit(), warnings.catch_warnings(record=True) as heard, _pil_log(notes):
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield notes
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise _error(path, "not an image file PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _error(path, f"refused as a decompression bomb ({err}); the limit is "
                           f"max_pixels={max_pixels}") from None
    except MemoryError:
        raise _error(path, "corrupt image: decoding it needs more memory than there is") from None
    except Exception as err:  # noqa: BLE001 - whatever a damaged file makes PIL raise
        raise _error(path, _reason(err)) from None
    damage = [str(w.message).splitlines()[0] for w in heard if str(w.message)] + notes
    if damage and str(path) not in _WARNED:  # once per file, however often it is opened
        _WARNED.add(str(path))
        more = f"; {len(damage) - 1} more such" if len(damage) > 1 else ""
        warnings.warn(DamagedImageWarning(f"{path}: damaged file, decoded anyway "
                                          f"({damage[0]}{more})"), stacklevel=3)


class _Notes(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


@contextlib.contextmanager
def _pil_log(notes: list[str]):
    """PIL's log records of WARNING and above (logger ``PIL``) appended to ``notes`` instead of
    reaching the application's handlers or Python's last-resort print to stderr."""
    log = logging.getLogger("PIL")
    handler, propagate = _Notes(notes), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


@contextlib.contextmanager
def _c_messages(notes: list[str], active: bool = True):
    """Catch what C code writes to the process's stderr (file descriptor 2) while the block
    runs, as lines appended to ``notes``: libtiff prints its complaints about damaged tags
    there itself ("TIFFFetchNormalTag: ...", "MissingRequired: ..."), bypassing Python. Other
    threads' stderr output in that moment is caught too, so it is kept short (one decode)."""
    if not active:
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            notes += [line.strip() for line in caught.read(64 << 10).decode("utf-8", "replace")
                      .splitlines() if line.strip()]


def _reason(err: Exception) -> str:
    """One line for an exception raised on a damaged file."""
    first = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, (OSError, EOFError)) or "truncated" in first:
        return f"truncated or corrupt image ({first or type(err).__name__})"
    if isinstance(err, (SyntaxError, ValueError)):
        return f"unreadable image ({first or type(err).__name__})"
    return f"corrupt image ({type(err).__name__}: {first})" if first else \
        f"corrupt image ({type(err).__name__})"


def read_image(path: str | Path, *, max_pixels: int = MAX_PIXELS,
               background: Sequence[int] = (128, 128, 128)) -> Image.Image:
    """An image file as an upright RGB PIL image, before any resizing (:func:`load_image`
    without the resize and crop; its size is the one part boxes are given in).

    Args:
        path: the file.
        max_pixels: refuse images larger than this (width x height), before decoding; it also
            replaces PIL's own limit for this load (PIL's default would refuse ~90 megapixels).
        background: RGB colour transparent pixels are composited over.

    Raises:
        ImageError: missing file, a folder, not an image, truncated or corrupt, too large.

    Warns:
        DamagedImageWarning: once, when the file decoded although parts of it are damaged.
    """
    path = Path(path)
    if not path.exists():
        raise _error(path, "no such file")
    if path.is_dir():
        raise _error(path, "is a folder, not an image")
    if path.stat().st_size == 0:
        raise _error(path, "empty file (0 bytes), not an image")
    with _decoding(path, max_pixels) as notes:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise _error(path, f"{w}x{h} = {w * h} pixels is above the limit of "
                                   f"{max_pixels} (max_pixels)")
            with _c_messages(notes, active=im.format == "TIFF"):  # libtiff decodes these
                im.seek(0)  # first frame of an animation
                im.load()
                im = ImageOps.exif_transpose(im)
            return to_rgb(im, background)


def load_image(path: str | Path, size: int, *, max_pixels: int = MAX_PIXELS,
               background: Sequence[int] = (128, 128, 128)) -> torch.Tensor:
    """An image file as the model's data sees it: uint8 (3, size, size), RGB.

    Args:
        path: the file.
        size: side after resizing the short side to ``size`` and taking the centre square.
        max_pixels: refuse images larger than this (width x height), before decoding; it also
            replaces PIL's own limit for this load.
        background: RGB colour transparent pixels are composited over.

    Returns:
        Tensor: uint8 (3, size, size), EXIF orientation applied, the first frame of an
        animation.

    Raises:
        ImageError: missing file, not an image, truncated or corrupt, too large.
    """
    rgb = resize_center_crop(read_image(path, max_pixels=max_pixels, background=background), size)
    return to_tensor(rgb)


def to_tensor(rgb: Image.Image) -> torch.Tensor:
    """An RGB PIL image as uint8 (3, H, W)."""
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
    orientation), read from the header without decoding.

    Raises:
        ImageError: the file cannot be opened as an image (one line naming it)."""
    path = Path(path)
    with _decoding(path, MAX_PIXELS), Image.open(path) as im:
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
# ---------------------------------------------------------------- unreadable files in a data set

def loader_workers(workers: Optional[int]) -> int:
    """DataLoader worker processes: ``workers`` as given, or for ``None`` what this machine has
    (the cores this process may run on, at most 8), so torch never warns of more workers than
    cores on a small machine."""
    if workers is not None:
        return int(workers)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


class TooManyUnreadable(ImageError):
    """More unreadable files than the data set's ``max_broken`` allows (or any, when strict)."""


@dataclass(frozen=True)
class Unreadable:
    """A sample whose file could not be read: what a skipping data set yields in its place."""

    index: int
    path: str
    reason: str


class UnreadableFiles:
    """The policy for unreadable image files in a data set, in one place: skip, count, name,
    and stop past a threshold.

    Args:
        total: the number of files in the split (the threshold is a fraction of it).
        max_broken: the fraction of ``total`` that may be unreadable; one file more stops the
            run. ``0``: strict, the first unreadable file stops it. Default: 0.01.
        what: the split's name in messages, e.g. ``"train"``.
        key: the config key named in messages. Default: ``"data.max_broken"``.

    Attributes:
        files: path -> reason, each file once (a file unreadable every epoch counts once).

    Raises (from :meth:`add`):
        TooManyUnreadable: one line naming the count, the threshold, the first file and the key.

    Example:
        >>> bad = UnreadableFiles(total=200, max_broken=0.01, what="train")
        >>> bad.add("a.jpg", "truncated"); bad.add("b.jpg", "not an image"); len(bad)
        2
        >>> bad.add("c.jpg", "empty")
        Traceback (most recent call last):
        ...
        zfnet_cli.data.images.TooManyUnreadable: 3 of 200 train images are unreadable, more than data.max_broken=0.01 allows (2); first: a.jpg: truncated; fix or remove them, or raise data.max_broken
    """

    def __init__(self, total: int, max_broken: float = 0.01, what: str = "",
                 key: str = "data.max_broken") -> None:
        self.total, self.max_broken, self.what, self.key = int(total), float(max_broken), what, key
        self.files: dict[str, str] = {}

    @property
    def allowed(self) -> int:
        """How many files may be unreadable before the run stops."""
        return int(self.max_broken * self.total + 1e-9)

    def __len__(self) -> int:
        return len(self.files)

    def add(self, path: str, reason: str) -> None:
        """Record one unreadable file; raise once there are more than :attr:`allowed`."""
        self.files.setdefault(str(path), str(reason))
        self.check()

    def check(self) -> None:
        """Raise :class:`TooManyUnreadable` when more files are recorded than :attr:`allowed`
        (after :meth:`merge`, which does not check)."""
        if len(self.files) <= self.allowed:
            return
        first, why = next(iter(self.files.items()))
        split = f"{self.what} " if self.what else ""
        if self.max_broken == 0:
            raise TooManyUnreadable(f"unreadable {split}image {first}: {why} ({self.key}=0: "
                                    f"strict; set {self.key}=0.01 to skip up to 1% of such files)")
        raise TooManyUnreadable(f"{len(self.files)} of {self.total} {split}images are unreadable, "
                                f"more than {self.key}={self.max_broken:g} allows "
                                f"({self.allowed}); first: {first}: {why}; fix or remove them, "
                                f"or raise {self.key}")

    def merge(self, files: dict[str, str]) -> None:
        """Add files recorded elsewhere (another DDP rank), without the threshold."""
        for path, reason in files.items():
            self.files.setdefault(path, reason)

    def summary(self) -> dict:
        """``{"count", "files": [{"path", "reason"}]}`` for a run's metrics."""
        return {"count": len(self.files),
                "files": [{"path": p, "reason": r} for p, r in self.files.items()]}

    def lines(self, prefix: str, shown: int = 20, where: str = "") -> list[str]:
        """The end-of-run report: one line per file (``shown`` at most), then a count of the
        rest and where all of them are listed."""
        out = [f"{prefix}unreadable, skipped: {p}: {r}" for p, r in list(self.files.items())[:shown]]
        if len(self.files) > shown:
            out.append(f"{prefix}... and {len(self.files) - shown} more unreadable images"
                       + (f" (all in {where})" if where else ""))
        return out


class SkippingFiles(Dataset):
    """``dataset`` with each sample whose file is unreadable (:class:`ImageError`) replaced
    by an :class:`Unreadable` marker, so that DataLoader workers hand the failure back
    instead of dying."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return self.dataset[i]
        except ImageError as err:
            return Unreadable(int(i), str(err.path or "?"), str(err.reason))


def _collate(items: list) -> tuple:
    """A batch of readable samples (default collation), their indices, and the markers."""
    from torch.utils.data import default_collate

    good = [(i, item) for i, item in items if not isinstance(item, Unreadable)]
    bad = [item for _, item in items if isinstance(item, Unreadable)]
    samples = default_collate([item for _, item in good]) if good else None
    return samples, torch.tensor([i for i, _ in good], dtype=torch.long), bad


class _Indexed(Dataset):
    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return int(i), self.dataset[i]


def read_batches(dataset, batch_size: int, unreadable: Optional[UnreadableFiles] = None, *,
                 sampler=None, workers: Optional[int] = 0, drop_last: bool = False,
                 pin_memory: bool = False, skip_empty: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches of a file-backed data set, decoded by DataLoader workers, with unreadable files
    skipped under ``unreadable``'s policy (:class:`UnreadableFiles`).

    Args:
        dataset: yields ``(uint8 (3, S, S) image, target)`` and raises :class:`ImageError`
            for a file it cannot read.
        batch_size: samples per batch before skipping (a batch with skipped files is smaller;
            a batch whose every file is unreadable is left out).
        unreadable: where skipped files are recorded; ``None``: strict, as
            ``UnreadableFiles(len(dataset), 0)``.
        sampler: the indices to read, in order. Default: all, in order.
        workers: DataLoader worker processes (``None``: :func:`loader_workers`).
        drop_last, pin_memory: as in ``torch.utils.data.DataLoader``.
        skip_empty: leave out a batch whose every file is unreadable; ``False``: raise
            instead (DDP ranks must take the same number of steps).

    Yields:
        ``(images, targets, indices)``: the collated readable samples and their indices into
        ``dataset``.

    Raises:
        TooManyUnreadable: past the threshold (or at the first unreadable file when strict).
    """
    from torch.utils.data import DataLoader

    unreadable = unreadable if unreadable is not None else UnreadableFiles(len(dataset), 0.0)
    loader = DataLoader(_Indexed(SkippingFiles(dataset)), batch_size=batch_size, sampler=sampler,
                        num_workers=loader_workers(workers), collate_fn=_collate,
                        drop_last=drop_last, pin_memory=pin_memory)
    for samples, indices, bad in loader:
        for b in bad:
            unreadable.add(b.path, b.reason)
        if samples is None:
            if skip_empty:
                continue
            raise TooManyUnreadable(f"every image of a batch of {len(bad)} is unreadable "
                                    f"(first: {bad[0].path}: {bad[0].reason}); under torchrun "
                                    "each process must take every step: fix or remove the files")
        images, targets = samples
        yield images, targets, indices
