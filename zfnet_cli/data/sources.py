"""Which data set a config means: the functions that load the splits and the mean image of a
:class:`~zfnet_cli.schemas.DataConfig` (defined beside the other configs)."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch


from zfnet_cli.data.images import UnreadableFiles, loader_workers
from zfnet_cli.schemas import DataConfig


SPLITS = ("train", "val", "test")


def load_split(cfg: DataConfig, split: str, *, progress: bool = True):
    """The ``split`` of the data set ``cfg`` names, as a dataset of ``(uint8 (3,S,S), label)``
    with a ``classes`` list (see :mod:`zfnet_cli.data`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {SPLITS}")
    if cfg.name == "embedded":
        from zfnet_cli.data.embedded import load_embedded

        per_class = {"train": cfg.train_per_class, "val": cfg.val_per_class,
                     "test": cfg.test_per_class}[split]
        return load_embedded(split, image_size=cfg.image_size, per_class=per_class,
                             held_out=cfg.held_out, use=cfg.use, class_set=cfg.class_set,
                             seed=cfg.seed,
                             cache_dir=cfg.cache_dir, workers=loader_workers(cfg.workers),
                             progress=progress)
    if cfg.name == "imagenet":
        from zfnet_cli.data.imagenet import DataLayoutError, ImageFolderData

        if not cfg.root:
            raise DataLayoutError("data=imagenet needs data.root=DIR with DIR/train/<wnid>/*.JPEG "
                                  "and DIR/val/<wnid>/*.JPEG")
        if split == "test":
            raise ValueError("the ImageNet layout has no test split here (use val)")
        return ImageFolderData(cfg.root, split, resize=cfg.image_size)
    if cfg.name == "packed":
        from zfnet_cli.data.packed import PackedData, PackError

        if not cfg.root:
            raise PackError("data=packed needs data.root=DIR, a folder written by "
                            "`zfnet prepare imagenet ROOT`")
        data = PackedData(cfg.root, split)
        if data.image_size != cfg.image_size:
            raise ValueError(f"data.image_size={cfg.image_size} but the pack {cfg.root} holds "
                             f"{data.image_size}x{data.image_size} images; set "
                             f"data.image_size={data.image_size} (or prepare again with that size)")
        return data
    if cfg.name == "folder":
        from zfnet_cli.data.images import PhotoFolder

        if not cfg.root:
            raise ValueError("data=folder needs data.root=DIR, a folder of your photos (flat, or "
                             "one sub-folder per class)")
        return PhotoFolder(cfg.root, resize=cfg.image_size)  # no splits: every split is DIR
    raise ValueError(f"unknown data.name '{cfg.name}'; expected 'embedded', 'imagenet', 'packed' "
                     f"or 'folder'")


def image_set(data: DataConfig, split: str) -> dict:
    """What a run scanned, for titles, pages and JSON: a folder of photos is that folder (it
    has no splits: ``split`` is ``None``), any other data set its split.

    Returns:
        dict: ``{"split": ..., "folder": ...}`` and ``"text"``, e.g. ``"the folder photos/"``
        or ``"the embedded val split"``.

    Example:
        >>> image_set(DataConfig(name="folder", root="photos"), "val")["text"]
        'the folder photos'
    """
    if data.name == "folder":
        return {"split": None, "folder": str(data.root), "text": f"the folder {data.root}"}
    return {"split": split, "folder": None, "text": f"the {data.name} {split} split"}


def for_model(data: Optional[DataConfig], trained: DataConfig) -> DataConfig:
    """The data a command that looks inside a trained model reads: ``data`` where given, else
    the data the model was trained on (``trained``). A folder of photos (``data=folder``) is
    read the way the model reads its images: ``trained``'s image size, crop and mean, with the
    folder as the root."""
    if data is None:
        return trained
    if data.name == "folder":
        return replace(trained, name="folder", root=data.root)
    return data


def mean_image(cfg: DataConfig, train_set, *, progress: bool = True,
               unreadable=None) -> torch.Tensor:
    """The mean the inputs are centred with (paper §3: the per-pixel mean over all training
    images), float32 (3, S, S), or (3, 1, 1) with ``mean=channel``. Computed once; file-based
    data caches it in ``cache_dir`` keyed by the data set; its unreadable files are skipped
    and recorded in ``unreadable`` (:class:`~zfnet_cli.data.images.UnreadableFiles`; ``None``:
    under ``cfg.max_broken``)."""
    if cfg.mean not in ("image", "channel"):
        raise ValueError(f"data.mean must be 'image' or 'channel', got '{cfg.mean}'")
    if hasattr(train_set, "mean_image"):  # a pack stores the mean of its train images
        mean = train_set.mean_image
    elif hasattr(train_set, "images"):  # in memory: a pass over the tensor is instant
        mean = train_set.images.double().mean(dim=0).float()
    else:
        from zfnet_cli.data.imagenet import compute_mean_image

        key = hashlib.sha1(f"{Path(cfg.root).resolve()}|{cfg.image_size}".encode()).hexdigest()[:12]
        cache = Path(cfg.cache_dir) / f"mean_{cfg.name}_{key}.pt"
        if unreadable is None:
            unreadable = UnreadableFiles(len(train_set), cfg.max_broken, "train")
        mean = compute_mean_image(train_set, cache, workers=cfg.workers, progress=progress,
                                  unreadable=unreadable)
    return mean.mean(dim=(1, 2), keepdim=True) if cfg.mean == "channel" else mean
