"""Sanity numbers for projections: does a picture show the image, and does it show the model?

A projection rule (:data:`~zfnet_cli.deconv_graph.RULES`) can draw a picture that looks
informative and depends on neither. Three checks, each cheap enough to go with every figure:

* **conditioning** (static, free): what on the way down from the layer depends on the image
  (max-pool switches, under ``guided`` / ``gradient`` the rectifiers' forward masks, gates,
  norm statistics), counted by :meth:`~zfnet_cli.deconv_graph.GraphDeconvnet.conditioning` in
  one forward of a blank image. None: every projection of a unit at a position is one
  **template** scaled by the activation (the deconvnet on a network without max-pools).
* **image similarity** (:func:`image_similarity`; one extra projection per shown one, so the
  figure's projection cost doubles): each shown seed (unit, position, value) is also sent down
  through the next shown image's forward pass, and the two projections are compared by Pearson
  correlation inside the seed's receptive field. The mean over the shown seeds is near 1 where
  the picture does not depend on the image; above :data:`TEMPLATE_SIMILARITY` figures and pages
  warn.
* **model specificity** (:func:`cascade`; Adebayo et al., "Sanity Checks for Saliency Maps",
  NeurIPS 2018): the weights are re-initialised block by block from the layer down to the
  input, and the projection of a unit's whole feature map is compared with the trained one by
  Spearman rank correlation of ``|map|`` and by SSIM of ``|map| / max|map|``, over the image. Weights above the
  layer do not enter a projection from it, so the cascade starts at the layer itself. A rule
  whose curve stays high draws the image (or the architecture), not what the weights learnt.
  Cost: (blocks + 1) x rules projections per unit, run as its own command.

SSIM is Wang et al. 2004 as scikit-image computes it by default (7x7 uniform window, sample
covariance, K1 = 0.01, K2 = 0.03, mean over the window positions inside the image).
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zfnet_cli.deconv import Request
from zfnet_cli.deconv_graph import GraphDeconvnet, Projector, _Stop, device_dtype, rule_for
from zfnet_cli.layers import evaluating, resolve_layer

__all__ = ["TEMPLATE_SIMILARITY", "is_template", "template_note", "window_correlation",
           "cross_requests", "image_similarity", "spearman", "ssim", "cascade_blocks", "cascade"]

# Above this mean correlation between a seed's projection through its own image and through
# another shown image, a picture is reported as (close to) a template of the unit. Measured
# (README, "What a projection can and cannot show"): the deconvnet on EfficientNet-Lite0 gives
# 1.00, guided backpropagation 0.1-0.5 there, the demo ZFNet's deconvnet (switches) well below.
TEMPLATE_SIMILARITY = 0.9


def is_template(conditioning: dict[str, int]) -> bool:
    """Nothing on the way down depends on the image: the projection is a template.

    Args:
        conditioning (dict[str, int]): a projector's ``conditioning(layer)`` counts.

    Returns:
        bool: ``True`` where every count is zero.

    Example:
        >>> is_template({"switches": 0, "gates": 0, "norms": 0})
        True
    """
    return sum(conditioning.values()) == 0


def template_note(rule: str, layer: str, conditioning: dict[str, int],
                  similarity: Optional[float] = None) -> str:
    """The warning a figure or page shows, or ``""`` where there is none."""
    if is_template(conditioning):
        return (f"{layer} under the {rule} rule: nothing on the way down depends on the image "
                f"(no max-pool switch, mask, gate or norm), so each projection is a template "
                f"of the unit, not a picture of the image")
    if similarity is not None and similarity > TEMPLATE_SIMILARITY:
        return (f"{layer} under the {rule} rule: the same seed through other images gives "
                f"nearly the same projection (correlation {similarity:.2f} > "
                f"{TEMPLATE_SIMILARITY}): close to a template of the unit")
    return ""


def window_correlation(a, b, box: Optional[Sequence[int]] = None) -> Optional[float]:
    """Pearson correlation of two (C, H, W) projections (tensors or arrays) inside ``box``
    (y0, x0, y1, x1; default: all of them): ``None`` where both are constant there, 0 where
    one is (a flat map shares no structure with another)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if box is not None:
        y0, x0, y1, x1 = box
        a, b = a[:, y0:y1, x0:x1], b[:, y0:y1, x0:x1]
    u, v = a.flatten().double(), b.flatten().double()
    u, v = u - u.mean(), v - v.mean()
    nu, nv = u.norm(), v.norm()
    if u.numel() < 2 or (nu == 0 and nv == 0):
        return None
    return float((u @ v) / (nu * nv)) if nu > 0 and nv > 0 else 0.0


def cross_requests(requests: Sequence[Request]) -> Optional[list[Request]]:
    """Each seed (unit, position, value) sent down through the next shown image instead of its
    own (cyclically, the next *different* image); ``None`` where fewer than two images are
    shown (nothing to compare).

    Raises:
        ValueError: a seed without a position or a value (the deconvnet is homogeneous only for
            positive scales, so the same seed needs the same value).
    """
    reqs = [Request(*r) for r in requests]
    if any(r.position is None or r.value is None for r in reqs):
        raise ValueError("image similarity takes seeds at one position with their value each")
    if len({r.image for r in reqs}) < 2:
        return None
    n = len(reqs)
    return [r._replace(image=next(reqs[(j + s) % n].image for s in range(1, n)
                                  if reqs[(j + s) % n].image != r.image))
            for j, r in enumerate(reqs)]


def image_similarity(deconv: Projector, images: torch.Tensor, requests: Sequence[Request],
                     boxes: Sequence[Sequence[int]], own: Optional[torch.Tensor] = None, *,
                     batch_size: int = 32) -> Optional[float]:
    """Mean correlation between each seed's projection through its own image and through the
    next shown image (cyclically; the next *different* image), inside the seed's box.

    Args:
        deconv (Projector): the projector (its rule is the one measured).
        images (Tensor): (N, C, H, W) the images the requests index into.
        requests (sequence of Request): one unit's shown seeds, each at one position with
            its ``value`` (the shown activation's: the deconvnet is homogeneous only for
            positive scales, so the same seed means the same value).
        boxes (sequence of box): the receptive field (y0, x0, y1, x1) of each request.
        own (Tensor, optional): (R, C, H, W) the requests' own projections, where the figure
            has them already. Default: projected here.
        batch_size (int, optional): images per recorded forward pass. Default: 32.

    Returns:
        float or None: the mean correlation (1: the same picture whatever the image); ``None``
        where the requests use fewer than two distinct images or nothing can be compared.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=4).eval()
        >>> g = GraphDeconvnet(net)
        >>> reqs = [Request(0, "layer1.0", 3, (4, 4), 1.5), Request(1, "layer1.0", 3, (4, 4), 0.7)]
        >>> s = image_similarity(g, torch.randn(2, 3, 32, 32), reqs, [(0, 0, 32, 32)] * 2)
        >>> -1 <= s <= 1
        True
    """
    reqs = [Request(*r) for r in requests]
    cross = cross_requests(reqs)
    if cross is None:
        return None
    if own is None:  # one call: one recorded forward of an image serves both sets
        both = deconv.project(images, reqs + cross, batch_size=batch_size)
        own, crossed = both[:len(reqs)], both[len(reqs):]
    else:
        crossed = deconv.project(images, cross, batch_size=batch_size)
    scores = [window_correlation(own[j].cpu(), crossed[j].cpu(), boxes[j])
              for j in range(len(reqs))]
    scores = [s for s in scores if s is not None]
    return sum(scores) / len(scores) if scores else None


# ---------------------------------------------------------------- map similarity

def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a flat tensor, ties sharing their average rank."""
    values, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two tensors of the same shape (ties: average ranks);
    0 where either is constant."""
    ra, rb = _ranks(a.flatten().double()), _ranks(b.flatten().double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = ra.norm() * rb.norm()
    return float((ra @ rb) / den) if den > 0 else 0.0


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two (H, W) maps, as scikit-image's
    ``structural_similarity`` computes it by default (uniform ``win`` x ``win`` window, sample
    covariance, K1 = 0.01, K2 = 0.03), averaged over the window positions inside the map."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"ssim takes two (H, W) maps of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if min(a.shape) < win:
        raise ValueError(f"ssim needs maps of at least {win}x{win}, got {tuple(a.shape)}")
    x, y = a.double()[None, None], b.double()[None, None]
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    n = win * win
    norm = n / (n - 1)  # sample covariance
    ux, uy = mean(x), mean(y)
    vx = norm * (mean(x * x) - ux * ux)
    vy = norm * (mean(y * y) - uy * uy)
    vxy = norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


def _saliency(p: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """Adebayo et al.'s map: |projection| summed over colours, inside ``box``, over its max."""
    y0, x0, y1, x1 = box
    m = p[:, y0:y1, x0:x1].abs().sum(0).double()
    top = m.max()
    return m / top if top > 0 else m


# ---------------------------------------------------------------- cascading randomisation

def cascade_blocks(model: nn.Module, layer: str, input_size: int, in_channels: int = 3
                   ) -> list[list[str]]:
    """The modules with weights that a projection from ``layer`` goes down through, grouped
    into blocks, the block holding ``layer`` first and the input's last.

    A block is a child of an ``nn.Sequential`` / ``nn.ModuleList`` (``features.3``,
    ``layer2.1``, ``_blocks.8``), else the module itself; a module with weights that is no
    conv or linear (a BatchNorm) joins the block that ran just before it (its conv's).

    Returns:
        list[list[str]]: per block, the names of its modules with weights, top block first.
    """
    lay = resolve_layer(model, layer)
    names = {m: n for n, m in model.named_modules()}
    containers = {n for n, m in model.named_modules()
                  if isinstance(m, (nn.Sequential, nn.ModuleList))}
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda m, _: order.append(names[m]))
               for m in model.modules()
               if any(True for _ in m.parameters(recurse=False))]

    def stop(*_):  # nothing above the layer enters its projections
        raise _Stop

    handles.append(lay.module.register_forward_hook(stop))
    device, dtype = device_dtype(model)
    try:
        with evaluating(model), torch.no_grad():
            model(torch.zeros(1, in_channels, input_size, input_size, device=device,
                              dtype=dtype))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    blocks: list[tuple[str, list[str]]] = []
    for name in dict.fromkeys(order):
        parts = name.split(".")
        key = next((".".join(parts[:i + 1]) for i in range(len(parts))
                    if ".".join(parts[:i]) in containers or (i == 0 and "" in containers)),
                   name)
        module = model.get_submodule(name)
        if key == name and not isinstance(module, (nn.Conv2d, nn.Linear)) and blocks:
            key = blocks[-1][0]
        if blocks and blocks[-1][0] == key:
            blocks[-1][1].append(name)
        else:
            blocks.append((key, [name]))
    return [mods for _, mods in reversed(blocks)]


def _randomised(model: nn.Module, blocks: Sequence[Sequence[str]], seed: int) -> nn.Module:
    """A copy of ``model`` with the modules of ``blocks`` re-initialised (their own
    ``reset_parameters``), seeded: the same block gets the same weights at every step."""
    out = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for block in blocks:
            for name in block:
                m = out.get_submodule(name)
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
                if hasattr(m, "reset_running_stats"):
                    m.reset_running_stats()
    return out


def cascade(model: nn.Module, images: torch.Tensor, requests: Sequence[Request],
            rules: Sequence[str] = ("deconvnet", "guided", "gradient"), *,
            input_size: Optional[int] = None, max_blocks: Optional[int] = None, seed: int = 0,
            batch_size: int = 32) -> dict:
    """Adebayo et al.'s cascading randomisation for projections: re-initialise the blocks from
    the requests' layer down to the input, one more at each step, and compare each projection
    with the trained model's (see the module doc).

    Args:
        model (nn.Module): the trained model (not changed: the steps work on copies).
        images (Tensor): (N, C, H, W) the images the requests index into.
        requests (sequence of Request): (image, layer, unit) of one layer; each unit's whole
            feature map is the seed, with the values of the model at that step (Adebayo's maps
            are whole-image maps; a single position's map is dominated by the receptive
            field's envelope, which the architecture alone draws).
        rules (sequence of str, optional): the rules compared. Default: all three.
        input_size (int, optional): the images' side. Default: ``images.shape[-1]``.
        max_blocks (int, optional): stop after this many blocks. Default: all.
        seed (int, optional): seed of the re-initialisation. Default: 0.
        batch_size (int, optional): images per recorded forward pass. Default: 32.

    Returns:
        dict: ``{"layer", "blocks": [first module of each block randomised], "units":
        [[image, unit], ...],
        "rules": {rule: {"spearman": [...], "ssim": [...]}}}``, one value per step (step 0:
        trained, 1.0), each the mean over the requests.

    Reference:
        J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim, "Sanity Checks for
        Saliency Maps", NeurIPS 2018. https://arxiv.org/abs/1810.03292
    """
    reqs = [Request(*r)._replace(position=None, value=None) for r in requests]
    layers = {r.layer for r in reqs}
    if len(layers) != 1:
        raise ValueError(f"cascade takes requests of one layer, got {sorted(layers)}")
    layer = layers.pop()
    for rule in rules:
        rule_for(rule)
    blocks = cascade_blocks(model, layer, input_size or images.shape[-1],
                            images.shape[1])[:max_blocks]
    out = {"layer": layer, "blocks": [b[0] for b in blocks],
           "units": [[r.image, r.fmap] for r in reqs], "rules": {}}
    box = (0, 0, images.shape[-2], images.shape[-1])
    trained = {rule: GraphDeconvnet(model, rule=rule).project(images, reqs,
                                                              batch_size=batch_size).cpu()
               for rule in rules}
    curves = {rule: {"spearman": [1.0], "ssim": [1.0]} for rule in rules}
    for step in range(1, len(blocks) + 1):
        net = _randomised(model, blocks[:step], seed)
        for rule in rules:
            proj = GraphDeconvnet(net, rule=rule).project(images, reqs, batch_size=batch_size)
            sp, ss = [], []
            for j in range(len(reqs)):
                a, b = _saliency(trained[rule][j], box), _saliency(proj[j].cpu(), box)
                sp.append(spearman(a, b))
                ss.append(ssim(a, b))
            curves[rule]["spearman"].append(sum(sp) / len(sp))
            curves[rule]["ssim"].append(sum(ss) / len(ss))
    out["rules"] = curves
    return out
