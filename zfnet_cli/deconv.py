"""The switch deconvnet (Zeiler & Fergus 2014, §2.1 and Fig 1): project activations to pixels.

To examine one activation (or one whole feature map, ``fmap``) of layer L of one image:

1. run the image forward and record the max-pool **switches** (the argmax location inside
   each pooling region);
2. keep that activation's value, set every other activation of layer L to zero;
3. go down module by module to the pixels: **unpool** with the switches, **rectify** (ReLU),
   **filter** with the forward filters transposed (``conv_transpose2d`` with the conv's weight).

Choices the paper leaves UNSTATED, taken as its peers do:

* contrast normalisation (``nn.LocalResponseNorm``) is not inverted: it is skipped on the way
  down (its switch-free "inverse" is not defined in the paper);
* biases are not used on the way down (the forward pass, and so the kept activation's value,
  does use them);
* where overlapping pooling regions (3x3 stride 2) share a switch, :func:`unpool` sums their
  contributions (the exact transpose of max-pooling; ``F.max_unpool2d`` would keep one of them,
  and which one is undefined on the GPU);
* ``Dropout`` / ``Identity`` are passed through (a deconvnet looks at a network in eval mode).

So for a stack of Conv2d / ReLU / MaxPool2d only, a projection equals the input gradient of the
kept activation (times its value) computed by autograd with every ReLU's backward replaced by
``relu(grad)``; with LRN it does not (autograd back-propagates through LRN).

**Where "layer L" is.** Layer L is the output of stage L: the L-th ``Conv2d`` and everything
after it up to the next ``Conv2d`` (its ReLU, max-pool and contrast norm). For ZFNet that is
post-pool (and post-norm) for conv1/conv2/conv5, exactly ``ZFNet.layer_outputs``; 96x55x55 for
conv1 at 224 px. ``point="relu"`` moves it to just after the conv's ReLU (96x110x110).

Layer names are those of :mod:`zfnet_cli.layers`: the module names when every conv is named
like the paper (``conv1``, ``conv2``, ``conv5`` ... for ZFNet, also with conv3/conv4 dropped),
else ``conv1`` .. ``convK`` for the K-th ``Conv2d`` stage (torchvision's ``alexnet``: conv1 ..
conv5, ``vgg16``: conv1 .. conv13). The qualified module names of the stack (``features.12``,
``features.pool5``) are accepted too and read that module's output.

This explicit deconvnet covers plain stacks only; :mod:`zfnet_cli.deconv_graph` applies the
same three rules through the graph of any network.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from zfnet_cli.layers import flatten_sequential
from zfnet_cli.model import conv_output_size

# Modules a deconvnet goes through unchanged both ways (Dropout: eval mode).
_PASSTHROUGH = (nn.Dropout, nn.Dropout2d, nn.Identity)
_SUPPORTED = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm) + _PASSTHROUGH


class Request(NamedTuple):
    """One projection: ``image`` index into the images given to :meth:`Deconvnet.project`,
    ``layer`` name, feature map ``fmap``, and ``position`` ``(y, x)`` in that layer's output,
    or ``None`` to keep the whole feature map. ``value`` (one position only) seeds the
    activation with this value instead of its own: the same seed sent down through another
    image's forward pass (:mod:`zfnet_cli.sanity`)."""

    image: int
    layer: str
    fmap: int
    position: Optional[tuple[int, int]] = None
    value: Optional[float] = None


@dataclass
class DeconvState:
    """What one switch-recording forward pass leaves for the way down, for a batch of B images.

    Attributes:
        activations: layer name -> (B, C, h, w) activations at that layer (see module doc).
        switches: max-pool module name -> (B, C, h, w) int64 switches, flat indices into the
            pre-pool (H, W) plane (the format of ``F.max_pool2d(..., return_indices=True)``).
            Empty when the forward ran with ``switches=False``.
        sizes: conv / max-pool module name -> (H, W) of its input (to undo it to that size).
    """

    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    switches: dict[str, torch.Tensor] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def unpool(x: torch.Tensor, switches: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Paper §2.1 unpooling: put each value of ``x`` (N, C, h, w) back at its switch in a zero
    (N, C, H, W) plane, ``size = (H, W)``. Values sharing a switch (overlapping pooling) add up."""
    n, c = x.shape[:2]
    assert switches.shape == x.shape, f"switches {tuple(switches.shape)} != x {tuple(x.shape)}"
    out = x.new_zeros(n, c, size[0] * size[1])
    out.scatter_add_(2, switches.flatten(2), x.flatten(2))
    return out.view(n, c, size[0], size[1])


def rectify(x: torch.Tensor) -> torch.Tensor:
    """Paper §2.1: the reconstruction is passed through a ReLU on the way down too."""
    return F.relu(x)


def filter_down(x: torch.Tensor, conv: nn.Conv2d, size: Sequence[int]) -> torch.Tensor:
    """Paper §2.1 filtering: the forward filters transposed (flipped in both axes), i.e.
    ``conv_transpose2d`` with the conv's own weight, no bias, back to the conv's input ``size``."""
    h, w = x.shape[-2:]
    pad = []
    for i, (n_in, n_out) in enumerate(zip(size, (h, w))):
        full = ((n_out - 1) * conv.stride[i] - 2 * conv.padding[i]
                + conv.dilation[i] * (conv.kernel_size[i] - 1) + 1)
        pad.append(n_in - full)  # rows/cols the strided forward conv never reached
    return F.conv_transpose2d(x, conv.weight, None, conv.stride, conv.padding, tuple(pad),
                              conv.groups, conv.dilation)


class Deconvnet:
    """Switch deconvnet over the feature part of a conv net (Zeiler & Fergus 2014, §2.1).

    Supports any feature part that is a (possibly nested) ``nn.Sequential`` of ``Conv2d``,
    ``ReLU``, ``MaxPool2d`` (plain or :class:`~zfnet_cli.model.SwitchMaxPool2d`),
    ``LocalResponseNorm``, ``Dropout`` and ``Identity``: our ZFNet and its AlexNet-style
    variants, torchvision's ``alexnet().features`` and ``vgg16().features``. The deconvnet
    holds no weights of its own: it reads the wrapped modules', so it follows ``.to(device)``
    and training of the model.

    Args:
        features (nn.Module): the feature ``nn.Sequential`` itself, or a model with a
            ``.features`` ``nn.Sequential`` (``ZFNet``, torchvision ``AlexNet`` / ``VGG``).
        point (str, optional): where layer L is read. ``"stage"``: the output of stage L (the
            L-th conv and its ReLU / pool / norm up to the next conv), as
            ``ZFNet.layer_outputs``. ``"relu"``: right after the L-th conv's ReLU (after the
            conv itself if no ReLU follows it). Default: ``"stage"``.

    Attributes:
        layers (list[str]): the paper's layer names, bottom to top, e.g. ``["conv1", ...,
            "conv5"]``, ``["conv1", ..., "conv13"]`` for ``vgg16().features``. Module names of
            the stack (``"features.28"``) are accepted wherever a layer is asked for.

    Notes:
        On the way down, contrast normalisation is skipped (not inverted) and biases are not
        used; both are UNSTATED in the paper and this is what its peers do. Overlapping pooling
        regions that share a switch add up in :func:`unpool`. Without LRN the projection equals
        ``value x d(activation)/d(input)`` by autograd with every ReLU's backward replaced by
        ``relu(grad)`` (tests/test_deconv.py checks this). Projections keep the scale of the
        network's weights: normalise each one for display.

    Raises:
        ValueError: if the feature part holds any other module (BatchNorm, a residual block,
            ...), naming its position, name and type; or if it holds no ``Conv2d``.

    Example:
        >>> from zfnet_cli.model import ModelConfig, ZFNet
        >>> net = ZFNet(ModelConfig()).eval()
        >>> deconv = Deconvnet(net)
        >>> deconv.layers
        ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
        >>> images = torch.randn(2, 3, 224, 224)
        >>> proj = deconv.project(images, [Request(0, "conv5", 17, (3, 2)),
        ...                                Request(1, "conv2", 5, None)])
        >>> proj.shape
        torch.Size([2, 3, 224, 224])

    Reference:
        M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional Networks",
        ECCV 2014, §2.1, Fig 1. https://arxiv.org/abs/1311.2901
    """

    def __init__(self, features: nn.Module, point: Literal["stage", "relu"] = "stage"):
        seq = getattr(features, "features", features)
        if not isinstance(seq, nn.Sequential):
            raise ValueError(f"Deconvnet needs an nn.Sequential or a model with a .features "
                             f"nn.Sequential, got {type(features).__name__}")
        if point not in ("stage", "relu"):
            raise ValueError(f"point must be 'stage' or 'relu', got {point!r}")
        self.sequential, self.point = seq, point
        self.modules = flatten_sequential(seq)
        prefix = "features." if seq is not features else ""  # module names as the model has them
        for i, (name, m) in enumerate(self.modules):
            if not isinstance(m, _SUPPORTED):
                raise ValueError(
                    f"Deconvnet cannot go through layer {i} {name!r} ({type(m).__name__}): only "
                    f"Conv2d, ReLU, MaxPool2d, LocalResponseNorm, Dropout and Identity are "
                    f"supported (paper §2.1)")
            if isinstance(m, nn.Conv2d) and (isinstance(m.padding, str)
                                             or m.padding_mode != "zeros"):
                raise ValueError(f"Deconvnet cannot go through layer {i} {name!r} (Conv2d with "
                                 f"padding={m.padding!r}, padding_mode={m.padding_mode!r}): "
                                 f"only numeric zero padding is supported")
        convs = [i for i, (_, m) in enumerate(self.modules) if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError("Deconvnet needs at least one Conv2d in the feature part")
        self._convs = [self.modules[i][1] for i in convs]
        names = [self.modules[i][0] for i in convs]
        paper = all(re.fullmatch(r"conv\d+", n) for n in names)
        # the paper's names, as zfnet_cli.layers gives them: conv1 .. convK
        self.layers: list[str] = names if paper else [f"conv{k + 1}" for k in range(len(convs))]
        # layer -> index (into self.modules) of the module whose output is the layer
        self._end: dict[str, int] = {}
        for k, (layer, start) in enumerate(zip(self.layers, convs)):
            stop = convs[k + 1] if k + 1 < len(convs) else len(self.modules)
            end = stop - 1
            if point == "relu":
                relus = [i for i in range(start, stop) if isinstance(self.modules[i][1], nn.ReLU)]
                end = relus[0] if relus else start
            self._end[layer] = end
        # module names read that module's output (zfnet_cli.layers: one naming everywhere)
        for i, (name, _) in enumerate(self.modules):
            self._end.setdefault(prefix + name, i)

    rule = "deconvnet"  # the paper's way down; other rules go through the graph deconvnet

    def __repr__(self) -> str:
        return f"Deconvnet(layers={self.layers}, point={self.point!r})"

    def conditioning(self, layer: str, input_size=None) -> dict[str, int]:
        """What makes a projection from ``layer`` depend on its image: the max-pools below
        it (``switches``); the rest of the way down is fixed (see
        :meth:`~zfnet_cli.deconv_graph.GraphDeconvnet.conditioning`)."""
        self._check_layer(layer)
        return {"switches": sum(isinstance(m, nn.MaxPool2d)
                                for _, m in self.modules[: self._end[layer] + 1])}

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        w = self._convs[0].weight
        return w.device, w.dtype

    def _check_layer(self, layer: str) -> None:
        if layer not in self._end:
            raise ValueError(f"unknown layer {layer!r}; this network has {self.layers} (or "
                             f"the module names of its feature stack)")

    def num_maps(self, layer: str, input_size=None) -> int:
        """Number of feature maps of ``layer``: the channels of the last conv at or below it
        (``input_size`` is not needed here; taken for the :class:`~zfnet_cli.deconv_graph.Projector`
        contract)."""
        self._check_layer(layer)
        end = self._end[layer]
        convs = [m for _, m in self.modules[: end + 1] if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"layer {layer!r} is below the first conv: it has no feature maps")
        return convs[-1].out_channels

    def depth(self, layer: str) -> int:
        """Position of ``layer`` in the stack (higher is later)."""
        self._check_layer(layer)
        return self._end[layer]

    @torch.no_grad()
    def forward(self, images: torch.Tensor, *, upto: Optional[str] = None,
                switches: bool = True) -> DeconvState:
        """Run the feature part forward on a batch, recording activations and switches.

        Args:
            images (Tensor): (B, 3, H, W) input batch (moved to the model's device and dtype).
            upto (str, optional): stop after this layer. Default: the top layer.
            switches (bool, optional): record the max-pool switches (needed by the way down;
                :func:`~zfnet_cli.top9.scan_top9` skips them). Default: ``True``.

        Returns:
            DeconvState: activations of every layer up to ``upto``, switches and input sizes.
        """
        device, dtype = self._device_dtype()
        x = images.to(device=device, dtype=dtype)
        top = self.layers[-1] if upto is None else upto
        self._check_layer(top)
        stop = self._end[top]
        at: dict[int, list[str]] = {}
        for layer, end in self._end.items():
            at.setdefault(end, []).append(layer)
        state = DeconvState()
        for i, (name, m) in enumerate(self.modules[: stop + 1]):
            if isinstance(m, nn.Conv2d):
                state.sizes[name] = tuple(x.shape[-2:])
                x = m(x)
            elif isinstance(m, nn.ReLU):
                x = F.relu(x)  # functional: an inplace module would overwrite kept activations
            elif isinstance(m, nn.MaxPool2d):
                state.sizes[name] = tuple(x.shape[-2:])
                args = (m.kernel_size, m.stride, m.padding, m.dilation)
                if switches:
                    x, state.switches[name] = F.max_pool2d(x, *args, ceil_mode=m.ceil_mode,
                                                           return_indices=True)
                else:
                    x = F.max_pool2d(x, *args, ceil_mode=m.ceil_mode)
            elif isinstance(m, nn.LocalResponseNorm):
                x = m(x)
            for layer in at.get(i, ()):
                state.activations[layer] = x
        return state

    __call__ = forward

    @torch.no_grad()
    def down(self, x: torch.Tensor, layer: str, state: DeconvState,
             switch_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Project a (N, C, h, w) reconstruction at ``layer`` down to pixels (N, 3, H, W).

        Args:
            x (Tensor): what to project, shaped like ``state.activations[layer]`` but for N
                rows (usually all zeros but the kept activations).
            layer (str): the layer ``x`` lives at.
            state (DeconvState): a forward pass with switches.
            switch_rows (Tensor, optional): (N,) int64, the row of ``state`` (image in the forward
                batch) whose switches each row of ``x`` uses. Default: ``arange(N)``.

        Returns:
            Tensor: (N, 3, H, W) projections, on the model's device.
        """
        self._check_layer(layer)
        if switch_rows is None:
            switch_rows = torch.arange(x.shape[0], device=x.device)
        for name, m in reversed(self.modules[: self._end[layer] + 1]):
            if isinstance(m, nn.MaxPool2d):
                if name not in state.switches:
                    raise ValueError(f"no switches for {name!r}: run forward(..., switches=True)")
                x = unpool(x, state.switches[name][switch_rows], state.sizes[name])
            elif isinstance(m, nn.ReLU):
                x = rectify(x)
            elif isinstance(m, nn.Conv2d):
                x = filter_down(x, m, state.sizes[name])
            # LocalResponseNorm: not inverted (UNSTATED in the paper); Dropout/Identity: pass
        return x

    def _validate(self, requests: Sequence, images: torch.Tensor) -> list[Request]:
        n_images, out, shapes = images.shape[0], [], {}
        for j, r in enumerate(requests):
            r = Request(*r)
            self._check_layer(r.layer)
            if not 0 <= r.image < n_images:
                raise ValueError(f"request {j}: image {r.image} out of range [0, {n_images})")
            if r.layer not in shapes:
                shapes[r.layer] = (self.num_maps(r.layer),
                                   *self._sizes(r.layer, images.shape[-2:])[1])
            c, h, w = shapes[r.layer]
            if not 0 <= r.fmap < c:
                raise ValueError(f"request {j}: fmap {r.fmap} out of range for {r.layer} "
                                 f"({c} maps)")
            if r.position is not None:
                y, x = r.position
                if not (0 <= y < h and 0 <= x < w):
                    raise ValueError(f"request {j}: position {(y, x)} outside {r.layer}'s "
                                     f"{h}x{w} output")
                r = r._replace(position=(int(y), int(x)))
            out.append(r)
        return out

    @torch.no_grad()
    def project(self, images: torch.Tensor, requests: Sequence[Request | tuple], *,
                batch_size: int = 32) -> torch.Tensor:
        """Project many activations (or whole feature maps) to pixel space, batched.

        Images are run forward (recording switches) in chunks of ``batch_size`` distinct
        requested images; within a chunk, the requests of each layer go down together, in
        chunks of ``batch_size`` requests, each with its own image's switches.

        Args:
            images (Tensor): (N, 3, H, W) the images the requests index into.
            requests (sequence of Request or tuple): each ``(image, layer, fmap, position)``,
                ``position = (y, x)`` in the layer's output to keep one activation, or ``None``
                to keep the whole feature map ``fmap``. The kept activations keep their
                forward values; all others of that layer are zero.
            batch_size (int, optional): images per forward and requests per way down (memory:
                about ``batch_size`` x the largest activation below the layer). Default: 32.

        Returns:
            Tensor: (R, 3, H, W) projections in request order, on the model's device and dtype.

        Raises:
            ValueError: for an unknown layer or an image / fmap / position out of range.
        """
        if images.dim() != 4:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        requests = list(requests)
        device, dtype = self._device_dtype()
        out = torch.zeros(len(requests), *images.shape[1:], device=device, dtype=dtype)
        if not requests:
            return out
        reqs = self._validate(requests, images)
        wanted = sorted({r.image for r in reqs})
        for c0 in range(0, len(wanted), batch_size):
            chunk = wanted[c0:c0 + batch_size]
            local = {img: i for i, img in enumerate(chunk)}
            mine = [j for j, r in enumerate(reqs) if r.image in local]
            top = max((reqs[j].layer for j in mine), key=self._end.__getitem__)
            state = self.forward(images[chunk], upto=top)
            for layer in dict.fromkeys(reqs[j].layer for j in mine):
                idx = [j for j in mine if reqs[j].layer == layer]
                for s0 in range(0, len(idx), batch_size):
                    part = [reqs[j] for j in idx[s0:s0 + batch_size]]
                    rows = idx[s0:s0 + batch_size]
                    out[rows] = self._project_layer(state, layer, part, local)
                state.activations.pop(layer, None)  # freed once its requests are done
        return out

    def _project_layer(self, state: DeconvState, layer: str, part: list[Request],
                       local: dict[int, int]) -> torch.Tensor:
        act = state.activations[layer]  # (B, C, h, w)
        dev = act.device
        n = len(part)
        imgs = torch.tensor([local[r.image] for r in part], device=dev)
        fmaps = torch.tensor([r.fmap for r in part], device=dev)
        rows = torch.arange(n, device=dev)
        seed = act.new_zeros(n, *act.shape[1:])  # (R, C, h, w): all zero but the kept ones
        whole = torch.tensor([r.position is None for r in part], device=dev)
        if whole.any():
            seed[rows[whole], fmaps[whole]] = act[imgs[whole], fmaps[whole]]
        if not whole.all():
            one = ~whole
            ys = torch.tensor([r.position[0] if r.position else 0 for r in part], device=dev)
            xs = torch.tensor([r.position[1] if r.position else 0 for r in part], device=dev)
            given = torch.tensor([float("nan") if r.value is None else r.value for r in part],
                                 device=dev, dtype=act.dtype)
            own = act[imgs[one], fmaps[one], ys[one], xs[one]]
            seed[rows[one], fmaps[one], ys[one], xs[one]] = torch.where(
                given[one].isnan(), own, given[one])
        return self.down(seed, layer, state, imgs)

    def _sizes(self, layer: str, input_size: Union[int, Sequence[int]]
               ) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        """(H, W) entering each module up to ``layer``, and ``layer``'s own (h, w), by
        kernel / stride / padding arithmetic (no forward pass)."""
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        sizes = []
        for name, m in self.modules[: self._end[layer] + 1]:
            sizes.append((h, w))
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                k, s, p, d = _geometry(m)
                ceil = getattr(m, "ceil_mode", False)
                h, w = (conv_output_size(n, d[i] * (k[i] - 1) + 1, s[i], p[i], ceil)
                        for i, n in enumerate((h, w)))
        return sizes, (h, w)

    def receptive_field(self, layer: str, y: int, x: int,
                        input_size: Union[int, tuple[int, int]]) -> tuple[int, int, int, int]:
        """See :func:`receptive_field`."""
        self._check_layer(layer)
        sizes, (h, w) = self._sizes(layer, input_size)
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"position {(y, x)} outside {layer}'s {h}x{w} output")
        box = [[y, y], [x, x]]  # inclusive, per axis
        for (name, m), size in zip(reversed(self.modules[: self._end[layer] + 1]),
                                   reversed(sizes)):
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
                k, s, p, d = _geometry(m)
                for i in range(2):
                    lo, hi = box[i]
                    box[i] = [max(lo * s[i] - p[i], 0),
                              min(hi * s[i] - p[i] + d[i] * (k[i] - 1), size[i] - 1)]
        return box[0][0], box[1][0], box[0][1] + 1, box[1][1] + 1


def _geometry(m: nn.Module) -> tuple[tuple[int, int], ...]:
    """(kernel, stride, padding, dilation) of a conv or pool, each as (H, W) pairs."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    return tuple(pair(getattr(m, a)) for a in ("kernel_size", "stride", "padding", "dilation"))


def receptive_field(features: Union[Deconvnet, nn.Module], layer: str, y: int, x: int,
                    input_size: Union[int, tuple[int, int]]) -> tuple[int, int, int, int]:
    """The input-pixel window that can influence activation (y, x) of ``layer``.

    Kernel / stride / padding / dilation arithmetic down through the convs and pools (ReLU and
    contrast norm are pointwise in space), clipped to each intermediate map and to the image.
    Fig 2 crops the image patch shown beside each projection with it.

    Args:
        features (Deconvnet or nn.Module): a :class:`Deconvnet` (its ``point`` is used), or
            what its constructor takes (then ``point="stage"``).
        layer (str): a name from ``Deconvnet.layers``.
        y, x (int): position in that layer's output.
        input_size (int or (int, int)): the image's side, or (H, W).

    Returns:
        tuple[int, int, int, int]: ``(y0, x0, y1, x1)``, half-open: the patch is
        ``image[:, y0:y1, x0:x1]``.

    Example:
        >>> from zfnet_cli.model import ZFNet
        >>> receptive_field(Deconvnet(ZFNet(), point="relu"), "conv1", 10, 20, 224)
        (19, 39, 26, 46)
    """
    net = features if isinstance(features, Deconvnet) else Deconvnet(features)
    return net.receptive_field(layer, y, x, input_size)
