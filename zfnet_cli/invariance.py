"""Feature invariance (Zeiler & Fergus 2014, §4.4 and Fig 5): how far the features of an image
move when the image is translated vertically, scaled or rotated.

The three transforms of the paper, applied to the whole image (as the paper did), about the
image centre, with the uncovered pixels filled with a given colour (the data set's mean grey):

* ``translate``: shift down by ``amount`` pixels (negative: up); the paper's -60..60 px at 224;
* ``scale``: zoom in by ``amount`` (1 .. 1.8), the centre kept;
* ``rotate``: rotate by ``amount`` degrees counter-clockwise (0 .. 350).

The distance between the original's and the transformed image's feature vectors at a layer is
the Euclidean distance divided by the norm of the original's vector (a relative change, so
layer 1 and layer 7 can share an axis; the paper plots unnormalised distances and does not say
how it scales them).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

TRANSFORMS = ("translate", "scale", "rotate")


def paper_amounts(kind: str, image_size: int, steps: int | None = None) -> list[float]:
    """The amounts Fig 5 sweeps: vertical translation -60..60 px at 224 (scaled to
    ``image_size``), scale 1..1.8, rotation 0..350 degrees."""
    if kind == "translate":
        n = steps or 13
        span = 60.0 * image_size / 224.0
        return torch.linspace(-span, span, n).tolist()
    if kind == "scale":
        return torch.linspace(1.0, 1.8, steps or 9).tolist()
    if kind == "rotate":
        n = steps or 36
        return [350.0 * i / (n - 1) for i in range(n)]
    raise ValueError(f"unknown transform '{kind}'; expected one of {', '.join(TRANSFORMS)}")


def transform_image(image: torch.Tensor, kind: str, amount: float,
                    fill: Sequence[float]) -> torch.Tensor:
    """One Fig 5 transform of a uint8 (3, H, W) image about its centre, bilinear, uncovered
    pixels set to ``fill`` (an RGB colour in 0..255). Returns uint8 (3, H, W)."""
    fill = [float(f) for f in fill]
    if kind == "translate":
        args = dict(angle=0.0, translate=[0, int(round(amount))], scale=1.0)
    elif kind == "scale":
        args = dict(angle=0.0, translate=[0, 0], scale=float(amount))
    elif kind == "rotate":  # torchvision's affine turns clockwise for a positive angle
        args = dict(angle=-float(amount), translate=[0, 0], scale=1.0)
    else:
        raise ValueError(f"unknown transform '{kind}'; expected one of {', '.join(TRANSFORMS)}")
    if kind != "rotate" and amount == (0 if kind == "translate" else 1):
        return image.clone()
    return TF.affine(image, shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR,
                     fill=fill, **args)


def relative_distance(original: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
    """||f(x) - f(x')|| / ||f(x)|| per row of (N, ...) feature tensors (0 where f(x) = 0 and
    nothing changed)."""
    a, b = original.flatten(1).double(), changed.flatten(1).double()
    num = (a - b).norm(dim=1)
    den = a.norm(dim=1)
    return torch.where(den > 0, num / den.clamp_min(1e-30), num)
