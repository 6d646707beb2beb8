"""Occlusion sensitivity (Zeiler & Fergus 2014, §4.2 and Fig 7): slide a grey square over the
image and watch one layer's strongest feature map and the classifier, on any image classifier.

For every **occluder** position one forward pass (batched over positions) gives at once:

* (b) the total activation (summed over space) of the feature map of layer L that is strongest
  on the unoccluded image;
* (d) the probability of the correct class;
* (e) the most probable label.

The model is any ``nn.Module`` mapping a (B, 3, H, W) batch to (B, C) logits: our ZFNet,
torchvision's classifiers (``resnet18``, ``vgg11_bn``, ``mobilenet_v3_small``, ...), a user's
``nn.Sequential``. Layer L is named as everywhere in zfnet (:mod:`zfnet_cli.layers`): a module
name (``layer3.1``, ``features.28``) or the paper's name where it applies (``conv5``); by default
:func:`zfnet_cli.layers.default_layer` (the paper's "layer 5" on a plain stack, else the last
feature map before global pooling). It is read with a forward hook while the whole model runs,
so any ``forward`` works unchanged. Panel (c), the deconv projection of that feature map, is not
made here: it needs a deconvnet (:mod:`zfnet_cli.deconv`), which not every model has.

Maps come at grid resolution (one value per occluder position) and resampled to the input's
pixels (:meth:`OcclusionMaps.resampled`): each pixel gets the mean of a map over the occluder
positions that cover it (the most probable label: that of the position whose centre is nearest).

Choices the paper leaves UNSTATED: the occluder's size and stride (arguments here), and where
the last row / column of positions goes when the stride does not divide the free range (flush
with the bottom / right edge, see :func:`occluder_positions`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zfnet_cli.incremental import DEFAULT_MEMORY_BUDGET, incremental_or_full
from zfnet_cli.layers import SCRIPTED, Layer, default_layer, read_once, resolve_layer, tap

__all__ = ["OcclusionMaps", "occlude", "occluder_positions", "resample", "plot_fig7"]


@dataclass
class OcclusionMaps:
    """Fig 7's maps for one image over the grid of occluder positions, on the CPU.

    Attributes:
        positions: (P, 2) int64, ``(y, x)`` top-left corner of the occluder in input pixels,
            row-major over the grid (``positions.view(gh, gw, 2)`` lines up with the maps).
        grid: ``(gh, gw)``, the grid's rows and columns; ``P = gh * gw``.
        size: the occluder's side in pixels.
        stride: the step between neighbouring positions in pixels (but see
            :func:`occluder_positions` for the last row / column).
        layer: the layer read, as it was named (``"conv5"``, ``"layer4"``); ``None`` for a
            TorchScript model, whose layers cannot be read (then ``fmap``, ``fmap_total`` and
            ``clean_fmap_total`` are ``None`` too: no panel (b)).
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
        module_name: the qualified name of the module whose output ``layer`` is
            (``"features.pool5"`` for ZFNet's ``conv5``).
        image_size: ``(H, W)`` of the occluded input.
        method: how the maps were computed: ``"incremental"`` (each layer recomputed only
            where the occluder reaches it) or ``"full"`` (the whole model per position); with
            ``method="auto"``, the one it picked.
    """

    positions: torch.Tensor
    grid: tuple[int, int]
    size: int
    stride: int
    layer: Optional[str]
    fmap: Optional[int]
    fmap_total: Optional[torch.Tensor]
    p_target: torch.Tensor
    log_p_target: torch.Tensor
    top_label: torch.Tensor
    target: int
    clean_fmap_total: Optional[float]
    clean_p_target: float
    clean_label: int
    clean_probs: torch.Tensor
    module_name: str = ""
    image_size: tuple[int, int] = (0, 0)
    method: str = "full"

    def centers(self) -> torch.Tensor:
        """(gh, gw, 2) float, ``(y, x)`` of each occluder's centre in pixel coordinates
        (pixel ``i`` spans ``[i - 0.5, i + 0.5]``, so the centre of ``y .. y + size - 1`` is
        ``y + (size - 1) / 2``); where to draw the maps over the image, or to localise."""
        return (self.positions.double() + (self.size - 1) / 2).view(*self.grid, 2)

    def boxes(self) -> torch.Tensor:
        """(gh, gw, 4) int64, ``(y0, x0, y1, x1)``: the input pixels each grid cell's occluder
        covers, rows ``y0 .. y1 - 1`` and columns ``x0 .. x1 - 1`` (end exclusive)."""
        corners = self.positions.view(*self.grid, 2)
        return torch.cat([corners, corners + self.size], dim=-1)

    def resampled(self) -> dict[str, torch.Tensor]:
        """The maps at the input's size, ``(H, W)`` each (see :func:`resample`): ``fmap_total``,
        ``p_target`` and ``log_p_target`` as the mean over the occluder positions covering each
        pixel; ``top_label`` as the label of the position whose centre is nearest (no
        ``fmap_total`` where no layer was read)."""
        geometry = (self.positions, self.grid, self.size, self.image_size)
        out = {k: resample(getattr(self, k), *geometry)
               for k in ("fmap_total", "p_target", "log_p_target") if getattr(self, k) is not None}
        out["top_label"] = resample(self.top_label, *geometry, how="nearest")
        return out


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


def resample(values: torch.Tensor, positions: torch.Tensor, grid: Sequence[int], size: int,
             image_size: Sequence[int], how: str = "mean") -> torch.Tensor:
    """A map over the grid of occluder positions, at the input's pixels.

    ``how="mean"``: each pixel gets the mean of ``values`` over the occluder positions whose
    square covers it (every pixel is covered at least once, :func:`occluder_positions`); a
    pixel covered by one position only gets that position's value. ``how="nearest"``: each
    pixel gets the value of the position whose centre is nearest, per axis (the first on a
    tie); for categorical maps such as the most probable label.

    The grid is a product of row starts and column starts, so the coverage is separable:
    ``out = (Cy @ values @ Cx.T) / (Cy.sum(1) x Cx.sum(1))`` with ``Cy`` (H, gh) and ``Cx``
    (W, gw) the 0/1 "row i lies in the occluder's rows" matrices; computed in float64.

    Args:
        values (Tensor): (gh, gw) map.
        positions (Tensor): (gh * gw, 2) int64 ``(y, x)`` top-left corners, row-major.
        grid (sequence of int): ``(gh, gw)``.
        size (int): the occluder's side in pixels.
        image_size (sequence of int): ``(H, W)`` of the input.
        how (str, optional): ``"mean"`` or ``"nearest"``. Default: ``"mean"``.

    Returns:
        Tensor: (H, W), ``values``' dtype (float64 for an integer map with ``"mean"``).

    Example:
        >>> pos = occluder_positions(4, 4, size=2, stride=2)
        >>> resample(torch.tensor([[1., 2.], [3., 4.]]), pos, (2, 2), 2, (4, 4))[0].tolist()
        [1.0, 1.0, 2.0, 2.0]
    """
    gh, gw = grid
    h, w = image_size
    corners = positions.view(gh, gw, 2)
    ys, xs = corners[:, 0, 0].double(), corners[0, :, 1].double()
    rows = torch.arange(h, dtype=torch.float64)[:, None]
    cols = torch.arange(w, dtype=torch.float64)[:, None]
    if how == "nearest":
        iy = (rows - (ys + (size - 1) / 2)).abs().argmin(dim=1)  # (H,) first minimum on a tie
        ix = (cols - (xs + (size - 1) / 2)).abs().argmin(dim=1)  # (W,)
        return values[iy][:, ix]
    if how != "mean":
        raise ValueError(f"how must be 'mean' or 'nearest', got {how!r}")
    cy = ((rows >= ys) & (rows < ys + size)).double()  # (H, gh)
    cx = ((cols >= xs) & (cols < xs + size)).double()  # (W, gw)
    out = (cy @ values.double() @ cx.T) / (cy.sum(1)[:, None] * cx.sum(1)[None, :])
    return out.to(values.dtype) if values.is_floating_point() else out


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


def _totals(out: torch.Tensor) -> torch.Tensor:
    """(B, M): each map's activation summed over space; a (B, M) layer (``fc7``) is its own
    total, one unit per "map". Summed inside the hook, at once: a later in-place module
    (torchvision's ReLU(inplace=True)) could otherwise overwrite the tensor before we read it."""
    return out.flatten(2).sum(dim=2) if out.dim() > 2 else out


def _forward(model: nn.Module, end: Optional[nn.Module], x: torch.Tensor
             ) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """Run ``model(x)``; return the total activation of every map of the layer whose output
    module is ``end``, (B, M) (``None`` where ``end`` is: no layer read), and the logits,
    (B, C)."""
    if end is None:
        totals, logits = None, model(x)
    else:
        with tap(end, _totals) as seen:
            logits = model(x)
        # the module's name is looked up only for read_once's error (a module that ran 0 or 2+ times)
        totals = seen[0] if len(seen) == 1 else read_once(seen, _module_name(model, end))
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return (B, classes) logits; it returned {got} for a "
                         f"batch of {x.shape[0]}")
    return totals, logits


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is module), type(module).__name__)


def _targets(target: Union[None, int, Sequence[int], torch.Tensor], n: int) -> list:
    """One target (or ``None``) per image."""
    if target is None or isinstance(target, int) or (
            isinstance(target, torch.Tensor) and target.dim() == 0):
        return [None if target is None else int(target)] * n
    targets = [None if t is None else int(t) for t in target]
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} images: give one target for all "
                         f"images or one per image")
    return targets


@torch.no_grad()
def occlude(model: nn.Module, image: torch.Tensor, *, size: int, stride: int,
            fill: Union[float, torch.Tensor] = 0.0,
            target: Union[None, int, Sequence[int]] = None,
            layer: Optional[str] = None, batch_size: int = 64,
            progress: bool = False, method: str = "auto",
            memory_budget: int = DEFAULT_MEMORY_BUDGET
            ) -> Union[OcclusionMaps, list[OcclusionMaps]]:
    """Slide a grey square (the **occluder**) over an image and record, for every position, the
    strongest layer-L feature map's total activation, the correct class's probability and the
    most probable label (paper §4.2, Fig 7 (b), (d), (e)), on any image classifier.

    The strongest map is chosen once per image, on the unoccluded image: the map of ``layer``
    with the largest total activation (sum over its spatial positions; the first on a tie).
    Positions are run ``batch_size`` at a time; each batch is one forward pass of the whole
    model with a forward hook on the module whose output ``layer`` is, so all three maps come
    from the same pass. Results do not depend on ``batch_size``: in exact arithmetic they are
    bit-identical (tests/test_occlusion.py checks this on float64 networks whose sums are
    exact); in float32 the backend's kernels may sum in a batch-size-dependent order and
    differ in the last bits.
    With ``method="incremental"`` (the default ``"auto"`` where it is faster) the same maps
    come from recomputing each layer only where the occluder reaches it, in chunks sized by
    ``memory_budget`` (tests/test_incremental.py: bit-identical on those float64 networks).

    The model is put in eval mode for the call (each module's previous mode is restored after)
    and run under ``torch.no_grad()`` on the device and dtype of its parameters.

    Args:
        model (nn.Module): any classifier mapping a (B, 3, H, W) batch to (B, C) logits: our
            :class:`~zfnet_cli.model.ZFNet`, a torchvision classification model, a user's
            ``nn.Sequential``.
        image (Tensor): one image (3, H, W), or a batch of N images (N, 3, H, W), float,
            preprocessed the way the model expects (mean subtracted, normalised).
        size (int): the occluder's side in pixels, ``1 <= size <= min(H, W)``.
        stride (int): step between occluder positions in pixels, ``>= 1``; the last row /
            column of positions is flush with the bottom / right edge
            (:func:`occluder_positions`).
        fill (float or Tensor, optional): what occluded pixels become, in the units of
            ``image``: a float, a (3, 1, 1) per-channel colour or a (3, H, W) tensor (the same
            for every image). For the paper's grey square on a mean-subtracted image pass
            ``mean_colour - mean_image``; ``0.0`` is the mean itself. Default: ``0.0``.
        target (int or sequence of int, optional): the class whose probability is mapped (the
            correct class): one for all images or one per image (``None`` entries allowed).
            Default: the class predicted on each unoccluded image.
        layer (str, optional): the layer of panel (b), by name (:func:`zfnet_cli.layers.resolve_layer`:
            a module name such as ``"layer3.1"`` or ``"features.28"``, or a paper name such as
            ``"conv5"`` where it applies). Default: :func:`zfnet_cli.layers.default_layer`: the
            paper's last conv stage on a plain stack (``"conv5"`` for ZFNet, as the paper's
            "layer 5"), else the last feature map before global pooling (``"layer4"`` of a
            ResNet, ``"features"`` of a MobileNet). A TorchScript model has no readable layers:
            leave ``layer`` unset and panel (b) is not computed (``fmap_total`` is ``None``).
        batch_size (int, optional): occluded images per forward pass. Default: 64.
        progress (bool, optional): show a tqdm bar over the batches. Default: ``False``.
        method (str, optional): ``"incremental"`` recomputes each layer only where the occluder
            reaches it, on top of the clean image's activations
            (:class:`~zfnet_cli.incremental.IncrementalOcclusion`, Krypton, SIGMOD 2019; same
            maps up to float rounding); ``"full"`` runs the whole model per batch of
            ``batch_size`` occluded images; ``"auto"`` picks incremental where its estimated
            work, the build counted as a few more positions, is at most
            :data:`~zfnet_cli.incremental.AUTO_MAX_RATIO` of the full pass and the model traces
            with torch.fx (:func:`~zfnet_cli.incremental.incremental_or_full`, which decides
            before building anything). Default: ``"auto"``.
        memory_budget (int, optional): the incremental path's bytes of per-position
            activations per chunk of positions (it ignores ``batch_size``). Default:
            :data:`~zfnet_cli.incremental.DEFAULT_MEMORY_BUDGET` (256 MiB).

    Returns:
        OcclusionMaps or list[OcclusionMaps]: for a (3, H, W) image one result, for a
        (N, 3, H, W) batch a list of N, in order. Each holds positions (P, 2), grid (gh, gw),
        the strongest ``fmap`` and, per position, ``fmap_total`` (gh, gw) float, ``p_target``
        (gh, gw) float and ``top_label`` (gh, gw) int64, plus the same three on the unoccluded
        image; all on the CPU. :meth:`OcclusionMaps.resampled` gives them at (H, W).

    Raises:
        ValueError: if ``image`` is not (3, H, W) or (N, 3, H, W); ``size`` or ``stride`` is
            below 1 or the occluder is larger than the image; ``batch_size`` is below 1;
            ``fill`` has another shape; ``layer`` is unknown (close matches are given) or does
            not run once per forward pass; ``target`` is not a class of the model (the class
            count is given) or there are more or fewer targets than images; or the model does
            not return (B, C) logits; ``method`` is not ``"auto"``, ``"incremental"`` or
            ``"full"``; ``method="incremental"`` for a model that cannot run incrementally
            (:class:`~zfnet_cli.incremental.NotIncremental`, which says why).

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=5)
        >>> maps = occlude(net, torch.randn(3, 64, 64), size=16, stride=8)
        >>> maps.grid, maps.layer, maps.fmap_total.shape, maps.resampled()["p_target"].shape
        ((7, 7), 'layer4', torch.Size([7, 7]), torch.Size([64, 64]))
        >>> [m.target for m in occlude(net, torch.randn(2, 3, 64, 64), size=32, stride=32,
        ...                            target=[1, 3])]
        [1, 3]

    Reference:
        M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional Networks",
        ECCV 2014, §4.2, Fig 7. https://arxiv.org/abs/1311.2901
    """
    single = image.dim() == 3
    images = image[None] if single else image
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"image must be (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
    n_images, _, h, w = images.shape
    positions = occluder_positions(h, w, size, stride)  # validates size and stride
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    targets = _targets(target, n_images)
    chosen = _layer(model, layer, (3, h, w))
    param = next(model.parameters(), None)
    images = images.to(device=param.device, dtype=param.dtype) if param is not None else images
    fill = _fill_plane(fill, images[0])
    gh = len(_starts(h, size, stride))
    grid = (gh, positions.shape[0] // gh)

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        results = [_occlude_one(model, chosen, images[i], fill, positions, grid, size, stride,
                                targets[i], batch_size, progress,
                                f"occlude {i + 1}/{n_images}" if n_images > 1 else "occlude",
                                method, memory_budget)
                   for i in range(n_images)]
    finally:
        for m, training in modes.items():
            m.training = training
    return results[0] if single else results


def _layer(model: nn.Module, layer: Optional[str], input_shape: tuple) -> Optional[Layer]:
    """The layer of panel (b); ``None`` for a TorchScript model (no forward hooks there)."""
    if isinstance(model, torch.jit.ScriptModule):
        if layer is not None:
            raise ValueError(f"layer {layer!r} cannot be shown: {SCRIPTED}; or leave the layer "
                             f"unset for panels (d) and (e) only")
        return None
    return default_layer(model, input_shape) if layer is None else resolve_layer(model, layer)


def _occlude_one(model: nn.Module, chosen: Optional[Layer], image: torch.Tensor, fill: torch.Tensor,
                 positions: torch.Tensor, grid: tuple[int, int], size: int, stride: int,
                 target: Optional[int], batch_size: int, progress: bool,
                 desc: str, method: str = "auto",
                 memory_budget: int = DEFAULT_MEMORY_BUDGET) -> OcclusionMaps:
    """:func:`occlude` for one (3, H, W) image, the model already in eval mode."""
    end = chosen.module if chosen is not None else None
    clean_totals, clean_logits = _forward(model, end, image[None])
    n_classes = clean_logits.shape[1]
    clean_probs = F.softmax(clean_logits, dim=1)[0]  # (C,)
    clean_label = int(clean_logits[0].argmax())
    fmap = int(clean_totals[0].argmax()) if end is not None else None  # first maximal on a tie
    target = clean_label if target is None else int(target)
    if not 0 <= target < n_classes:
        raise ValueError(f"target {target} out of range: the model has {n_classes} classes")

    n = positions.shape[0]
    fmap_total = torch.empty(n, dtype=clean_logits.dtype if end is None else clean_totals.dtype)
    p_target = torch.empty(n, dtype=clean_probs.dtype)
    log_p_target = torch.empty(n, dtype=clean_probs.dtype)
    top_label = torch.empty(n, dtype=torch.long)
    corners = positions.to(image.device)
    # Exact incremental inference (zfnet_cli.incremental) where it is faster, else the whole
    # model per batch of occluded images; both yield (slice, (B, M) or None, (B, C)).
    engine = incremental_or_full(model, image, size=size, readout=end, fill=fill,
                                 method=method, memory_budget=memory_budget,
                                 positions=n,
                                 model_output=(clean_totals, clean_logits))
    if engine is not None:
        chunks, steps = engine.iter_chunks(corners), -(-n // engine.chunk_size)
    else:
        chunks = ((slice(s, s + batch_size),
                   *_forward(model, end, _occluded(image, fill, corners[s:s + batch_size],
                                                  size)))  # (B, 3, H, W) in
                  for s in range(0, n, batch_size))
        steps = -(-n // batch_size)
    for part, totals, logits in tqdm(chunks, total=steps, desc=desc, disable=not progress):
        if end is not None:
            fmap_total[part] = totals[:, fmap].cpu()
        p_target[part] = F.softmax(logits, dim=1)[:, target].cpu()
        log_p_target[part] = F.log_softmax(logits, dim=1)[:, target].cpu()
        top_label[part] = logits.argmax(dim=1).cpu()

    return OcclusionMaps(
        positions=positions, grid=grid, size=size, stride=stride,
        layer=chosen.name if chosen else None, fmap=fmap,
        fmap_total=fmap_total.view(grid) if chosen else None, p_target=p_target.view(grid),
        log_p_target=log_p_target.view(grid),
        top_label=top_label.view(grid), target=target,
        clean_fmap_total=float(clean_totals[0, fmap]) if chosen else None,
        clean_p_target=float(clean_probs[target]), clean_label=clean_label,
        clean_probs=clean_probs.cpu(), module_name=chosen.module_name if chosen else "",
        image_size=tuple(image.shape[-2:]), method="full" if engine is None else "incremental")


def plot_fig7(maps: OcclusionMaps, image, *, classes: Optional[Sequence[str]] = None,
              projection=None, path=None, title: str = ""):
    """Draw Fig 7's row for one result: (a) the image with the most damaging occluder position,
    (b) the strongest map's total activation, (c) its deconv projection where one is given,
    (d) p(target), (e) the most probable label, (f) the fall in p(target) at each pixel over
    the image (:meth:`OcclusionMaps.resampled`).

    matplotlib is imported here, not when ``zfnet_cli`` is; the figure is built without pyplot,
    so a notebook's backend is left as it is and the returned figure shows as a cell's value.

    Args:
        maps (OcclusionMaps): one result of :func:`occlude`.
        image: the image that was occluded, for display: (3, H, W) or (H, W, 3), a tensor or an
            array, uint8 (0..255) or float; floats outside 0..1 (a preprocessed input) are
            stretched to 0..1 for display.
        classes (sequence of str, optional): class names in label order. Default: the indices.
        projection (optional): panel (c), a deconv projection (3, H, W) (e.g.
            ``Deconvnet(model).project(x[None], [Request(0, maps.layer, maps.fmap)])[0]``).
            Default: ``None``, the panel is left out.
        path (str or Path, optional): also write the figure there as a PNG.
        title (str, optional): the figure's title.

    Returns:
        matplotlib.figure.Figure: the row.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=5)
        >>> x = torch.rand(3, 64, 64)
        >>> fig = plot_fig7(occlude(net, x, size=16, stride=8), x)
        >>> len(fig.axes) >= 5
        True
    """
    import numpy as np

    from zfnet_cli import viz

    img = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    img = img.detach().cpu()
    if img.dim() == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.permute(1, 2, 0)  # (H, W, 3)
    if tuple(img.shape[:2]) != tuple(maps.image_size) or img.dim() != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be the occluded (3, {maps.image_size[0]}, "
                         f"{maps.image_size[1]}) image or (H, W, 3), got {tuple(img.shape)}")
    if img.is_floating_point():
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo or 1.0) if lo < 0 or hi > 1 else img
        img = (img.double() * 255).round().clamp(0, 255).to(torch.uint8)
    names = list(classes) if classes is not None else [str(i) for i in range(len(maps.clean_probs))]
    worst = int(maps.log_p_target.flatten().argmin())
    y, x = maps.positions[worst].tolist()
    proj = None
    if projection is not None:
        proj = viz.projection_to_image(torch.as_tensor(projection).detach().cpu().numpy(),
                                       viz.FIGURE_GAIN)
    drop = maps.clean_p_target - maps.resampled()["p_target"]
    fig = viz.occlusion_row(
        img.numpy(), (y, x, maps.size),
        maps.fmap_total.numpy() if maps.fmap_total is not None else None, proj, maps.p_target.numpy(),
        maps.top_label.numpy(), names, maps.centers().numpy(), overlay=drop.numpy(),
        title=title, fmap=f"{maps.layer} map {maps.fmap}", target=names[maps.target])
    if path is not None:
        viz.save_png(fig, path)
    return fig
