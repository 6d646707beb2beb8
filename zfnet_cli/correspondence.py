"""Correspondence analysis (Zeiler & Fergus 2014, §4.3, Fig 8 and Table 1): does the network
relate the same object part across different images?

Occlude the same part (say the left eye) in N images of one class. At layer l, the feature
change of image i is ``eps_i = x_i - x~_i`` (before minus after occlusion). If the network
"knows" the part, these changes agree in sign across images. The paper's measure is

    Delta_l = sum over pairs i != j of H(sign(eps_i), sign(eps_j)),

H the Hamming distance. Here it is normalised by the number of ordered pairs N(N-1) and the
feature length D, so Delta lies in [0, 1]: the fraction of feature signs on which two images'
changes disagree, averaged over pairs (lower = more consistent). ``sign(0) = 0`` counts as its
own value (an unchanged, e.g. ReLU-zero, feature agrees only with another unchanged one).
"""
from __future__ import annotations

from typing import Sequence

import torch


def sign_consistency(eps: torch.Tensor) -> float:
    """Normalised Delta for (N, D) feature changes: mean over ordered pairs i != j of the
    fraction of the D signs that differ. Needs N >= 2."""
    if eps.dim() != 2 or eps.shape[0] < 2:
        raise ValueError(f"eps must be (N, D) with N >= 2 images, got {tuple(eps.shape)}")
    s = torch.sign(eps)
    n, d = s.shape
    total = 0.0
    for v in (-1.0, 0.0, 1.0):  # pairs agreeing on value v, counted with one matrix product
        m = (s == v).double()
        total += float((m @ m.T).sum() - m.sum())  # minus the i == j diagonal
    agree = total / (n * (n - 1) * d)
    return 1.0 - agree


def square_mask(centre: Sequence[float], size: int, height: int, width: int) -> tuple[int, int, int, int]:
    """A ``size`` x ``size`` square centred on ``centre`` = (cy, cx), shifted to lie inside the
    image: (y0, x0, y1, x1), half-open."""
    size = min(size, height, width)
    y0 = int(round(centre[0] - size / 2))
    x0 = int(round(centre[1] - size / 2))
    y0 = min(max(y0, 0), height - size)
    x0 = min(max(x0, 0), width - size)
    return y0, x0, y0 + size, x0 + size


def occlude_regions(images: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]],
                    fill: torch.Tensor) -> torch.Tensor:
    """Copy of (N, 3, H, W) ``images`` with region ``boxes[i]`` = (y0, x0, y1, x1) of image i set
    to ``fill`` (broadcastable to (3, H, W), same units as the images)."""
    out = images.clone()
    fill = fill.to(images.dtype).expand(images.shape[1:])
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        out[i, :, y0:y1, x0:x1] = fill[:, y0:y1, x0:x1]
    return out
