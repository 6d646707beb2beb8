"""Fig 2's top-9: the k strongest activations of every feature map, in one streaming pass.

The record of one (image, fmap) is its strongest activation: the max over positions and its
argmax position. One forward per batch gives every requested layer; a running top-k per map
(current best concatenated with the batch's per-map maxima, then the k best) keeps memory at
k x (number of maps), however many images stream by.

Ties are broken deterministically: equal values rank the lower image index first, and within an
image the first maximal position in row-major order wins (``argmax``).

Any model: a plain stack is read by the explicit deconvnet's forward (stopping at the top
requested layer); any other model by a normal forward pass with a :func:`~zfnet_cli.layers.tap`
on each requested module, reduced to its per-map max and argmax inside the hook. A (B, C) layer
(a fully connected one) counts as C maps of 1x1.

Scale out: under ``torchrun`` each rank scans its share of the images (with their global
indices) and :func:`gather_top9` merges the per-rank top-k; since a global top-k record is in its
own rank's top-k and the merge ranks exactly as the streaming merge does, the result is the
one-process result.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from zfnet_cli.deconv import Deconvnet
from zfnet_cli.deconv_graph import GraphDeconvnet, device_dtype
from zfnet_cli.layers import block_names, evaluating, read_once, resolve_layer, tap


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


def _strongest(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(B, M, h, w) or (B, M) activations -> per (image, map) the max (B, M), its first
    row-major argmax (B, M) and the width w."""
    a = t.flatten(2) if t.dim() == 4 else t[:, :, None]  # (B, M, h*w)
    if t.dim() not in (2, 4):
        raise ValueError(f"a layer output of shape {tuple(t.shape)} has no feature maps: "
                         f"choose a layer with (B, C, H, W) or (B, C) outputs")
    pos = a.argmax(dim=2)
    return a.gather(2, pos.unsqueeze(2)).squeeze(2), pos, (t.shape[-1] if t.dim() == 4 else 1)


def _reader(net, layers: Optional[Sequence[str]]
            ) -> tuple[list[str], Callable[[torch.Tensor], dict], Optional[nn.Module]]:
    """The layers to scan and a function images -> {layer: (values, positions, width)}:
    the explicit deconvnet's forward on plain stacks, a tapped forward of the model otherwise
    (then also the model, to be put in eval mode)."""
    deconv = net if isinstance(net, Deconvnet) else None
    if deconv is None and not isinstance(net, GraphDeconvnet):
        try:
            deconv = Deconvnet(net)
        except ValueError:
            deconv = None
        if deconv is not None and layers is not None and not all(l in deconv._end for l in layers):
            deconv = None  # e.g. fc7 of a plain stack: read from the whole model
    if deconv is not None:
        names = list(deconv.layers if layers is None else layers)
        for layer in names:
            deconv._check_layer(layer)
        top = max(names, key=deconv.depth) if names else None

        def read(images):
            acts = deconv.forward(images, upto=top, switches=False).activations
            return {layer: _strongest(acts[layer]) for layer in names}
        return names, read, None
    model = net.model if isinstance(net, GraphDeconvnet) else net
    default = net.layers if isinstance(net, GraphDeconvnet) else block_names(model)
    names = list(default if layers is None else layers)
    found = {layer: resolve_layer(model, layer) for layer in names}
    device, dtype = device_dtype(model)

    def read(images):
        with ExitStack() as stack:
            seen = {layer: stack.enter_context(tap(lay.module, _strongest))
                    for layer, lay in found.items()}
            model(images.to(device=device, dtype=dtype))
        return {layer: read_once(seen[layer], found[layer]) for layer in names}
    return names, read, model


@torch.no_grad()
def scan_top9(net: Union[Deconvnet, GraphDeconvnet, nn.Module], batches: Iterable,
              layers: Optional[Sequence[str]] = None, k: int = 9, *, start: int = 0,
              batches_carry_indices: bool = False,
              progress: bool = False) -> dict[str, TopK]:
    """Find, for every feature map of each requested layer, its k strongest activations over a
    data set (Fig 2: k=9 over the validation set; Fig 4: k=1 over the training set).

    Runs on the model's device (images are moved there), in eval mode (modes restored after);
    no switches are recorded, so project the winners afterwards with the deconvnet's
    ``project`` (:meth:`Deconvnet.project`, :meth:`GraphDeconvnet.project`).

    Args:
        net (Deconvnet, GraphDeconvnet or nn.Module): a :class:`~zfnet_cli.deconv.Deconvnet`
            (its ``point`` decides where a layer is read), a
            :class:`~zfnet_cli.deconv_graph.GraphDeconvnet`, or any model: a plain stack is
            read through the explicit deconvnet, any other model through a forward pass with
            taps on the requested modules.
        batches (iterable): image batches (B, 3, H, W). Each item is a Tensor, or a tuple /
            list whose first element is the images (labels etc. are ignored), or, with
            ``batches_carry_indices=True``, a pair ``(images, indices)`` with ``indices`` (B,)
            the global data-set indices.
        layers (sequence of str, optional): layer names (:func:`~zfnet_cli.layers.resolve_layer`
            names: ``conv5``, ``layer3.1``, ``features.6``). Default: the deconvnet's layers, or
            :func:`~zfnet_cli.layers.block_names` of the model.
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
    layers, read, model = _reader(net, layers)
    if not layers:
        raise ValueError("scan_top9 needs at least one layer")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with ExitStack() as stack:
        if model is not None:
            stack.enter_context(evaluating(model))
        return _scan(read, layers, batches, k, start, batches_carry_indices, progress)


def _scan(read, layers, batches, k, start, batches_carry_indices, progress) -> dict[str, TopK]:
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
        strongest = read(images)
        for layer in layers:
            val, pos, widths[layer] = strongest[layer]  # (B, M) each: max, first argmax
            img = indices.to(val.device).unsqueeze(1).expand_as(pos)
            best[layer] = _merge(best[layer], (val.T, img.T, pos.T), k)  # each (M, <=k)
    if best[layers[0]] is None:
        raise ValueError("scan_top9 got no batches")
    out = {}
    for layer in layers:
        val, img, pos = (t.cpu() for t in best[layer])
        w = widths[layer]
        out[layer] = TopK(val, img, torch.stack([pos // w, pos % w], dim=2))
    return out


def gather_top9(top: Optional[dict[str, TopK]], k: int = 9) -> dict[str, TopK]:
    """Merge the per-rank results of :func:`scan_top9` (each over its share of the images,
    with global indices) into the result one process gives over all of them.

    Call it on every rank of an initialised ``torch.distributed`` process group (a rank that
    scanned no image passes ``None``); every rank gets the merged result. Without a process
    group (or with one rank) ``top`` comes back as it is.

    Args:
        top (dict[str, TopK] or None): this rank's result.
        k (int, optional): records kept per map. Default: 9.

    Returns:
        dict[str, TopK]: the merged top-k per layer, on the CPU.

    Raises:
        ValueError: no rank scanned any image.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        if top is None:
            raise ValueError("scan_top9 got no batches")
        return top
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, top)  # small: k records per map
    parts = [p for p in parts if p is not None]
    if not parts:
        raise ValueError("scan_top9 got no batches on any rank")
    out = {}
    for layer in parts[0]:
        best = None
        for p in parts:
            t = p[layer]
            best = _merge(best, (t.values, t.images, t.positions[..., 0], t.positions[..., 1]), k)
        out[layer] = TopK(best[0], best[1], torch.stack([best[2], best[3]], dim=2))
    return out
