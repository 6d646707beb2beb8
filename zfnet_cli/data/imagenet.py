"""ImageNet in the ImageFolder layout, with the paper's fixed preprocessing (§3).

Layout (labels are indices into the sorted wnid folder names, the usual ILSVRC order)::

    ROOT/train/<wnid>/*.JPEG
    ROOT/val/<wnid>/*.JPEG

Paper §3: "Each RGB image was preprocessed by resizing the smallest dimension to 256, cropping
the center 256x256 region, subtracting the per-pixel mean (across all images)". The first two
steps happen here, per image, on the CPU (:class:`ImageFolderData`); the mean image is computed
once by :func:`compute_mean_image` and subtracted per batch on the device by
:class:`zfnet_cli.data.transforms.BatchPreprocess`, together with the random 224x224 crop and flip.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from zfnet_cli.data.images import resize_center_crop
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

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


class ImageFolderData(Dataset):
    """One split of an ImageFolder tree, each image resized and centre-cropped (paper §3).

    Args:
        root: the folder holding ``train/`` and ``val/``.
        split: sub-folder name, ``"train"`` or ``"val"``.
        resize: S, the side of the square the images are brought to (paper: 256).
        extensions: accepted file-name endings, compared case-insensitively. Hidden files
            (``.DS_Store``) and files with other endings are skipped; class folders are not
            searched recursively.

    Attributes:
        classes: sorted wnid folder names; a label is an index into this list.
        samples: ``(path, label)`` pairs, sorted by class then file name.

    Raises:
        DataLayoutError: no ``root`` or ``root/split`` folder, no class folders, a class folder
            without images, or (for a split other than ``train`` when ``root/train`` exists)
            class folders that differ from the training ones, which would shift the labels.

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
        self.root = Path(root)
        self.split = split
        self.resize = int(resize)
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

        self.samples: list[tuple[str, int]] = []
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

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """Returns ``(image, label)``: uint8 (3, S, S) RGB in 0..255 and the class index."""
        path, label = self.samples[i]
        with Image.open(path) as img:
            # convert: greyscale, palette, RGBA (alpha dropped) and CMYK JPEGs all become RGB
            img = resize_center_crop(img.convert("RGB"), self.resize)
            array = np.asarray(img)  # (S, S, 3)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), label

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
    """torch.save to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def compute_mean_image(
    dataset,
    cache_path: Union[str, Path, None],
    *,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
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
        workers: DataLoader worker processes (0: load in this process).
        progress: show a tqdm bar.

    Returns:
        float32 tensor (3, S, S) with values in 0..255: the mean of pixel (c, y, x) over all
        images, summed in float64.

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

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    total = None
    for images, _ in tqdm(loader, desc="mean image", unit="batch", disable=not progress):
        batch_sum = images.to(torch.float64).sum(dim=0)  # (3, S, S)
        total = batch_sum if total is None else total + batch_sum
    mean = (total / len(dataset)).to(torch.float32)

    if cache_path is not None:
        _save_atomically({"key": key, "mean": mean}, cache_path)
    return mean
