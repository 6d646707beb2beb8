"""ImageNet as users have it, with the paper's fixed preprocessing (§3).

Layout (labels are indices into the sorted wnid folder names, the usual ILSVRC order)::

    ROOT/train/<wnid>/*.JPEG
    ROOT/val/<wnid>/*.JPEG

That is both the plain ImageFolder layout and torchvision's ``ImageNet`` root, which also
holds the devkit tarball ``ILSVRC2012_devkit_t12.tar.gz`` and, once torchvision has parsed it,
``meta.bin``. Class names (wnid -> human name) come from ``meta.bin``, else from the devkit's
``data/meta.mat`` (read here by :func:`read_mat`, no SciPy needed); a plain ImageFolder tree
has no names and its wnids stand in for them (:func:`read_meta`).

Paper §3: "Each RGB image was preprocessed by resizing the smallest dimension to 256, cropping
the center 256x256 region, subtracting the per-pixel mean (across all images)". The first two
steps happen here, per image, on the CPU (:class:`ImageFolderData`); the mean image is computed
once by :func:`compute_mean_image` and subtracted per batch on the device by
:class:`zfnet_cli.data.transforms.BatchPreprocess`, together with the random 224x224 crop and flip.
"""
from __future__ import annotations

import functools
import math
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from zfnet_cli.data.images import LabelledImageFiles, read_batches

LAYOUT = "ROOT/{train,val}/<wnid>/*.JPEG"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class DataLayoutError(ValueError):
    """The folder on disk does not have the expected layout; the message is one line."""


def _layout_error(problem: str) -> DataLayoutError:
    return DataLayoutError(f"expected ImageFolder layout {LAYOUT}; {problem}")


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``split_dir``."""
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


# ---------------------------------------------------------------- torchvision's ImageNet root

META_FILE = "meta.bin"  # torchvision: torch.save((wnid_to_classes, val_wnids), ROOT / META_FILE)
DEVKIT_FILE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_META = "ILSVRC2012_devkit_t12/data/meta.mat"
DEVKIT_VAL = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"


@dataclass(frozen=True)
class ImageNetMeta:
    """What torchvision's ``meta.bin`` holds.

    Attributes:
        wnid_to_classes: wnid -> its names, most common first (``("tench", "Tinca tinca")``),
            for the 1000 ILSVRC2012 classes.
        val_wnids: the wnid of each validation image, in file-name order.
        source: the file it was read from (``meta.bin`` or the devkit tarball).
    """

    wnid_to_classes: dict[str, tuple[str, ...]]
    val_wnids: list[str]
    source: Path

    def name(self, wnid: str) -> str:
        """The human name of ``wnid`` (the first of its names, as torchvision's weights list
        them), or the wnid itself when it is not an ILSVRC2012 class."""
        names = self.wnid_to_classes.get(wnid)
        return names[0] if names else wnid


def read_meta(root: Union[str, Path]) -> Optional[ImageNetMeta]:
    """The class names of torchvision's ImageNet root ``root``: ``root/meta.bin`` when present,
    else ``root/ILSVRC2012_devkit_t12.tar.gz`` parsed as torchvision's ``parse_devkit_archive``
    does (the synsets without children of ``data/meta.mat``; the validation labels of
    ``data/ILSVRC2012_validation_ground_truth.txt``, 1-based ILSVRC2012 ids), without writing
    ``meta.bin``. ``None`` for a plain ImageFolder tree (neither file).

    Raises:
        DataLayoutError: a ``meta.bin`` or devkit tarball that cannot be read (one line).
    """
    root = Path(root)
    for path, parse in ((root / META_FILE, _read_meta_bin), (root / DEVKIT_FILE, parse_devkit)):
        if path.is_file():
            stat = path.stat()
            return parse(path, stat.st_size, stat.st_mtime_ns)
    return None


@functools.lru_cache(maxsize=8)
def _read_meta_bin(path: Path, size: int = 0, mtime: int = 0) -> ImageNetMeta:
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True)
        wnid_to_classes, val_wnids = meta
        wnid_to_classes = {str(w): tuple(str(n) for n in names)
                           for w, names in wnid_to_classes.items()}
        val_wnids = [str(w) for w in val_wnids]
    except Exception as err:
        what = f"{type(err).__name__}: {err}".splitlines()[0]
        raise DataLayoutError(f"{path} is not torchvision's ImageNet meta file (a saved "
                              f"(wnid_to_classes, val_wnids) pair; {what}); "
                              f"delete it, or recreate it with "
                              f"torchvision.datasets.imagenet.parse_devkit_archive") from None
    return ImageNetMeta(wnid_to_classes, val_wnids, path)


@functools.lru_cache(maxsize=8)
def parse_devkit(path: Union[str, Path], size: int = 0, mtime: int = 0) -> ImageNetMeta:
    """Class names and validation labels from the ILSVRC2012 devkit tarball (see
    :func:`read_meta`). ``size`` and ``mtime`` only key the cache. Unlike torchvision, the
    tarball's MD5 is not checked (a file that does not parse is an error anyway).

    Raises:
        DataLayoutError: not a tarball, a member missing, or a ``meta.mat`` without the
            ``synsets`` struct array of the devkit.
    """
    path = Path(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            mat = tar.extractfile(DEVKIT_META).read()
            truth = tar.extractfile(DEVKIT_VAL).read().decode("ascii")
        synsets = read_mat(mat)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        idx_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
        wnid_to_classes = {str(s["WNID"]): tuple(str(s["words"]).split(", ")) for s in leaves}
        val_wnids = [idx_to_wnid[int(i)] for i in truth.split()]
    except (tarfile.TarError, OSError, EOFError, KeyError, TypeError, ValueError, AttributeError,
            struct.error, zlib.error) as err:
        what = f"{type(err).__name__}: {err}".splitlines()[0]
        raise DataLayoutError(f"cannot read the ImageNet devkit {path} ({what}); expected "
                              f"{DEVKIT_META} and {DEVKIT_VAL} inside, or put torchvision's "
                              f"{META_FILE} beside it") from None
    return ImageNetMeta(wnid_to_classes, val_wnids, path)


# MATLAB level-5 MAT-files ("MAT-File Format", The MathWorks): a 128-byte header, then data
# elements, each an 8-byte tag (type, byte count) and its data padded to 8 bytes, or a "small"
# element packed into 8 bytes. The devkit's meta.mat holds one struct array, ``synsets``.
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8",
              13: "u8", 16: "u1", 17: "u2", 18: "u4"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_CELL, _MX_STRUCT, _MX_CHAR = 1, 2, 4
_MX_NUMERIC = range(6, 16)  # double, single, int8 .. uint64


def _mat_element(data: bytes, pos: int, order: str) -> tuple[int, bytes, int]:
    """(type, data bytes, position of the next element) of the element at ``pos``."""
    if pos + 8 > len(data):
        raise ValueError("truncated MAT-file")
    first, second = struct.unpack_from(order + "II", data, pos)
    if first >> 16:  # small element: byte count in the upper half, data in the next 4 bytes
        return first & 0xFFFF, data[pos + 4:pos + 4 + (first >> 16)], pos + 8
    start, end = pos + 8, pos + 8 + second
    if end > len(data):
        raise ValueError("truncated MAT-file")
    # compressed elements are not padded; the others end on an 8-byte boundary
    return first, data[start:end], end if first == _MI_COMPRESSED else start + (second + 7) // 8 * 8


def _mat_numbers(typ: int, raw: bytes, order: str) -> list:
    if typ not in _MI_DTYPES:
        raise ValueError(f"unsupported MAT data type {typ}")
    return np.frombuffer(raw, dtype=np.dtype(order + _MI_DTYPES[typ])).tolist()


def _mat_array(body: bytes, order: str):
    """One miMATRIX element's value (see :func:`read_mat`), and its name."""
    if not body:  # an empty matrix may be written as a bare tag
        return "", []
    _, flags, pos = _mat_element(body, 0, order)
    cls = _mat_numbers(6, flags[:4], order)[0] & 0xFF
    typ, dims, pos = _mat_element(body, pos, order)
    dims = _mat_numbers(typ, dims, order)
    _, name, pos = _mat_element(body, pos, order)
    name, count = name.decode("ascii"), int(np.prod(dims))
    if cls == _MX_CELL:
        items = []
        for _ in range(count):
            _, sub, pos = _mat_element(body, pos, order)
            items.append(_mat_array(sub, order)[1])
        return name, items
    if cls == _MX_STRUCT:
        typ, width, pos = _mat_element(body, pos, order)
        width = _mat_numbers(typ, width, order)[0]
        _, names, pos = _mat_element(body, pos, order)
        fields = [names[i:i + width].split(b"\0")[0].decode("ascii")
                  for i in range(0, len(names), width)]
        records = []
        for _ in range(count):  # per element, each field's value in field order
            record = {}
            for f in fields:
                _, sub, pos = _mat_element(body, pos, order)
                record[f] = _mat_array(sub, order)[1]
            records.append(record)
        return name, records
    if cls == _MX_CHAR:
        typ, raw, pos = _mat_element(body, pos, order) if pos < len(body) else (16, b"", pos)
        codec = {16: "utf-8", 2: "latin-1", 1: "latin-1", 17: "utf-16", 4: "utf-16",
                 18: "utf-32", 6: "utf-32"}.get(typ)
        if codec is None:
            raise ValueError(f"unsupported MAT character type {typ}")
        if codec in ("utf-16", "utf-32"):
            codec += "-le" if order == "<" else "-be"
        text = raw.decode(codec)
        rows = dims[0] if dims else 0
        # column-major: character (r, c) is text[r + rows * c]
        return name, text if rows <= 1 else [text[r::rows] for r in range(rows)]
    if cls in _MX_NUMERIC:
        values = []
        if pos < len(body):
            typ, raw, pos = _mat_element(body, pos, order)
            values = _mat_numbers(typ, raw, order)  # the real part; MATLAB's column-major order
        return name, values[0] if len(values) == 1 else values
    raise ValueError(f"unsupported MATLAB array class {cls}")


def read_mat(data: bytes) -> dict[str, object]:
    """The variables of a MATLAB level-5 MAT-file (v5 / v6 / v7, compressed or not), enough of
    the format for the ImageNet devkit's ``meta.mat`` without SciPy.

    Values come back as Python objects: a struct array -> a list of dicts (elements in
    MATLAB's column-major order), a cell array -> a list, a one-row char array -> a str
    (several rows: a list of str), a numeric array -> a number when it holds one value, else a
    flat list in column-major order (``[]`` when empty; imaginary parts are dropped).

    Raises:
        ValueError: not a level-5 MAT-file (a v7.3 file is HDF5: save it with ``-v7``), or one
            holding sparse arrays or objects.

    >>> read_mat(open("meta.mat", "rb").read())["synsets"][0]["WNID"]  # doctest: +SKIP
    'n02119789'
    """
    if len(data) < 128:
        raise ValueError("not a MAT-file (shorter than its 128-byte header)")
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if order is None or struct.unpack_from(order + "H", data, 124)[0] != 0x0100:
        raise ValueError("not a level-5 MAT-file (a MATLAB v7.3 file is HDF5: save it with -v7)")
    out: dict[str, object] = {}
    pos = 128
    while pos + 8 <= len(data):
        typ, body, pos = _mat_element(data, pos, order)
        if typ == _MI_COMPRESSED:
            typ, body, _ = _mat_element(zlib.decompress(body), 0, order)
        if typ == _MI_MATRIX:
            name, value = _mat_array(body, order)
            out[name] = value
    return out


class ImageFolderData(LabelledImageFiles):
    """One split of an ImageFolder tree or of torchvision's ImageNet root, each image resized
    and centre-cropped (paper §3).

    Args:
        root: the folder holding ``train/`` and ``val/`` (and, in torchvision's layout,
            ``meta.bin`` and / or ``ILSVRC2012_devkit_t12.tar.gz``, which give the class names).
        split: sub-folder name, ``"train"`` or ``"val"``.
        resize: S, the side of the square the images are brought to (paper: 256).
        extensions: accepted file-name endings, compared case-insensitively. Hidden files
            (``.DS_Store``) and files with other endings are skipped; class folders are not
            searched recursively.

    Attributes:
        classes: sorted wnid folder names; a label is an index into this list.
        class_names: the human name of each class (``"tench"`` for ``n01440764``; the first of
            its names, as torchvision's weights list them) from :func:`read_meta`; a wnid stands
            for its own name where there is none (plain ImageFolder tree, unknown wnid).
        meta: the :class:`ImageNetMeta` the names came from, or ``None``.
        samples: ``(path, label)`` pairs, sorted by class then file name; ``targets`` their
            labels (see :class:`~zfnet_cli.data.images.LabelledImageFiles`).

    Raises:
        DataLayoutError: no ``root`` or ``root/split`` folder, no class folders, a class folder
            without images, or (for a split other than ``train`` when ``root/train`` exists)
            class folders that differ from the training ones, which would shift the labels;
            an unreadable ``meta.bin`` or devkit tarball.

    >>> ds = ImageFolderData("/data/imagenet", "val")      # doctest: +SKIP
    >>> image, label = ds[0]; image.shape, image.dtype       # doctest: +SKIP
    (torch.Size([3, 256, 256]), torch.uint8)
    """

    def __init__(
        self,
        root: Union[str, Path],
        split: str,
        resize: int = 256,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        super().__init__(resize)
        self.root = Path(root)
        self.split = split
        self.extensions = tuple(e.lower() for e in extensions)

        if not self.root.is_dir():
            raise _layout_error(f"no folder {self.root}")
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise _layout_error(f"no folder {split_dir}")
        self.classes = _class_folders(split_dir)
        if not self.classes:
            raise _layout_error(f"no class folders in {split_dir}")

        train_dir = self.root / "train"
        if split != "train" and train_dir.is_dir():
            train_classes = _class_folders(train_dir)
            if train_classes != self.classes:
                only_here = sorted(set(self.classes) - set(train_classes))
                only_train = sorted(set(train_classes) - set(self.classes))
                raise _layout_error(
                    f"class folders of {split_dir} differ from {train_dir}: "
                    f"{len(only_here)} only in {split} {only_here[:3]}, "
                    f"{len(only_train)} only in train {only_train[:3]}"
                )

        self.meta = read_meta(self.root)
        self.class_names = [self.meta.name(w) if self.meta else w for w in self.classes]

        empty = []
        for label, wnid in enumerate(self.classes):
            with os.scandir(split_dir / wnid) as it:
                files = sorted(
                    e.path for e in it
                    if not e.name.startswith(".") and e.name.lower().endswith(self.extensions)
                    and e.is_file()
                )
            if not files:
                empty.append(wnid)
            self.samples.extend((f, label) for f in files)
        if empty:
            raise _layout_error(
                f"{len(empty)} class folder(s) in {split_dir} without images "
                f"(extensions {', '.join(self.extensions)}): {', '.join(empty[:5])}"
            )

    def __repr__(self) -> str:
        return (f"ImageFolderData(root={str(self.root)!r}, split={self.split!r}, "
                f"resize={self.resize}, classes={len(self.classes)}, samples={len(self)})")


def _mean_key(dataset) -> dict:
    """What a cached mean image depends on: (root, split, number of samples, resize)."""
    root = getattr(dataset, "root", None)
    return {
        "root": str(Path(root).resolve()) if root is not None else None,
        "split": getattr(dataset, "split", None),
        "num_samples": len(dataset),
        "resize": getattr(dataset, "resize", None),
    }


def _load_cached_mean(cache_path: Path, key: dict) -> Optional[torch.Tensor]:
    try:
        stored = torch.load(cache_path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or truncated by an old crash: recompute rather than fail
        return None
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    return stored["mean"]


def _save_atomically(obj, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, then rename it over ``path``
    (:func:`zfnet_cli.files.write_atomic`)."""
    from zfnet_cli.files import write_atomic

    write_atomic(path, lambda f: torch.save(obj, f))


def compute_mean_image(
    dataset,
    cache_path: Union[str, Path, None],
    *,
    batch_size: int = 64,
    workers: Optional[int] = 0,
    progress: bool = True,
    unreadable=None,
) -> torch.Tensor:
    """The per-pixel mean image over every image of ``dataset`` (paper §3), cached on disk.

    Args:
        dataset: yields ``(uint8 (3, S, S) image, label)``; usually an :class:`ImageFolderData`
            on the training split. Its ``root``, ``split`` and ``resize`` attributes (``None``
            when absent) and its length form the cache key.
        cache_path: file to load the mean from when its stored key matches, and to write it to
            (atomically: temporary file + ``os.replace``) otherwise. ``None``: always compute,
            never write.
        batch_size: images per DataLoader batch while summing.
        workers: DataLoader worker processes (0: load in this process; None: what the
            machine has).
        progress: show a tqdm bar.
        unreadable: an :class:`~zfnet_cli.data.images.UnreadableFiles` where unreadable files
            are recorded and skipped under its threshold (``None``: strict, the first one raises
            :class:`~zfnet_cli.data.images.TooManyUnreadable`).

    Returns:
        float32 tensor (3, S, S) with values in 0..255: the mean of pixel (c, y, x) over all
        readable images, summed in float64.

    >>> mean = compute_mean_image(ImageFolderData(root, "train"), root / "mean.pt")  # doctest: +SKIP
    """
    key = _mean_key(dataset)
    cache_path = Path(cache_path) if cache_path is not None else None
    if cache_path is not None and cache_path.is_file():
        mean = _load_cached_mean(cache_path, key)
        if mean is not None:
            return mean
    if len(dataset) == 0:
        raise ValueError("compute_mean_image: the dataset is empty")

    total, count = None, 0
    batches = read_batches(dataset, batch_size, unreadable, workers=workers)
    for images, _, _ in tqdm(batches, desc="mean image", unit="batch", disable=not progress,
                             total=math.ceil(len(dataset) / batch_size)):
        batch_sum = images.to(torch.float64).sum(dim=0)  # (3, S, S)
        total = batch_sum if total is None else total + batch_sum
        count += len(images)
    if total is None:
        raise ValueError("compute_mean_image: no image of the dataset could be read")
    mean = (total / count).to(torch.float32)

    if cache_path is not None:
        _save_atomically({"key": key, "mean": mean}, cache_path)
    return mean
