"""PASCAL VOC 2012 image classification (paper §5.2, Table 6) and its metric, average precision.

Layout (torchvision's ``VOCDetection`` download folder)::

    ROOT/VOCdevkit/VOC2012/JPEGImages/2008_000008.jpg
    ROOT/VOCdevkit/VOC2012/Annotations/2008_000008.xml
    ROOT/VOCdevkit/VOC2012/ImageSets/Main/{train,val,trainval}.txt

Paper §5.2, Table 6: a 20-way softmax trained on train+val, mean AP 79.0 on the VOC 2012 test
set, whose labels are not public (only the evaluation server has them). For a local number, train
on ``train`` and evaluate on ``val``; ``trainval`` is the paper's training set.

Labels. Each image has a multi-hot float32 (20,) target from its XML annotation (every
``<object>``'s own ``<name>``; the ``<name>`` of person-layout ``<part>`` elements is ignored).
Difficult objects follow the VOC classification convention (the devkit's per-class files
``ImageSets/Main/<class>_<split>.txt`` mark such images 0): a class counts as present (1) when
the image has at least one non-difficult instance of it; an image whose only instances of a
class are difficult gets 0 for it and ``True`` in :attr:`VOC2012Classification.difficult`,
the mask that :func:`mean_average_precision` takes as ``ignore`` so that these entries count as
neither positives nor negatives, as in the official evaluation.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch.utils.data import Dataset

from zfnet_cli.data.imagenet import DataLayoutError
from zfnet_cli.data.images import load_image

LAYOUT = "ROOT/VOCdevkit/VOC2012/{JPEGImages,Annotations,ImageSets/Main}"
SPLITS = ("train", "val", "trainval")
# The standard VOC class order (the devkit's VOCopts.classes); a target index is a position here.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
_INDEX = {name: k for k, name in enumerate(VOC_CLASSES)}


def _error(problem: str) -> DataLayoutError:
    return DataLayoutError(f"expected PASCAL VOC 2012 layout {LAYOUT}; {problem}")


def _find_year_folder(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012``, ``root/VOC2012`` (root = ``VOCdevkit/``) or ``root`` itself
    when it is named ``VOC2012`` or holds ``Annotations/``."""
    if not root.is_dir():
        raise _error(f"no folder {root}")
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if candidate.is_dir():
            return candidate
    if root.name == "VOC2012" or (root / "Annotations").is_dir():
        return root
    archives = sorted(p.name for p in root.glob("VOCtrainval*.tar"))
    hint = f" (found {root / archives[0]}: extract it there)" if archives else ""
    raise _error(f"no folder {root / 'VOCdevkit' / 'VOC2012'} nor {root / 'VOC2012'}{hint}")


def parse_annotation(path: Union[str, Path]) -> tuple[np.ndarray, np.ndarray]:
    """The classification labels of one VOC XML annotation.

    Returns:
        ``(present, difficult)``: two bool arrays (20,) in :data:`VOC_CLASSES` order.
        ``present[c]``: the image has a non-difficult instance of class ``c``;
        ``difficult[c]``: it has instances of ``c``, all of them marked ``<difficult>1``.

    Raises:
        DataLayoutError: the file is not well-formed XML or names an unknown class.
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise _error(f"{path}: not a readable XML annotation ({err})") from None
    any_instance = np.zeros(len(VOC_CLASSES), bool)
    present = np.zeros(len(VOC_CLASSES), bool)
    for obj in tree.getroot().findall("object"):
        name = (obj.findtext("name") or "").strip()  # the object's own <name>, not a <part>'s
        if name not in _INDEX:
            raise _error(f"{path}: unknown object name {name!r} (expected one of the 20 VOC "
                         f"classes)")
        k = _INDEX[name]
        any_instance[k] = True
        # <difficult> is absent from some annotations (e.g. action-only objects): not difficult
        if (obj.findtext("difficult") or "0").strip() != "1":
            present[k] = True
    return present, any_instance & ~present


class VOC2012Classification(Dataset):
    """One split of PASCAL VOC 2012 as a 20-class multi-label classification set (Table 6).

    Args:
        root: the folder holding ``VOCdevkit/VOC2012/`` (torchvision's layout), or
            ``VOCdevkit/`` itself, or the ``VOC2012/`` folder itself.
        split: ``"train"``, ``"val"`` or ``"trainval"``: the image ids listed in
            ``ImageSets/Main/<split>.txt``.
        resize: S, the side of the square images are brought to (short side resized to S,
            centre crop, paper §3).

    Attributes:
        classes: :data:`VOC_CLASSES`, the standard order.
        ids: the image ids of the split file, in its order.
        targets: float32 tensor (N, 20), the multi-hot labels (1: a non-difficult instance).
        difficult: bool tensor (N, 20), classes present only as difficult instances (their
            target is 0); pass it as ``ignore`` to :func:`mean_average_precision`.

    All XML annotations are read when the set is made (about a second for the 11,540 images of
    ``trainval``), so that ``targets`` is there for evaluation without loading any image.

    Raises:
        ValueError: an unknown ``split``.
        DataLayoutError: (one line, naming the expected layout) no ``root``, no ``VOC2012``
            folder, no ``JPEGImages``/``Annotations``/``ImageSets/Main`` folder, no or an empty
            split file, ids without their ``.jpg`` or ``.xml``, an unreadable annotation.

    >>> ds = VOC2012Classification("/data", "val", resize=256)   # doctest: +SKIP
    >>> image, target = ds[0]; image.shape, target.shape         # doctest: +SKIP
    (torch.Size([3, 256, 256]), torch.Size([20]))
    """

    def __init__(self, root: Union[str, Path], split: str = "train", resize: int = 256) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown VOC split {split!r}; expected one of {SPLITS}")
        self.root = Path(root)
        self.split = split
        self.resize = int(resize)
        self.classes = list(VOC_CLASSES)

        base = _find_year_folder(self.root)
        self.image_dir = base / "JPEGImages"
        self.annotation_dir = base / "Annotations"
        for folder in (self.image_dir, self.annotation_dir, base / "ImageSets" / "Main"):
            if not folder.is_dir():
                raise _error(f"no folder {folder}")
        split_file = base / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise _error(f"no split file {split_file}")
        # one id per line; the per-class files add a column, so take the first word only
        self.ids = [line.split()[0] for line in split_file.read_text().splitlines()
                    if line.strip()]
        if not self.ids:
            raise _error(f"{split_file} lists no image ids")

        for folder, ending in ((self.image_dir, ".jpg"), (self.annotation_dir, ".xml")):
            missing = [i for i in self.ids if not (folder / f"{i}{ending}").is_file()]
            if missing:
                raise _error(f"{len(missing)} id(s) of {split_file.name} have no "
                             f"{folder / (missing[0] + ending)} (first of them)")

        present, difficult = zip(*(parse_annotation(self.annotation_dir / f"{i}.xml")
                                   for i in self.ids))
        self.targets = torch.from_numpy(np.stack(present).astype(np.float32))  # (N, 20)
        self.difficult = torch.from_numpy(np.stack(difficult))  # (N, 20) bool

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(image, target)``: uint8 (3, S, S) RGB and the float32 (20,) multi-hot."""
        return load_image(self.image_dir / f"{self.ids[i]}.jpg", self.resize), self.targets[i]

    def __repr__(self) -> str:
        return (f"VOC2012Classification(root={str(self.root)!r}, split={self.split!r}, "
                f"resize={self.resize}, samples={len(self)})")


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def average_precision(scores, labels, ignore=None) -> float:
    """Average precision of one class, the VOC 2010+ definition: the area under the
    interpolated precision-recall curve, over all points (no 11-point sampling).

    Rank the items by decreasing score (ties keep their input order, as the devkit's stable
    sort does); precision and recall after each item; precision made monotone,
    ``p_interp(r) = max over r' >= r of p(r')``; AP = sum over the steps where recall rises of
    (rise) x ``p_interp``. Differs from scikit-learn's ``average_precision_score``, which does not
    interpolate and groups tied scores.

    Args:
        scores: (N,) real scores, higher = more confident the class is present.
        labels: (N,) the truth; entries > 0 are positives (bool, 0/1 or the devkit's -1/0/1).
        ignore: optional (N,) bool; these items are removed before ranking (VOC: images where
            the class is present only as difficult instances).

    Returns:
        AP in [0, 1]; ``nan`` when there is no positive.

    >>> average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [0, 1, 0, 1, 1])
    0.6
    """
    scores, labels = _numpy(scores).astype(np.float64), _numpy(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"average_precision wants scores (N,) and labels (N,), got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    positive = labels > 0
    if ignore is not None:
        keep = ~_numpy(ignore).astype(bool)
        if keep.shape != scores.shape:
            raise ValueError(f"ignore must be (N,) = {tuple(scores.shape)}, got {keep.shape}")
        scores, positive = scores[keep], positive[keep]
    n_positive = int(positive.sum())
    if n_positive == 0:
        return float("nan")
    hit = positive[np.argsort(-scores, kind="stable")]
    tp = np.cumsum(hit)
    precision = tp / np.arange(1, len(hit) + 1)
    recall = tp / n_positive
    # interpolate: the best precision at this recall or any higher one
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    rise = np.diff(recall, prepend=0.0)  # > 0 exactly at the positives
    return float(np.sum(rise * precision))


def mean_average_precision(scores, labels, ignore=None) -> tuple[list[float], float]:
    """Per-class :func:`average_precision` over the columns of ``scores`` and their mean
    (Table 6 reports the 20 per-class APs and their mean).

    Args:
        scores: (N, C) scores.
        labels: (N, C) truth, entries > 0 are positives (e.g. ``VOC2012Classification.targets``).
        ignore: optional (N, C) bool mask of entries left out of their class's ranking
            (``VOC2012Classification.difficult``).

    Returns:
        ``(per_class, mean)``: C floats (``nan`` for a class without positives) and the mean over
        the classes that have positives (``nan`` if none has).
    """
    scores, labels = _numpy(scores), _numpy(labels)
    if scores.ndim != 2 or labels.shape != scores.shape:
        raise ValueError(f"mean_average_precision wants scores (N, C) and labels (N, C), got "
                         f"{tuple(scores.shape)} and {tuple(labels.shape)}")
    if ignore is not None:
        ignore = _numpy(ignore)
        if ignore.shape != scores.shape:
            raise ValueError(f"ignore must be (N, C) = {tuple(scores.shape)}, got "
                             f"{tuple(ignore.shape)}")
    per_class = [average_precision(scores[:, c], labels[:, c],
                                   None if ignore is None else ignore[:, c])
                 for c in range(scores.shape[1])]
    defined = [ap for ap in per_class if not np.isnan(ap)]
    return per_class, float(np.mean(defined)) if defined else float("nan")
