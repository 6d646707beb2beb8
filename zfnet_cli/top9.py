"""Fig 2's top-9: the k strongest activations of every feature map, in one streaming pass.

The record of one (image, fmap) is its strongest activation: the max over positions and its
argmax position. One forward per batch gives every requested layer; a running top-k per map
(current best concatenated with the batch's per-map maxima, then the k best) keeps memory at
k x (number of maps), however many images stream by.

Ties are broken deterministically: equal values rank the lower image index first, and within an
image the first maximal position in row-major order wins (``argmax``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from zfnet_cli.deconv import Deconvnet


@dataclass
class TopK:
    """The k strongest records of each of M feature maps of one layer, strongest first
    (k is less than asked when fewer images were scanned).

    Attributes:
        values: (M, k) float, the activation values.
        images: (M, k) int64, global data-set indices of the images.
        positions: (M, k, 2) int64, (y, x) of the activation in the layer's output.
    """

    values: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor


def _merge(best: Optional[tuple], cand: tuple, k: int) -> tuple:
    """Keep the k best of ``best`` and ``cand`` (each (values, images, flat positions), (M, n)):
    value descending, then image index ascending."""
    if best is not None:
        cand = tuple(torch.cat([b, c], dim=1) for b, c in zip(best, cand))
    order = torch.argsort(cand[1], dim=1, stable=True)  # image index ascending ...
    cand = tuple(t.gather(1, order) for t in cand)
    order = torch.argsort(cand[0], dim=1, descending=True, stable=True)[:, :k]  # ... then value
    return tuple(t.gather(1, order) for t in cand)


@torch.no_grad()
def scan_top9(net: Union[Deconvnet, nn.Module], batches: Iterable,
              layers: Optional[Sequence[str]] = None, k: int = 9, *, start: int = 0,
              batches_carry_indices: bool = False,
              progress: bool = False) -> dict[str, TopK]:
    """Find, for every feature map of each requested layer, its k strongest activations over a
    data set (Fig 2: k=9 over the validation set; Fig 4: k=1 over the training set).

    Runs on the model's device (images are moved there); no switches are recorded, so project
    the winners afterwards with :meth:`Deconvnet.project`.

    Args:
        net (Deconvnet or nn.Module): a :class:`~zfnet_cli.deconv.Deconvnet` (its ``point``
            decides where a layer is read), or a model / feature ``nn.Sequential`` to wrap in one.
        batches (iterable): image batches (B, 3, H, W). Each item is a Tensor, or a tuple /
            list whose first element is the images (labels etc. are ignored), or, with
            ``batches_carry_indices=True``, a pair ``(images, indices)`` with ``indices`` (B,)
            the global data-set indices.
        layers (sequence of str, optional): layer names. Default: all of ``net``'s layers.
        k (int, optional): records kept per feature map. Default: 9.
        start (int, optional): global index of the first image when indices are counted.
            Default: 0.
        batches_carry_indices (bool, optional): take indices from the batches instead of
            counting. Default: ``False``.
        progress (bool, optional): show a tqdm progress bar. Default: ``False``.

    Returns:
        dict[str, TopK]: per layer, values (M, k), images (M, k), positions (M, k, 2), on the
        CPU, M the layer's number of feature maps.

    Example:
        >>> from zfnet_cli.model import ModelConfig, ZFNet
        >>> net = ZFNet(ModelConfig(input_size=64, channels=[8, 8, 8, 8, 8])).eval()
        >>> batches = [torch.randn(4, 3, 64, 64) for _ in range(3)]
        >>> top = scan_top9(net, batches, ["conv1", "conv5"])
        >>> top["conv5"].images.shape, top["conv5"].positions.shape
        (torch.Size([8, 9]), torch.Size([8, 9, 2]))

    Reference:
        M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional Networks",
        ECCV 2014, Fig 2 and Fig 4. https://arxiv.org/abs/1311.2901
    """
    deconv = net if isinstance(net, Deconvnet) else Deconvnet(net)
    layers = list(deconv.layers if layers is None else layers)
    if not layers:
        raise ValueError("scan_top9 needs at least one layer")
    for layer in layers:
        deconv._check_layer(layer)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = max(layers, key=deconv.layers.index)
    best: dict[str, Optional[tuple]] = {layer: None for layer in layers}
    widths: dict[str, int] = {}
    offset = start
    for item in tqdm(batches, desc="top9", disable=not progress):
        if batches_carry_indices:
            images, indices = item
            indices = torch.as_tensor(indices, dtype=torch.long).flatten()
            if indices.numel() != images.shape[0]:
                raise ValueError(f"batch of {images.shape[0]} images carries "
                                 f"{indices.numel()} indices")
        else:
            images = item if torch.is_tensor(item) else item[0]
            indices = torch.arange(offset, offset + images.shape[0])
        offset += images.shape[0]
        acts = deconv.forward(images, upto=top, switches=False).activations
        for layer in layers:
            a = acts[layer].flatten(2)  # (B, M, h*w)
            widths[layer] = acts[layer].shape[-1]
            pos = a.argmax(dim=2)  # (B, M), first maximal position
            val = a.gather(2, pos.unsqueeze(2)).squeeze(2)  # (B, M)
            img = indices.to(a.device).unsqueeze(1).expand_as(pos)
            best[layer] = _merge(best[layer], (val.T, img.T, pos.T), k)  # each (M, <=k)
    if best[layers[0]] is None:
        raise ValueError("scan_top9 got no batches")
    out = {}
    for layer in layers:
        val, img, pos = (t.cpu() for t in best[layer])
        w = widths[layer]
        out[layer] = TopK(val, img, torch.stack([pos // w, pos % w], dim=2))
    return out
