"""Fig 2's pieces, shared by ``zfnet visualize`` and ``zfnet explore``: the layers asked for,
an image set in batches for the streaming top-9 scan, and each top-k record projected and cut,
beside its image patch, at its activation's receptive field.

On any model the deconvnet covers: plain stacks through the paper's explicit switch deconvnet,
any other network through :class:`~zfnet_cli.deconv_graph.GraphDeconvnet`
(:func:`~zfnet_cli.deconv_graph.deconvnet_for` picks). Layers by any name of
:mod:`zfnet_cli.layers` (``conv3``, ``3`` for ``conv3``, ``layer3.1``, ``features.6``).

The cut: each projection and its image patch are cropped to the part of the activation's
receptive field the projection reaches (its non-zero pixels, through the image's own switches;
:func:`reached`), so projection and patch align (paper Fig 2 shows them side by side).

No I/O beyond reading the images of a data set; figures and pages are drawn by the callers.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from zfnet_cli.data.images import UnreadableFiles
from zfnet_cli.data.transforms import center_crop
from zfnet_cli.deconv import Request
from zfnet_cli.deconv_graph import GraphDeconvnet, Projector, deconvnet_for
from zfnet_cli.engine import dataset_batches
from zfnet_cli.files import write_atomic
from zfnet_cli.layers import block_names, describe_layers, resolve_layer
from zfnet_cli.top9 import TopK

__all__ = ["choose_layers", "checked_layers", "layer_shapes", "scan_batches", "images_and_crops",
           "image_classes", "image_files", "receptive_fields", "project_crops", "reached",
           "concentrated",
           "top9_tiles", "plot_fig2"]


# ---------------------------------------------------------------- layers

def _as_name(asked) -> str:
    """A bare number ``3`` is the paper's ``conv3``; anything else is a layer name as it is."""
    return f"conv{asked}" if str(asked).isdigit() else str(asked)


def checked_layers(deconv: Projector, names: Sequence, input_size: int = 224) -> list[str]:
    """The requested layers as names, each checked on ``deconv``; all its default layers
    (``deconv.layers``) when none is asked for.

    Args:
        deconv (Projector): the deconvnet the layers are read and projected through.
        names (sequence of str or int): layer names; a bare number ``3`` means ``conv3``.
        input_size (int, optional): side of the model's input (the graph deconvnet finds a
            layer's shape by a forward pass). Default: 224.

    Returns:
        list[str]: the layer names, in the order asked.

    Raises:
        ValueError: one line naming the unknown layer and what the model has instead.
    """
    if not names:
        return list(deconv.layers)
    out = [_as_name(n) for n in names]
    for name, asked in zip(out, names):
        try:
            deconv.num_maps(name, input_size)
        except ValueError as err:
            if str(asked).isdigit():
                raise ValueError(f"--layer {asked} is not a conv layer of this model (no "
                                 f"conv{asked}); its layers include {', '.join(deconv.layers)} "
                                 f"(any module name works too: `zfnet layers` lists them)"
                                 ) from None
            raise err
    return out


def choose_layers(model: nn.Module, names: Sequence, input_size: int = 224,
                  rule: Optional[str] = None) -> tuple[Projector, list[str]]:
    """The projector for ``model`` under ``rule`` and the layers asked for (see
    :func:`checked_layers`): the explicit switch deconvnet where the rule is the deconvnet and the
    model is a plain stack holding every layer asked for, else the graph deconvnet with the
    rule (:func:`~zfnet_cli.deconv_graph.deconvnet_for`; default rule:
    :func:`~zfnet_cli.deconv_graph.default_rule`). Default layers: every conv stage of a plain
    stack, the blocks (:func:`~zfnet_cli.layers.block_names`) of any other network.

    Args:
        model (nn.Module): any model.
        names (sequence of str or int): layer names (``conv3``, ``3``, ``layer3.1``); empty:
            the default layers.
        input_size (int, optional): side of the model's input. Default: 224.
        rule (str, optional): ``deconvnet``, ``guided`` or ``gradient``. Default: the model's
            default rule.

    Returns:
        tuple[Projector, list[str]]: the projector and the layer names.

    Example:
        >>> import torchvision
        >>> deconv, layers = choose_layers(torchvision.models.resnet18(), ["layer4"], 64)
        >>> type(deconv).__name__, layers
        ('GraphDeconvnet', ['layer4'])
    """
    asked = [_as_name(n) for n in names]
    if asked:
        deconv = deconvnet_for(model, asked, rule)
        return deconv, checked_layers(deconv, names, input_size)
    # The default: the blocks the forward pass actually calls (block_names with a forward), so
    # a container that forward only loops over (an nn.ModuleList) is never offered as a layer.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    blocks = block_names(model, (convs[0].in_channels if convs else 3, input_size, input_size))
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no default layers (no block holding a "
                         f"Conv2d runs once in its forward pass with a (B, C, H, W) output): "
                         f"pass --layer NAME (`zfnet layers` lists them)")
    deconv = deconvnet_for(model, blocks, rule)
    try:
        return deconv, checked_layers(deconv, blocks, input_size)
    except ValueError as err:
        raise ValueError(f"the default layers ({', '.join(blocks)}; no --layer given) cannot "
                         f"all be read: {err}; pass --layer NAME for the ones you want "
                         f"(`zfnet layers` lists them)") from None


def layer_shapes(model: nn.Module, layers: Sequence[str], input_size: int,
                 in_channels: int = 3) -> dict[str, tuple[int, ...]]:
    """Output shape ``(C, h, w)`` (or ``(C,)``) of each layer for one image, from one forward
    pass (:func:`~zfnet_cli.layers.describe_layers`).

    Raises:
        ValueError: a layer that did not run in the forward pass.
    """
    shapes = {i.module_name: i.shape for i in describe_layers(model, (in_channels, input_size,
                                                                      input_size))}
    out = {}
    for layer in layers:
        shape = shapes.get(resolve_layer(model, layer).module_name, ())
        if not shape:
            raise ValueError(f"layer {layer!r} gives no tensor output in the forward pass: "
                             f"choose another (`zfnet layers` lists them with their shapes)")
        out[layer] = tuple(shape)
    return out


# ---------------------------------------------------------------- images

def scan_batches(dataset, loaded, n: int, batch_size: int, device,
                 unreadable: Optional[UnreadableFiles] = None, *, rank: int = 0, world: int = 1
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` images of ``dataset`` as preprocessed batches ``(images, global
    indices)`` for :func:`~zfnet_cli.top9.scan_top9` (``batches_carry_indices=True``); under
    ``torchrun`` this rank's share (every ``world``-th image from ``rank``).

    In-memory data is sliced as a view, not copied; unreadable files of a file-backed data set
    are skipped (recorded in ``unreadable``; ``None``: the data config's ``max_broken``), so the
    indices are carried, not counted.

    Args:
        dataset: an in-memory data set (``.images``, ``.labels``) or one that reads files.
        loaded (Loaded): the model, for its preprocessing and data config.
        n (int): scan the first ``n`` images.
        batch_size (int): images per batch.
        device: where the batches go.
        unreadable (UnreadableFiles, optional): where skipped files are recorded.
        rank, world (int, optional): this rank and the number of ranks. Default: 0, 1.

    Yields:
        tuple[Tensor, Tensor]: (B, 3, S, S) preprocessed images, (B,) their indices.
    """
    if unreadable is None:
        unreadable = UnreadableFiles(len(dataset), getattr(loaded.data, "max_broken", 0.01))
    src = dataset_batches(dataset, batch_size * world, loaded.preprocess(), rank=rank,
                          world=world, workers=loaded.data.workers, device=device, first=n,
                          unreadable=unreadable)
    for x, _, idx in src.batches_with_indices():
        yield x, torch.as_tensor(idx)


def images_and_crops(dataset, indices: Sequence[int], loaded) -> tuple[torch.Tensor, torch.Tensor]:
    """(model input float, displayable uint8 centre crop) for the given data-set indices."""
    raw = torch.stack([dataset[i][0] for i in indices])  # (N, 3, S, S) uint8
    return loaded.preprocess()(raw), center_crop(raw, loaded.input_size)


def image_classes(dataset, indices: Sequence[int]) -> list[str]:
    """The true class of each data-set image, by its human name where the data set has one
    (``class_names``: ImageNet's wnid -> name), else its class id; ``""`` for the images of a
    flat folder of photos (:class:`~zfnet_cli.data.images.PhotoFolder` with ``tree`` false),
    which have no class (the folder's name is not one)."""
    if getattr(dataset, "tree", True) is False:
        return [""] * len(indices)
    names = list(getattr(dataset, "class_names", None) or dataset.classes)
    if hasattr(dataset, "labels"):
        labels = [int(dataset.labels[i]) for i in indices]
    elif hasattr(dataset, "samples"):  # file-based: the label without decoding the image
        labels = [int(dataset.samples[i][1]) for i in indices]
    else:
        labels = [int(dataset[i][1]) for i in indices]
    return [names[y] for y in labels]


def image_files(dataset, indices: Sequence[int]) -> dict:
    """``{"image_files": [...]}``: the file of each image where the data set reads files (a
    folder of photos, ImageNet), else nothing."""
    samples = getattr(dataset, "samples", None)
    return {"image_files": [str(samples[i][0]) for i in indices]} if samples else {}


# ---------------------------------------------------------------- projections, cut

def receptive_fields(deconv: Projector, requests: Sequence[Request], size: int) -> list[tuple]:
    """The receptive field ``(y0, x0, y1, x1)`` of each request's activation (batched per
    layer where the deconvnet can: the graph one needs a forward / backward pass per
    position)."""
    if not isinstance(deconv, GraphDeconvnet):
        return [deconv.receptive_field(r.layer, *r.position, size) for r in requests]
    boxes: dict[int, tuple] = {}
    for layer in dict.fromkeys(r.layer for r in requests):
        idx = [j for j, r in enumerate(requests) if r.layer == layer]
        for j, box in zip(idx, deconv.receptive_fields(layer, [requests[j].position for j in idx],
                                                       size)):
            boxes[j] = box
    return [boxes[j] for j in range(len(requests))]


def _projected(deconv: Projector, images: torch.Tensor, requests: Sequence[Request], *,
               batch_size: int, desc: str, progress: bool) -> torch.Tensor:
    """``deconv.project`` of the requests (R, C, H, W) on the CPU, the requests of
    ``batch_size`` images at a time: every request of an image is in the same call, so one
    recorded forward of the image serves them all (``GraphDeconvnet.project``)."""
    step = max(1, batch_size)
    out = torch.zeros(len(requests), *images.shape[1:], dtype=images.dtype)
    wanted = sorted({r.image for r in requests})
    for s in tqdm(range(0, len(wanted), step), desc=desc, disable=not progress, leave=False):
        these = set(wanted[s:s + step])
        idx = [j for j, r in enumerate(requests) if r.image in these]
        proj = deconv.project(images, [requests[j] for j in idx], batch_size=step).cpu()
        out = out.to(proj.dtype)
        out[idx] = proj
    return out


def _cut(deconv: Projector, projections: torch.Tensor, requests: Sequence[Request],
         input_size: int) -> list[tuple[np.ndarray, tuple, tuple]]:
    """:func:`project_crops`'s cut of projections already made."""
    out: list[tuple[np.ndarray, tuple, tuple]] = []
    for rf, p in zip(receptive_fields(deconv, requests, input_size), projections):
        y0, x0, y1, x1 = box = concentrated(p, reached(p, rf))
        out.append((p[:, y0:y1, x0:x1].numpy(), box, tuple(rf)))
    return out


def project_crops(deconv: Projector, images: torch.Tensor, requests: Sequence[Request],
                  input_size: int, *, batch_size: int = 64, desc: str = "project",
                  progress: bool = False) -> list[tuple[np.ndarray, tuple, tuple]]:
    """Project the requests (``deconv.project``, the requests of ``batch_size`` images at a
    time, so one recorded forward of an image serves all of its requests) and cut each
    projection at the part of its activation's receptive field it reaches (:func:`reached`),
    or, where that field covers most of the image, where it concentrates
    (:func:`concentrated`).

    Returns:
        list[tuple[ndarray, tuple, tuple]]: per request, the cut projection (3, h, w) float, its
        box ``(y0, x0, y1, x1)`` in the model's input, and the whole receptive field.
    """
    return _cut(deconv, _projected(deconv, images, requests, batch_size=batch_size, desc=desc,
                                   progress=progress), requests, input_size)


def reached(proj: torch.Tensor, box: tuple) -> tuple:
    """The part of receptive-field ``box`` (y0, x0, y1, x1) that projection ``proj`` (3, H, W)
    reaches: the bounding box of its non-zero pixels there, or ``box`` if it is all zero. A
    projection is exactly zero where this image's switches route nothing (no biases on the way
    down), so e.g. a conv1 activation after its 3x3 max-pool reaches only the 7x7 of the one
    conv position its switch chose. Cutting projection and patch at this box aligns them."""
    y0, x0, y1, x1 = box
    hit = proj[:, y0:y1, x0:x1].abs().amax(0) > 0
    if not hit.any():
        return box
    ys, xs = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
    return (y0 + int(ys[0]), x0 + int(xs[0]), y0 + int(ys[-1]) + 1, x0 + int(xs[-1]) + 1)


# A tile whose receptive field covers more than this share of the image is cut where its
# projection concentrates: the bounding box of the pixels where |projection| (summed over
# colours, box-blurred over 1/16 of the image side) reaches this share of its maximum. (Deep
# layers see the whole image, so the patch beside a projection would be the whole photo.)
CONCENTRATE_OVER = 0.5
CONCENTRATE_LEVEL = 0.1


def concentrated(proj: torch.Tensor, box: tuple) -> tuple:
    """Where a projection (3, H, W) concentrates inside ``box`` (y0, x0, y1, x1), for a box
    that covers more than :data:`CONCENTRATE_OVER` of the image (else ``box`` as it is): the
    bounding box of the pixels whose blurred ``|projection|`` is at least
    :data:`CONCENTRATE_LEVEL` of its maximum (the rule is the module constants' comment)."""
    y0, x0, y1, x1 = box
    h, w = proj.shape[-2:]
    if (y1 - y0) * (x1 - x0) <= CONCENTRATE_OVER * h * w:
        return box
    k = max(3, (max(h, w) // 16) | 1)  # odd
    mass = proj[:, y0:y1, x0:x1].abs().sum(0)[None, None].float()
    mass = torch.nn.functional.avg_pool2d(mass, k, 1, k // 2, count_include_pad=False)[0, 0]
    top = mass.max()
    if top <= 0:
        return box
    hit = mass >= CONCENTRATE_LEVEL * top
    ys, xs = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
    return (y0 + int(ys[0]), x0 + int(xs[0]), y0 + int(ys[-1]) + 1, x0 + int(xs[-1]) + 1)


def top9_tiles(deconv: Projector, loaded, dataset, top: TopK, layer: str, units: Sequence[int],
               *, batch_size: int = 64, progress: bool = False, similarity: bool = False
               ) -> Iterator[tuple[int, list[tuple[np.ndarray, np.ndarray, tuple]],
                                   Optional[float]]]:
    """Fig 2's pairs for the feature maps ``units`` of ``layer``: each of their top-k records
    projected with its own image's switches and cut, beside its image patch, at the same box.

    Units go in chunks of about ``4 x batch_size`` projections (twice that with
    ``similarity``: each seed through another shown image goes in the same
    :meth:`~zfnet_cli.deconv_graph.GraphDeconvnet.project` call as its own, so one recorded
    forward of an image serves both), so memory stays bounded (the chunk's images and
    projections) however many units are asked for.

    Args:
        deconv (Projector): the deconvnet (:func:`choose_layers`).
        loaded (Loaded): the model, for its preprocessing and input size.
        dataset: the data set ``top`` was scanned over.
        top (TopK): :func:`~zfnet_cli.top9.scan_top9`'s result for ``layer``.
        layer (str): the layer name.
        units (sequence of int): the feature maps, in the order wanted.
        batch_size (int, optional): images per recorded forward pass of the projector.
            Default: 64.
        progress (bool, optional): show the projection progress bar. Default: ``False``.
        similarity (bool, optional): also send each shown seed down through the next shown
            image and give the mean correlation with its own projection, in the same box
            (:mod:`zfnet_cli.sanity`; one more projection per tile). Default: ``False``.

    Yields:
        tuple[int, list, float or None]: per unit, in order, the unit, its k ``(projection
        (3, h, w) float, patch (h, w, 3) uint8, box (y0, x0, y1, x1), receptive field (y0, x0,
        y1, x1))``, strongest first (the box is where both are cut: :func:`project_crops`), and
        its image similarity (``None`` when not asked or fewer than two images).
    """
    from zfnet_cli.sanity import cross_requests, window_correlation

    units = list(units)
    step = max(1, (4 * batch_size) // max(1, top.images.shape[1]))
    for a in range(0, len(units), step):
        chunk = units[a:a + step]
        wanted = sorted({int(i) for m in chunk for i in top.images[m]})
        local = {g: j for j, g in enumerate(wanted)}
        inputs, crops = images_and_crops(dataset, wanted, loaded)
        k = top.images.shape[1]
        requests = [Request(local[int(top.images[m, j])], layer, m,
                            tuple(top.positions[m, j].tolist()), float(top.values[m, j]))
                    for m in chunk for j in range(k)]
        cross = ({m: cross_requests(requests[i * k:(i + 1) * k]) for i, m in enumerate(chunk)}
                 if similarity else {})
        flat = [r for m in chunk if cross.get(m) for r in cross[m]]
        both = _projected(deconv, inputs, requests + flat, batch_size=batch_size,
                          desc=f"project {layer}", progress=progress)
        projected = iter(_cut(deconv, both[:len(requests)], requests, loaded.input_size))
        out = iter(both[len(requests):])
        crossed = {m: [next(out) for _ in range(k)] for m in chunk if cross.get(m)}
        for m in chunk:
            tiles, scores = [], []
            for j, g in enumerate(top.images[m].tolist()):
                proj, (y0, x0, y1, x1), rf = next(projected)
                patch = crops[local[g]][:, y0:y1, x0:x1].permute(1, 2, 0).numpy()
                tiles.append((proj, patch, (y0, x0, y1, x1), rf))
                if m in crossed:  # the other image's projection, cut at the same box
                    scores.append(window_correlation(proj, crossed[m][j][:, y0:y1, x0:x1]))
            scores = [s for s in scores if s is not None]
            yield m, tiles, (sum(scores) / len(scores) if scores else None)


def plot_fig2(loaded, dataset, layer, *, fmaps: Optional[Sequence[int]] = None, maps: int = 4,
              k: int = 9, max_images: Optional[int] = None, rule: Optional[str] = None,
              batch_size: int = 32, cell: int = 48, path=None, title: Optional[str] = None):
    """Draw Fig 2 for one layer from Python: each feature map's ``k`` strongest activations over
    ``dataset``, each projected down to pixel space with its own image's switches (the
    deconvnet, or ``rule``), beside the image patch it came from. The Python face of
    ``zfnet visualize --layer L``.

    Args:
        loaded (Loaded): the model (:func:`~zfnet_cli.loading.load_model`).
        dataset: the images to scan: an in-memory data set or one that reads files (e.g.
            :class:`~zfnet_cli.data.images.PhotoFolder`).
        layer (str, int or nn.Module): the layer, by name, number shorthand (``3``: conv3) or
            module.
        fmaps (sequence of int, optional): the feature maps to show. Default: the ``maps``
            whose strongest activation over the scan is highest.
        maps (int, optional): how many maps when ``fmaps`` is not given. Default: 4.
        k (int, optional): activations per map (the paper: 9). Default: 9.
        max_images (int, optional): scan only the first this many images. Default: all.
        rule (str, optional): the projection rule (:data:`~zfnet_cli.deconv_graph.RULES`).
            Default: the model's default (:func:`~zfnet_cli.deconv_graph.default_rule`).
        batch_size (int, optional): images per scan batch and projections per pass. Default: 32.
        cell (int, optional): side of each tile in pixels. Default: 48.
        path (str or Path, optional): also write the figure there (PNG from the suffix).
        title (str, optional): the figure's title. Default: the layer and what was scanned.

    Returns:
        PIL.Image.Image: the figure.

    Example:
        >>> import zfnet_cli as zf                                    # doctest: +SKIP
        >>> m = zf.load_model("resnet18.pth")                         # doctest: +SKIP
        >>> zf.plot_fig2(m, zf.PhotoFolder("photos", resize=224), "layer3.1")  # doctest: +SKIP
    """
    from zfnet_cli import viz
    from zfnet_cli.top9 import scan_top9

    if isinstance(layer, nn.Module):
        layer = resolve_layer(loaded.model, layer).name
    deconv, (name,) = choose_layers(loaded.model, [layer], loaded.input_size, rule)
    n = min(max_images or len(dataset), len(dataset))
    device = next(loaded.model.parameters()).device
    top = scan_top9(deconv, scan_batches(dataset, loaded, n, batch_size, device), [name], k=k,
                    batches_carry_indices=True)[name]
    units = list(fmaps) if fmaps is not None else \
        top.values[:, 0].argsort(descending=True)[:maps].tolist()
    blocks = [(f"{name} map {m}", [(viz.projection_to_image(proj, viz.FIGURE_GAIN), patch)
                                   for proj, patch, *_ in tiles])
              for m, tiles, _ in top9_tiles(deconv, loaded, dataset, top, name, units,
                                            batch_size=batch_size)]
    if title is None:
        title = f"Fig 2: {name}, top-{k} activations over {n} images (projection | image patch)"
    figure = viz.top9_figure(blocks, None, cell=cell, title=title)
    if path is not None:
        write_atomic(path, lambda f: figure.save(f, format="PNG"))
    return figure
