"""Occlusion sensitivity (Zeiler & Fergus 2014, §4.2 and Fig 7): slide a grey square over the
image and watch the strongest layer-L feature map and the classifier.

For every **occluder** position one forward pass (batched over positions) gives at once:

* (b) the total activation (summed over space) of the feature map of layer L that is strongest
  on the unoccluded image;
* (d) the probability of the correct class;
* (e) the most probable label.

Panel (c), the deconv projection of that feature map, comes from
:meth:`zfnet_cli.deconv.Deconvnet.project` with ``Request(0, maps.layer, maps.fmap, None)``.

"Layer L" means what it means in :mod:`zfnet_cli.deconv`: the output of stage L (the L-th
``Conv2d`` and its ReLU / max-pool / contrast norm up to the next conv); for ZFNet that is
``ZFNet.layer_outputs()[L]``. The layer is read with a forward hook on the module that ends
stage L while the whole model runs, so models whose ``forward`` does more than
``classifier(features(x))`` (torchvision's ``alexnet`` / ``vgg16``, with an ``avgpool`` in
between) work unchanged.

Choices the paper leaves UNSTATED: the occluder's size and stride (arguments here), and where
the last row / column of positions goes when the stride does not divide the free range (flush
with the bottom / right edge, see :func:`occluder_positions`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zfnet_cli.deconv import Deconvnet
from zfnet_cli.incremental import DEFAULT_MEMORY_BUDGET, incremental_or_full


@dataclass
class OcclusionMaps:
    """Fig 7's maps over the grid of occluder positions, on the CPU.

    Attributes:
        positions: (P, 2) int64, ``(y, x)`` top-left corner of the occluder, row-major over
            the grid (``positions.view(gh, gw, 2)`` lines up with the maps).
        grid: ``(gh, gw)``, the grid's rows and columns; ``P = gh * gw``.
        size: the occluder's side in pixels.
        stride: the step between neighbouring positions in pixels (but see
            :func:`occluder_positions` for the last row / column).
        layer: the layer read, a name from ``Deconvnet(model).layers``.
        fmap: the feature map of ``layer`` with the largest total activation on the
            unoccluded image (first one on a tie).
        fmap_total: (gh, gw) float, Fig 7(b): total activation of ``fmap`` per position.
        p_target: (gh, gw) float, Fig 7(d): softmax probability of ``target`` per position.
        log_p_target: (gh, gw) float, its log (log-softmax): where a confident model drives p
            to underflow, this still orders the positions (the most damaging one is its argmin).
        top_label: (gh, gw) int64, Fig 7(e): the most probable class per position.
        target: the class whose probability ``p_target`` holds.
        clean_fmap_total: (b) on the unoccluded image.
        clean_p_target: (d) on the unoccluded image.
        clean_label: (e) on the unoccluded image.
        clean_probs: (C,) float, softmax over the classes on the unoccluded image.
    """

    positions: torch.Tensor
    grid: tuple[int, int]
    size: int
    stride: int
    layer: str
    fmap: int
    fmap_total: torch.Tensor
    p_target: torch.Tensor
    log_p_target: torch.Tensor
    top_label: torch.Tensor
    target: int
    clean_fmap_total: float
    clean_p_target: float
    clean_label: int
    clean_probs: torch.Tensor

    def centers(self) -> torch.Tensor:
        """(gh, gw, 2) float, ``(y, x)`` of each occluder's centre in pixel coordinates
        (pixel ``i`` spans ``[i - 0.5, i + 0.5]``, so the centre of ``y .. y + size - 1`` is
        ``y + (size - 1) / 2``); where to draw the maps over the image, or to localise."""
        return (self.positions.double() + (self.size - 1) / 2).view(*self.grid, 2)


def _starts(n: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] != n - size:
        starts.append(n - size)  # flush with the far edge, so every pixel gets covered
    return starts


def occluder_positions(height: int, width: int, size: int, stride: int) -> torch.Tensor:
    """Top-left corners of a ``size`` x ``size`` occluder slid over a ``height`` x ``width``
    image with step ``stride``, the occluder always wholly inside the image.

    Per axis the starts are ``0, stride, 2 * stride, ...`` up to ``n - size``; when the stride
    does not land on ``n - size`` one more start, ``n - size``, is added (flush with the bottom /
    right edge), so the occluder covers every pixel at least once and the last step is shorter.

    Args:
        height (int): image rows H.
        width (int): image columns W.
        size (int): the occluder's side, ``1 <= size <= min(H, W)``.
        stride (int): step between positions, ``>= 1``.

    Returns:
        Tensor: (P, 2) int64 ``(y, x)``, row-major (y outer, x inner), P = gh * gw.

    Raises:
        ValueError: if ``size`` or ``stride`` is below 1, or the occluder is larger than the
            image.

    Example:
        >>> occluder_positions(10, 10, size=4, stride=4)[:, 0].unique().tolist()
        [0, 4, 6]
    """
    if size < 1:
        raise ValueError(f"occluder size must be >= 1, got {size}")
    if stride < 1:
        raise ValueError(f"occluder stride must be >= 1, got {stride}")
    if size > height or size > width:
        raise ValueError(f"occluder size {size} is larger than the {height}x{width} image")
    ys = torch.tensor(_starts(height, size, stride), dtype=torch.long)
    xs = torch.tensor(_starts(width, size, stride), dtype=torch.long)
    return torch.cartesian_prod(ys, xs).view(-1, 2)


def _fill_plane(fill: Union[float, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """``fill`` as a (3, H, W) view on ``image``'s device and dtype."""
    f = torch.as_tensor(fill, dtype=image.dtype, device=image.device)
    if f.dim() != 0 and tuple(f.shape) not in ((3, 1, 1), tuple(image.shape)):
        raise ValueError(f"fill must be a float, a (3, 1, 1) or a {tuple(image.shape)} tensor, "
                         f"got shape {tuple(f.shape)}")
    return f.expand_as(image)


def _occluded(image: torch.Tensor, fill: torch.Tensor, corners: torch.Tensor,
              size: int) -> torch.Tensor:
    """(B, 3, H, W): ``image`` with the square at each of ``corners`` (B, 2) replaced by
    ``fill`` (3, H, W). A selection, not arithmetic, so unoccluded pixels stay bit-exact."""
    _, h, w = image.shape
    ys, xs = corners[:, :1], corners[:, 1:]  # (B, 1) each
    rows = torch.arange(h, device=image.device)
    cols = torch.arange(w, device=image.device)
    in_rows = (rows >= ys) & (rows < ys + size)  # (B, H)
    in_cols = (cols >= xs) & (cols < xs + size)  # (B, W)
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    return torch.where(mask, fill, image)


def _forward(model: nn.Module, end: nn.Module, x: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(x)``; return the total activation of every map of the layer ``end`` closes,
    (B, M), and the logits, (B, C)."""
    totals: list[torch.Tensor] = []

    def hook(_module, _inputs, out):
        # Summed here, at once: a later in-place module (torchvision's ReLU(inplace=True))
        # could otherwise overwrite the tensor before we read it.
        totals.append(out.sum(dim=(2, 3)))

    handle = end.register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(totals) != 1:
        raise RuntimeError(f"the module ending the layer ran {len(totals)} times in one forward "
                           f"pass; expected once")
    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise RuntimeError(f"model output must be (B, classes) logits, got "
                           f"{tuple(logits.shape)} for a batch of {x.shape[0]}")
    return totals[0], logits


@torch.no_grad()
def occlude(model: nn.Module, image: torch.Tensor, *, size: int, stride: int,
            fill: Union[float, torch.Tensor] = 0.0, target: Optional[int] = None,
            layer: Optional[str] = None, batch_size: int = 64,
            progress: bool = False, method: str = "auto",
            memory_budget: int = DEFAULT_MEMORY_BUDGET) -> OcclusionMaps:
    """Slide a grey square (the **occluder**) over an image and record, for every position, the
    strongest layer-L feature map's total activation, the correct class's probability and the
    most probable label (paper §4.2, Fig 7 (b), (d), (e)).

    The strongest map is chosen once, on the unoccluded image: the map of ``layer`` with the
    largest total activation (sum over its spatial positions; the first on a tie). Positions
    are run ``batch_size`` at a time; each batch is one forward pass of the whole model with a
    forward hook on the module that ends ``layer``, so all three maps come from the same pass.
    Results do not depend on ``batch_size``: in exact arithmetic they are bit-identical
    (tests/test_occlusion.py checks this on float64 networks whose sums are exact); in float32
    the backend's kernels may sum in a batch-size-dependent order and differ in the last bits.
    With ``method="incremental"`` (the default ``"auto"`` where it is faster) the same maps
    come from recomputing each layer only where the occluder reaches it, in chunks sized by
    ``memory_budget`` (tests/test_incremental.py: bit-identical on those float64 networks).

    The model is put in eval mode for the call (each module's previous mode is restored after)
    and run under ``torch.no_grad()`` on the device and dtype of its parameters.

    Args:
        model (nn.Module): a classifier returning (B, C) logits, with a ``.features``
            ``nn.Sequential`` that :class:`~zfnet_cli.deconv.Deconvnet` accepts: our
            :class:`~zfnet_cli.model.ZFNet`, torchvision's ``alexnet`` / ``vgg16``.
        image (Tensor): (3, H, W) float, preprocessed the way the model expects (e.g. the mean
            image subtracted).
        size (int): the occluder's side in pixels, ``1 <= size <= min(H, W)``.
        stride (int): step between occluder positions in pixels, ``>= 1``; the last row /
            column of positions is flush with the bottom / right edge
            (:func:`occluder_positions`).
        fill (float or Tensor, optional): what occluded pixels become, in the units of
            ``image``: a float, a (3, 1, 1) per-channel colour or a (3, H, W) tensor. For the
            paper's grey square on a mean-subtracted image pass ``mean_colour - mean_image``
            (so the square becomes the data set's mean grey); ``0.0`` is the mean image itself.
            Default: ``0.0``.
        target (int, optional): the class whose probability is mapped (the correct class).
            Default: the class predicted on the unoccluded image.
        layer (str, optional): a name from ``Deconvnet(model).layers`` (``"conv1"`` ..
            ``"conv5"`` for ZFNet, ``"layer1"`` .. ``"layer5"`` for torchvision's AlexNet).
            Default: the last conv layer (``"conv5"`` for ZFNet, as the paper's "layer 5").
        batch_size (int, optional): occluded images per forward pass. Default: 64.
        progress (bool, optional): show a tqdm bar over the batches. Default: ``False``.
        method (str, optional): ``"incremental"`` recomputes each layer only where the occluder
            reaches it, on top of the clean image's activations
            (:class:`~zfnet_cli.incremental.IncrementalOcclusion`, Krypton, SIGMOD 2019; same
            maps up to float rounding); ``"full"`` runs the whole model per batch of
            ``batch_size`` occluded images; ``"auto"`` picks incremental where its estimated
            work is at most :data:`~zfnet_cli.incremental.AUTO_MAX_RATIO` of the full pass
            and the model traces with torch.fx (:func:`~zfnet_cli.incremental.
            incremental_or_full`). Default: ``"auto"``.
        memory_budget (int, optional): the incremental path's bytes of per-position
            activations per chunk of positions (it ignores ``batch_size``). Default:
            :data:`~zfnet_cli.incremental.DEFAULT_MEMORY_BUDGET` (256 MiB).

    Returns:
        OcclusionMaps: positions (P, 2), grid (gh, gw), the strongest ``fmap`` and, per
        position, ``fmap_total`` (gh, gw) float, ``p_target`` (gh, gw) float and ``top_label``
        (gh, gw) int64, plus the same three on the unoccluded image; all on the CPU.

    Raises:
        ValueError: if ``image`` is not (3, H, W); ``size`` or ``stride`` is below 1 or the
            occluder is larger than the image; ``batch_size`` is below 1; ``fill`` has another
            shape; ``layer`` is unknown (the valid ones are listed); ``target`` is not a class
            of the model (the class count is given); or the model's feature part is not one
            :class:`~zfnet_cli.deconv.Deconvnet` accepts; ``method`` is not ``"auto"``,
            ``"incremental"`` or ``"full"``; ``method="incremental"`` for a model that cannot
            run incrementally (:class:`~zfnet_cli.incremental.NotIncremental`, which says
            why).

    Example:
        >>> from zfnet_cli.model import ModelConfig, ZFNet
        >>> net = ZFNet(ModelConfig(input_size=64, channels=[8, 8, 8, 8, 8],
        ...                         fc_widths=[16, 16]), num_classes=5)
        >>> maps = occlude(net, torch.randn(3, 64, 64), size=16, stride=8)
        >>> maps.grid, maps.layer, maps.fmap_total.shape, maps.top_label.dtype
        ((7, 7), 'conv5', torch.Size([7, 7]), torch.int64)

    Reference:
        M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional Networks",
        ECCV 2014, §4.2, Fig 7. https://arxiv.org/abs/1311.2901
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    _, h, w = image.shape
    positions = occluder_positions(h, w, size, stride)  # validates size and stride
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    deconv = Deconvnet(model)  # only for its layer -> module mapping
    layer = deconv.layers[-1] if layer is None else layer
    deconv._check_layer(layer)
    end = deconv.modules[deconv._end[layer]][1]
    param = next(model.parameters())
    image = image.to(device=param.device, dtype=param.dtype)
    fill = _fill_plane(fill, image)
    gh = len(_starts(h, size, stride))
    grid = (gh, positions.shape[0] // gh)

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        clean_totals, clean_logits = _forward(model, end, image[None])
        n_classes = clean_logits.shape[1]
        clean_probs = F.softmax(clean_logits, dim=1)[0]  # (C,)
        clean_label = int(clean_logits[0].argmax())
        fmap = int(clean_totals[0].argmax())  # first maximal map on a tie
        target = clean_label if target is None else int(target)
        if not 0 <= target < n_classes:
            raise ValueError(f"target {target} out of range: the model has {n_classes} classes")

        n = positions.shape[0]
        fmap_total = torch.empty(n, dtype=clean_totals.dtype)
        p_target = torch.empty(n, dtype=clean_probs.dtype)
        log_p_target = torch.empty(n, dtype=clean_probs.dtype)
        top_label = torch.empty(n, dtype=torch.long)
        corners = positions.to(image.device)
        # Exact incremental inference (zfnet_cli.incremental) where it is faster, else the
        # whole model per batch of occluded images; both yield (slice, (B, M), (B, C)).
        engine = incremental_or_full(model, image, size=size, readout=end, fill=fill,
                                     method=method, memory_budget=memory_budget)
        if engine is not None:
            chunks, steps = engine.iter_chunks(corners), -(-n // engine.chunk_size)
        else:
            chunks = ((slice(s, s + batch_size),
                       *_forward(model, end, _occluded(image, fill, corners[s:s + batch_size],
                                                      size)))  # (B, 3, H, W) in
                      for s in range(0, n, batch_size))
            steps = -(-n // batch_size)
        for part, totals, logits in tqdm(chunks, total=steps, desc="occlude",
                                         disable=not progress):
            fmap_total[part] = totals[:, fmap].cpu()
            p_target[part] = F.softmax(logits, dim=1)[:, target].cpu()
            log_p_target[part] = F.log_softmax(logits, dim=1)[:, target].cpu()
            top_label[part] = logits.argmax(dim=1).cpu()
    finally:
        for m, training in modes.items():
            m.training = training

    return OcclusionMaps(
        positions=positions, grid=grid, size=size, stride=stride, layer=layer, fmap=fmap,
        fmap_total=fmap_total.view(grid), p_target=p_target.view(grid),
        log_p_target=log_p_target.view(grid),
        top_label=top_label.view(grid), target=target,
        clean_fmap_total=float(clean_totals[0, fmap]), clean_p_target=float(clean_probs[target]),
        clean_label=clean_label, clean_probs=clean_probs.cpu())
