"""The deconvnet on any network: the paper's three rules applied through the network's own graph.

Zeiler & Fergus (§2.1) define the way down for a plain stack: **unpool** with the switches,
**rectify**, **filter** with the transposed filters. :class:`~zfnet_cli.deconv.Deconvnet` does
exactly that, module by module, for plain stacks. A modern network (BatchNorm, residual
additions, concatenation, functional activations, squeeze-excitation gates, LayerNorm) has no
such stack, so here the projection is *defined* as those same three rules applied through the
network's own autograd graph, recorded in one forward pass of the image:

1. **switches at every max-pool**: autograd's max-pool backward puts each value at the argmax
   of its pooling region, which is unpooling with that image's switches (overlapping regions
   add up, as :func:`~zfnet_cli.deconv.unpool` does);
2. **rectification at every nonlinearity**, whatever the forward mask was: ``relu``, ``relu6`` /
   ``hardtanh``, ``hardswish``, ``gelu``, ``silu``, ``elu``, ``selu``, ``celu``, ``leaky_relu``,
   ``mish``, ``softplus``, ``threshold``, ``prelu``, ``clamp`` -- modules, functional calls,
   tensor methods and in-place forms alike -- keep their forward value, and their backward is
   replaced by ``relu(grad)`` (the signal is rectified on the way down, §2.1);
3. **transposed filters at every conv** (and linear layer): autograd's conv backward is
   ``conv_transpose2d`` with the same weight.

Every other operation that is linear in the signal passes its linear adjoint, which is what
autograd computes: BatchNorm in eval mode (scale by weight / sqrt(running_var + eps)), average
and adaptive-average pooling, additions (residual connections: the signal is copied into both
branches), concatenation (split), flatten, reshape, permute, padding, a multiplication by a
parameter (layer scale), dropout and stochastic depth in eval mode. **Biases are not used on the
way down**: a bias does not enter a backward pass. Projections keep the forward values of the
kept activations (the seed is their value, all other activations of the layer are zero).

Operations that are neither in the paper nor linear get these rules (choices, stated here and
in the README):

* **gates** -- ``sigmoid`` and ``hardsigmoid`` (squeeze-excitation in MobileNetV3 and
  EfficientNet): the gate is a **constant** on the way down (its output is detached), so
  ``gate * x`` passes ``gate * signal`` to ``x`` and nothing into the gate branch;
* **LayerNorm / GroupNorm** (ConvNeXt): the statistics (mean, variance) are **constants**, so
  the normalisation is linear in the signal: ``signal * weight / sqrt(var + eps)``;
* **contrast normalisation** (``local_response_norm``): passed unchanged, as the explicit
  deconvnet skips it (paper: UNSTATED);
* **no rule** -- ``softmax`` / attention, ``exp``, ``log``, ``sqrt``, ``pow``, ``abs``,
  ``tanh``, trigonometric functions, ``normalize``, BatchNorm with batch statistics, and any
  product or quotient of two signals (``x * y``, ``q @ k``, a signal in a denominator): a
  one-line :class:`NoRuleError` names the operation and the module it ran in.

**Three rules, one table** (:data:`RULES`; ``rule=`` everywhere a projection is drawn). The
graph above is the paper's ``deconvnet``. Two other ways down differ only at the
nonlinearities, gates and norm statistics, so they are entries of the same table:

* ``guided`` -- guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity",
  arXiv 1412.6806): at every rectifier the signal is multiplied by the nonlinearity's own local
  derivative at this image's input (the forward **mask**: ``x > 0`` for ``relu``,
  ``0 < x < 6`` for ``relu6``), then rectified: ``relu(signal * f'(x))``. For ``relu`` this
  is the paper's "deconvnet ReLU AND forward ReLU mask". Max-pools keep their switches; gates
  and norm statistics are constants as in the deconvnet.
* ``gradient`` -- the plain input gradient of the kept activations (times their value):
  every operation passes its true derivative (gates and norm statistics included, and every
  operation has one, so nothing is refused). The reference a modified rule is compared with.

Every ReLU-like operation is caught by name whatever its module (``nn.ReLU6`` calls
``hardtanh``), so neither modified rule falls back to the gradient on ReLU6 networks.

**What conditions a projection on its image** (:meth:`GraphDeconvnet.conditioning`): the
switches of the max-pools below the layer, under ``guided`` / ``gradient`` the forward masks of
the rectifiers, and the gates and norm statistics (constants of this image). Everything else on
the way down is fixed, so where none of these lies below the layer the projection of unit c at
position p is one template scaled by the activation and shifted with p, the same for every
image (see :mod:`zfnet_cli.sanity`).

The rules are applied by a :class:`torch.overrides.TorchFunctionMode` active during the recording
forward pass: every ``torch`` function call (modules call the functionals, so modules and
functional calls are caught alike) is looked up by name. On plain stacks (Conv2d / ReLU /
MaxPool2d / LRN) the result equals :class:`~zfnet_cli.deconv.Deconvnet`'s (tests check this).

**Receptive field.** The image patch of an activation is the support of its input gradient in
a copy of the network where every path is active: nonlinearities are the identity, max-pools
average over the same windows, every weight is positive (1 / fan-in for convs and linear layers,
1 for other parameters, buffers by absolute value) and gates are positive constants, in float64
(deep products of small weights do not underflow). Positive weights cannot cancel, so the
support is exactly the set of pixels joined to the activation by some path of the graph: the
plain-stack kernel / stride / padding formula on plain stacks (tested), and for residual and
branching networks the union over all paths (a ResNet block's skip path and its convs). The
patch is the bounding box of that support. (Only an explicit subtraction of two signals could
cancel; convnets do not subtract.)
"""
from __future__ import annotations

import copy
import inspect
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from zfnet_cli.deconv import Deconvnet, Request
from zfnet_cli.layers import Layer, block_names, evaluating, read_once, resolve_layer, tap

__all__ = ["GraphDeconvnet", "NoRuleError", "Projector", "RULES", "Rule", "deconvnet_for",
           "default_rule", "project_fmap", "rule_for"]


class NoRuleError(ValueError):
    """An operation of the network has no deconvnet rule (see the module doc).

    Raised during :meth:`GraphDeconvnet.project` with one line that names the operation
    (``softmax``, ``matmul`` of two signals, ...) and the module it ran in. A ``ValueError``,
    so the command line reports it as a user error.
    """


@runtime_checkable
class Projector(Protocol):
    """What Fig 2, Fig 4 and Fig 7 (c) need from a deconvnet: the explicit
    :class:`~zfnet_cli.deconv.Deconvnet` on plain stacks, :class:`GraphDeconvnet` on any
    network."""

    layers: list[str]
    rule: str

    def project(self, images: torch.Tensor, requests: Sequence, *,
                batch_size: int = 32) -> torch.Tensor: ...

    def conditioning(self, layer: str, input_size=224) -> dict[str, int]: ...

    def receptive_field(self, layer: str, y: int, x: int,
                        input_size: Union[int, tuple[int, int]]) -> tuple[int, int, int, int]: ...

    def num_maps(self, layer: str, input_size=None) -> int: ...


def _names(*names: str) -> frozenset[str]:
    """Each name and its in-place form (``relu`` and ``relu_``)."""
    return frozenset(n for name in names for n in (name, name + "_"))


# Rule 2: rectification of the signal at every nonlinearity (forward kept, backward relu(grad)).
_RECTIFY = _names("relu", "relu6", "hardtanh", "hardswish", "gelu", "silu", "elu", "selu", "celu",
                  "leaky_relu", "rrelu", "mish", "softplus", "threshold", "prelu", "clamp",
                  "clamp_min", "clip")
_GATES = _names("sigmoid", "hardsigmoid", "expit")  # constants on the way down
_CONSTANT_STATS = frozenset({"layer_norm", "group_norm"})
_PASS = frozenset({"local_response_norm"})  # not inverted, as the explicit deconvnet
_NO_RULE = _names("softmax", "log_softmax", "softmin", "scaled_dot_product_attention",
                  "multi_head_attention_forward", "exp", "exp2", "expm1", "log", "log2",
                  "log10", "log1p", "sqrt", "rsqrt", "reciprocal", "pow", "square", "abs",
                  "tanh", "sin", "cos", "erf", "sign", "normalize", "cosine_similarity",
                  "__pow__", "__rpow__", "__abs__")
_PRODUCTS = _names("mul", "matmul", "mm", "bmm", "einsum", "baddbmm", "outer", "dot", "bilinear",
                   "__matmul__", "__rmatmul__", "multiply")
_QUOTIENTS = _names("div", "true_divide", "divide", "__truediv__", "__rtruediv__",
                    "floor_divide")
_MAX_POOLS = frozenset({"max_pool2d", "max_pool2d_with_indices", "_max_pool2d",
                        "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"})


@dataclass(frozen=True)
class Rule:
    """How a projection goes down through the operations that make one rule differ from another.

    Attributes:
        name: ``deconvnet``, ``guided`` or ``gradient``.
        rectifier: at a ReLU-like nonlinearity, ``"signal"`` (``relu(signal)``, whatever the
            forward mask: the paper), ``"signal_and_mask"`` (``relu(signal * f'(x))``: guided
            backpropagation) or ``"derivative"`` (``signal * f'(x)``: the gradient).
        constants: gates (``sigmoid`` / ``hardsigmoid``) and LayerNorm / GroupNorm statistics
            are constants on the way down (``True``) or pass their derivative (``False``).
        refuse: operations outside the table raise :class:`NoRuleError` (``True``) or pass their
            derivative (``False``: the gradient has a way down through everything).
        conditioning: the kinds of recorded operation through which a projection under this
            rule depends on its image: ``switches`` (max-pools), ``masks`` (rectifiers),
            ``gates``, ``norms`` (statistics).
        title: how figures and pages name the rule.
    """

    name: str
    rectifier: str
    constants: bool
    refuse: bool
    conditioning: tuple[str, ...]
    title: str


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("deconvnet", "signal", True, True, ("switches", "gates", "norms"),
         "deconvnet (Zeiler & Fergus: switches, ReLU on the signal, transposed filters)"),
    Rule("guided", "signal_and_mask", True, True, ("switches", "masks", "gates", "norms"),
         "guided backpropagation (Springenberg et al.: deconvnet ReLU and forward mask)"),
    Rule("gradient", "derivative", False, False, ("switches", "masks", "gates", "norms"),
         "gradient (the plain input gradient, the reference)"),
)}


def rule_for(name: Union[str, Rule]) -> Rule:
    """The :class:`Rule` called ``name`` (one-line ``ValueError`` naming the choices)."""
    if isinstance(name, Rule):
        return name
    if name not in RULES:
        raise ValueError(f"unknown projection rule {name!r}; choose one of {', '.join(RULES)}")
    return RULES[name]


def default_rule(model: nn.Module) -> str:
    """The rule a projection of ``model`` uses when none is asked for: the paper's
    ``deconvnet`` on the paper's networks (:class:`~zfnet_cli.model.ZFNet` and its
    AlexNet-style variants, where max-pool switches carry the image), ``guided`` elsewhere
    (on networks without max-pools the deconvnet draws one template per unit whatever the
    image; the README's "What a projection can and cannot show" gives the measurements).

    Args:
        model (nn.Module): any model.

    Returns:
        str: ``"deconvnet"`` or ``"guided"``.

    Example:
        >>> from zfnet_cli.model import ModelConfig, ZFNet
        >>> default_rule(ZFNet(ModelConfig())), default_rule(nn.Sequential(nn.Conv2d(3, 4, 3)))
        ('deconvnet', 'guided')
    """
    from zfnet_cli.model import ZFNet

    return "deconvnet" if isinstance(model, ZFNet) else "guided"


def _is_signal(t) -> bool:
    # During a recording forward the parameters are frozen and the input requires grad, so a
    # tensor requires grad exactly when it depends on the input: it carries the signal.
    return isinstance(t, torch.Tensor) and t.requires_grad


def _bind(func, args, kwargs) -> dict:
    """Arguments by name where ``func`` has a Python signature (the ``F.*`` functionals)."""
    try:
        return inspect.signature(func).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return {}


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the layer read has run."""


class _Rectify(torch.autograd.Function):
    """Forward: the real nonlinearity (on a copy: in-place forms stay correct). Backward:
    ``relu(grad)``, the paper's rectification of the signal on the way down; with ``mask``
    (guided backpropagation) ``relu(grad * f'(x))``, ``f'`` the nonlinearity's own local
    derivative at this forward input (every caught nonlinearity is pointwise)."""

    @staticmethod
    def forward(ctx, x, op, mask, slope=None):
        ctx.mask = mask
        if not mask:
            return op(x.clone())
        if slope is not None:  # a clipping rectifier: where f' = 0, from the input; no extra pass
            ctx.save_for_backward(slope(x))
            return op(x.clone())
        with torch.enable_grad():  # forward runs under no_grad: take f'(x) here, once
            xx = x.detach().clone().requires_grad_(True)
            y = op(xx.clone())
            (d,) = torch.autograd.grad(y, xx, torch.ones_like(y))
        ctx.save_for_backward(d)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        if ctx.mask:
            (slope,) = ctx.saved_tensors
            if slope.dtype == torch.bool:  # a clipping rectifier: zero where f' is zero
                return F.relu(grad).masked_fill_(slope, 0.0), None, None, None
            return F.relu(grad * slope), None, None, None
        return F.relu(grad), None, None, None


def _clip_slope(func, name: str, args, kwargs):
    """For the rectifiers that clip (``relu``, ``relu6``, ``hardtanh``, the ``nn.ReLU6``
    form), a function of the input giving where their derivative is zero (as autograd defines
    it: 0 at the kinks); ``None`` for the others (their derivative is taken by autograd)."""
    base = name.rstrip("_")
    if base == "relu":
        return lambda x: x <= 0
    if base in ("relu6", "hardtanh"):
        b = _bind(func, args, kwargs)
        lo, hi = ((0.0, 6.0) if base == "relu6" else
                  (b.get("min_val", args[1] if len(args) > 1 else -1.0),
                   b.get("max_val", args[2] if len(args) > 2 else 1.0)))
        return lambda x: (x <= lo) | (x >= hi)
    return None


class _PassThrough(torch.autograd.Function):
    """Forward: the real op. Backward: the signal unchanged."""

    @staticmethod
    def forward(ctx, x, op):
        return op(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _Rules(TorchFunctionMode):
    """A projection :class:`Rule` (or, with ``reach=True``, the every-path-active rules of the
    receptive field) for every torch call of one forward pass. ``counts`` tallies the calls on
    the signal that condition a projection on its image (switches, masks, gates, norms)."""

    def __init__(self, model: nn.Module, reach: bool = False,
                 rule: Union[str, Rule] = "deconvnet"):
        super().__init__()
        self.reach = reach
        self.rule = rule_for(rule)
        self.counts: Counter = Counter()
        self.names = {id(m): n or type(m).__name__ for n, m in model.named_modules()}
        self.stack: list[str] = []

    @contextmanager
    def tracking(self) -> Iterator[None]:
        """Keep the name of the module running, for error messages."""
        from torch.nn.modules.module import (register_module_forward_hook,
                                             register_module_forward_pre_hook)

        def pre(m, _):
            self.stack.append(self.names.get(id(m), type(m).__name__))

        def post(m, _, __):
            if self.stack:
                self.stack.pop()

        handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
        try:
            with self:
                yield
        finally:
            for h in handles:
                h.remove()

    def _fail(self, name: str, why: str) -> None:
        where = f" in module {self.stack[-1]!r}" if self.stack else ""
        raise NoRuleError(f"the deconvnet has no rule for {name}{where} ({why}); it covers "
                          f"convs, max-pools, ReLU-like nonlinearities, gates, norms and linear "
                          f"operations (see zfnet_cli.deconv_graph)")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not self.reach:
            self._count(name, args, kwargs)
        if name in _RECTIFY:
            if self.rule.rectifier == "derivative" and not self.reach:
                return func(*args, **kwargs)
            return self._rectify(func, name, args, kwargs)
        if name in _GATES and (self.rule.constants or self.reach):
            x, rest = (args[0], args[1:]) if args else (kwargs.pop("input"), ())
            with torch.no_grad():  # the gate is a constant on the way down
                return func(x.detach().clone(), *rest, **kwargs)
        if name in _PASS:
            return args[0] if self.reach else _PassThrough.apply(
                args[0], lambda t: func(t, *args[1:], **kwargs))
        if name in _CONSTANT_STATS and (self.rule.constants or self.reach):
            return self._constant_stats(func, name, args, kwargs)
        if name in _MAX_POOLS and self.reach:
            return self._average(func, name, args, kwargs)
        if not self.rule.refuse and not self.reach:
            return func(*args, **kwargs)
        if name == "batch_norm":
            bound = _bind(func, args, kwargs)
            training = bound.get("training", args[5] if len(args) > 5 else False)
            if training and _is_signal(args[0] if args else bound.get("input")):
                self._fail(name, "batch statistics; run the model in eval mode")
        signals = [t for t in tree_flatten((args, kwargs))[0] if _is_signal(t)]
        if name in _NO_RULE and signals:
            self._fail(name, "a nonlinearity that is not a rectifier")
        if name in _PRODUCTS and len(signals) > 1:
            self._fail(name, "a product of two signals")
        if name in _QUOTIENTS:
            den = args[0] if name == "__rtruediv__" else (args[1] if len(args) > 1 else
                                                          kwargs.get("other"))
            if _is_signal(den):
                self._fail(name, "a signal in a denominator")
        return func(*args, **kwargs)

    def _count(self, name: str, args, kwargs) -> None:
        """Tally an operation on the signal that makes the way down depend on the image."""
        kind = ("switches" if name in _MAX_POOLS else "masks" if name in _RECTIFY
                else "gates" if name in _GATES else "norms" if name in _CONSTANT_STATS else None)
        if kind and any(_is_signal(t) for t in tree_flatten((args, kwargs))[0]):
            self.counts[kind] += 1

    def _rectify(self, func, name, args, kwargs):
        kwargs = dict(kwargs)
        x, rest = (args[0], args[1:]) if args else (kwargs.pop("input"), ())
        if self.reach:
            return x  # every path active: the nonlinearity is the identity
        inplace = name.endswith("_") or bool(_bind(func, args, kwargs).get("inplace", False))
        y = _Rectify.apply(x, lambda t: func(t, *rest, **kwargs),
                           self.rule.rectifier == "signal_and_mask",
                           _clip_slope(func, name, args, kwargs))
        if inplace:  # the caller may rely on x itself being changed
            x.copy_(y)
            return x
        return y

    def _constant_stats(self, func, name, args, kwargs):
        """LayerNorm / GroupNorm with the statistics as constants: the forward value is the
        real op's, the way down is ``signal * weight / sqrt(var + eps)``."""
        b = _bind(func, args, kwargs)
        if not b:  # torch.layer_norm / torch.group_norm builtins: positional
            keys = (["input", "normalized_shape", "weight", "bias", "eps"] if name == "layer_norm"
                    else ["input", "num_groups", "weight", "bias", "eps"])
            b = dict(zip(keys, args)) | kwargs
        x, weight, eps = b["input"], b.get("weight"), b.get("eps", 1e-5)
        y = func(*args, **kwargs)
        if not _is_signal(x):
            return y
        xd = x.detach()
        if name == "layer_norm":
            dims = tuple(range(-len(tuple(b["normalized_shape"])), 0))
            inv = torch.rsqrt(xd.var(dims, unbiased=False, keepdim=True) + eps)
            lin = x * inv
            if weight is not None:
                lin = lin * weight
        else:
            g = b["num_groups"]
            n = x.shape[0]
            inv = torch.rsqrt(xd.reshape(n, g, -1).var(2, unbiased=False, keepdim=True) + eps)
            lin = (x.reshape(n, g, -1) * inv).reshape(x.shape)
            if weight is not None:
                lin = lin * weight.view(1, -1, *([1] * (x.dim() - 2)))
        # exact forward value (lin - lin is exactly zero), the linear map's adjoint backward
        return (lin - lin.detach()) + y.detach()

    def _average(self, func, name, args, kwargs):
        """Receptive field: a max-pool reaches every pixel of its window (average pooling)."""
        # F.max_pool2d is a boolean dispatch over (*args, **kwargs): bind the real signature
        proto = (F.adaptive_max_pool2d_with_indices if name.startswith("adaptive")
                 else F.max_pool2d_with_indices)
        b = _bind(proto, args, kwargs)
        x = b["input"]
        if name.startswith("adaptive"):
            out = F.adaptive_avg_pool2d(x, b.get("output_size", args[1] if len(args) > 1 else None))
        else:
            dilation = b.get("dilation", 1)
            if dilation not in (1, (1, 1), [1, 1]):
                raise NoRuleError(f"receptive field of a dilated max-pool ({name}, dilation "
                                  f"{dilation}) is not supported")
            k = b["kernel_size"]
            out = F.avg_pool2d(x, k, b.get("stride") or k, b.get("padding", 0),
                               b.get("ceil_mode", False), count_include_pad=True)
        if b.get("return_indices") or name.endswith("with_indices"):
            return out, torch.zeros(out.shape, dtype=torch.long, device=out.device)
        return out


@contextmanager
def _recording(model: nn.Module, rules: _Rules) -> Iterator[None]:
    """Eval mode, frozen parameters (so ``requires_grad`` marks the signal), grad on, rules on;
    everything restored after."""
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)
        with evaluating(model), torch.enable_grad(), rules.tracking():
            yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next((p for p in model.parameters() if p.is_floating_point()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _as_maps(act: torch.Tensor, layer: Layer) -> torch.Tensor:
    """A layer's output as (B, C, h, w): feature maps, or (B, C) units as 1x1 maps."""
    if act.dim() == 4:
        return act
    if act.dim() == 2:
        return act[:, :, None, None]
    raise ValueError(f"layer {layer.name!r} outputs shape {tuple(act.shape)}: a deconvnet "
                     f"reads (B, C, H, W) feature maps or (B, C) units")


def _forward_to(model: nn.Module, lay: Layer, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` up to ``lay`` (the forward stops there) and return the layer's
    output as (B, C, h, w) maps (a copy: later in-place ops would change it)."""
    def keep_and_stop(t):  # nothing above the layer is needed: stop the forward there
        seen.append(t.clone())
        raise _Stop

    seen: list = []
    handle = lay.module.register_forward_hook(lambda m, i, o: keep_and_stop(o))
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return _as_maps(read_once(seen, lay), lay)


class GraphDeconvnet:
    """The deconvnet on any ``nn.Module`` (see the module doc for the definition and rules).

    Holds no weights: it runs the model itself, so it follows the model's device and weights.
    Layers are named as everywhere in zfnet (:func:`~zfnet_cli.layers.resolve_layer`): any
    module name (``layer3.1``, ``features.6.0``) and, on plain stacks, the paper's ``conv1`` ...

    Args:
        model (nn.Module): maps a (B, C, H, W) batch to anything; the layers read must output
            (B, C, h, w) or (B, C) tensors.
        layers (sequence of str, optional): the layers shown by default (Fig 2 ``--all``).
            Default: :func:`~zfnet_cli.layers.block_names` (the paper's conv layers on plain
            stacks, else the network's blocks).
        rule (str, optional): the way down, a key of :data:`RULES`: ``"deconvnet"`` (the
            paper), ``"guided"`` (guided backpropagation) or ``"gradient"``. Default:
            ``"deconvnet"``.

    Attributes:
        model (nn.Module): the wrapped model.
        layers (list[str]): the default layers, bottom to top.
        rule (str): the rule's name.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=10).eval()
        >>> deconv = GraphDeconvnet(net)
        >>> images = torch.randn(2, 3, 64, 64)
        >>> proj = deconv.project(images, [Request(0, "layer3.1", 42, (1, 2)),
        ...                                Request(1, "layer2.0", 7, None)])
        >>> proj.shape
        torch.Size([2, 3, 64, 64])
        >>> deconv.receptive_field("layer1.0", 0, 0, 64)
        (0, 0, 14, 14)

    Reference:
        M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional Networks",
        ECCV 2014, §2.1. https://arxiv.org/abs/1311.2901
    """

    def __init__(self, model: nn.Module, layers: Optional[Sequence[str]] = None,
                 rule: Union[str, Rule] = "deconvnet"):
        self.model = model
        self.layers = list(block_names(model) if layers is None else layers)
        self._rule = rule_for(rule)
        self.rule = self._rule.name
        self._conditioning: dict[tuple, dict[str, int]] = {}
        self._reach_model: Optional[nn.Module] = None
        self._reach_cache: dict[tuple, tuple[int, int, int, int]] = {}
        self._shapes: dict[tuple, tuple[int, ...]] = {}
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        self.in_channels = convs[0].in_channels if convs else 3

    def __repr__(self) -> str:
        return (f"GraphDeconvnet({type(self.model).__name__}, layers={self.layers}, "
                f"rule={self.rule!r})")

    def resolve(self, layer: str) -> Layer:
        """The :class:`~zfnet_cli.layers.Layer` called ``layer`` (one-line error otherwise)."""
        return resolve_layer(self.model, layer)

    def shape(self, layer: str, input_size: Union[int, Sequence[int]]) -> tuple[int, ...]:
        """Output shape (C, h, w) (or (C,)) of ``layer`` for one image of ``input_size``."""
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        key = (layer, h, w)
        if key not in self._shapes:
            lay = self.resolve(layer)
            device, dtype = device_dtype(self.model)
            with evaluating(self.model), torch.no_grad(), \
                    tap(lay.module, lambda t: tuple(t.shape[1:])) as seen:
                self.model(torch.zeros(1, self.in_channels, h, w, device=device, dtype=dtype))
            self._shapes[key] = read_once(seen, lay)
        return self._shapes[key]

    def num_maps(self, layer: str, input_size=224) -> int:
        """Number of feature maps (channels) of ``layer``."""
        return self.shape(layer, input_size)[0]

    def conditioning(self, layer: str, input_size: Union[int, Sequence[int]] = 224
                     ) -> dict[str, int]:
        """What makes a projection from ``layer`` depend on its image under this rule: the
        number of max-pools (``switches``), rectifiers (``masks``, under ``guided`` and
        ``gradient``), gates and norms with statistics (``norms``) on the way down, counted
        in one recording forward of a blank image (cached). All zero: every projection of a
        unit at a position is one template scaled by the activation (module doc).

        Returns:
            dict[str, int]: a count per kind of :attr:`Rule.conditioning`.
        """
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        key = (layer, h, w)
        if key not in self._conditioning:
            lay = self.resolve(layer)
            device, dtype = device_dtype(self.model)
            rules = _Rules(self.model, rule=self._rule)
            x = torch.zeros(1, self.in_channels, h, w, device=device, dtype=dtype,
                            requires_grad=True)
            with _recording(self.model, rules):
                _forward_to(self.model, lay, x)
            self._conditioning[key] = {k: rules.counts[k] for k in self._rule.conditioning}
        return dict(self._conditioning[key])

    # Where a request set allows, one recorded forward of an image serves all of its requests
    # (one backward each); False sends every request through its own forward row (the method
    # before sharing, kept for scripts/bench_projections.py to measure against).
    _share_forward = True

    def project(self, images: torch.Tensor, requests: Sequence[Request | tuple], *,
                batch_size: int = 32) -> torch.Tensor:
        """Project activations (or whole feature maps) to pixel space, each with its own
        image's forward pass (its switches, its rectification points, its gates).

        One recorded forward of an image serves all of its requests: the requests of one
        layer are laid out on **rows** (a row is one image in a recorded batch and holds up to
        ``k`` of that image's requests), the rows go forward ``batch_size`` at a time with the
        rule's recording, and the graph is kept while the rows' requests go down one round
        at a time (round ``t`` seeds the ``t``-th request of every row; one
        ``torch.autograd.grad`` gives them all; rows do not mix in eval mode). ``k`` is chosen
        per layer to minimise the rows run forward plus the rows run backward (a forward row
        and a backward row cost about the same): ``k = 1`` is one forward per request, a large
        ``k`` wastes backward rows on images with few requests. Memory is that of
        ``batch_size`` recorded images, as with one forward per request (the rounds run one
        after another).

        Args:
            images (Tensor): (N, C, H, W) the images the requests index into.
            requests (sequence of Request or tuple): each ``(image, layer, fmap, position)``;
                ``position = (y, x)`` keeps one activation, ``None`` the whole map ``fmap``
                (for a (B, C) layer, ``fmap`` is the unit and the position ``None`` or (0, 0)).
            batch_size (int, optional): images recorded per forward pass (rows). Default: 32.

        Returns:
            Tensor: (R, C, H, W) projections in request order, on the model's device and dtype.

        Raises:
            ValueError: an unknown layer, an image / fmap / position out of range, a layer
                that is not (B, C, h, w) or (B, C), a module run several times.
            NoRuleError: an operation on the way has no deconvnet rule (it is named).
        """
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        reqs = [Request(*r) for r in requests]
        device, dtype = device_dtype(self.model)
        out = torch.zeros(len(reqs), *images.shape[1:], device=device, dtype=dtype)
        for j, r in enumerate(reqs):
            if not 0 <= r.image < images.shape[0]:
                raise ValueError(f"request {j}: image {r.image} out of range "
                                 f"[0, {images.shape[0]})")
        for layer in dict.fromkeys(r.layer for r in reqs):
            lay = self.resolve(layer)
            self.shape(layer, images.shape[-2:])  # checks (once, cached) the module runs once
            idx = [j for j, r in enumerate(reqs) if r.layer == layer]
            for group in _shared_rows([reqs[j].image for j in idx], batch_size,
                                     None if self._share_forward else 1):
                rows = [[(idx[i], reqs[idx[i]]) for i in row] for row in group]
                done, proj = self._down(images, lay, rows)
                out[done] = proj
        return out

    def _down(self, images: torch.Tensor, lay: Layer, rows: list[list[tuple[int, Request]]]
              ) -> tuple[list[int], torch.Tensor]:
        """One recorded forward of the rows' images, then one backward per round: the request
        indices served and their projections (R, C, H, W) in that order."""
        device, dtype = device_dtype(self.model)
        x = images[[row[0][1].image for row in rows]].to(device=device, dtype=dtype).detach()
        x.requires_grad_(True)
        rounds = max(len(row) for row in rows)
        done: list[int] = []
        proj: list[torch.Tensor] = []
        with _recording(self.model, _Rules(self.model, rule=self._rule)):
            maps = _forward_to(self.model, lay, x)
            for row in rows:
                for j, r in row:
                    _check_request(j, r, maps.shape[1:])
            # one backward per round on the kept graph; torch.autograd.grad(is_grads_batched=True)
            # over all rounds at once (vmap through the rules' autograd Functions) was 2.2x
            # slower here (8 images x 4 rounds, EfficientNet-Lite0 _blocks.8, guided, 1 thread)
            for t in range(rounds):
                seed = torch.zeros_like(maps)
                now = [(i, row[t]) for i, row in enumerate(rows) if t < len(row)]
                for i, (_, r) in now:
                    if r.position is None:
                        seed[i, r.fmap] = maps[i, r.fmap].detach()
                    else:
                        y, xx = r.position
                        seed[i, r.fmap, y, xx] = (maps[i, r.fmap, y, xx].detach()
                                                  if r.value is None else r.value)
                (grad,) = torch.autograd.grad(maps, x, seed, retain_graph=t < rounds - 1,
                                              allow_unused=True)
                served = [i for i, _ in now]
                done += [j for _, (j, _) in now]
                proj.append(torch.zeros_like(x[served]) if grad is None
                            else grad.detach()[served])
        return done, torch.cat(proj)

    # ------------------------------------------------------------ receptive field

    def _reach(self) -> nn.Module:
        """The every-path-active copy: float64, positive weights, frozen."""
        if self._reach_model is None:
            reach = copy.deepcopy(self.model).double().eval()
            with torch.no_grad():
                for p in reach.parameters():
                    if p.dim() >= 2:  # conv / linear weights: 1 / fan-in keeps values bounded
                        p.fill_(p.shape[0] / p.numel())
                    else:
                        p.fill_(1.0)
                for b in reach.buffers():
                    if b.is_floating_point():
                        b.abs_()
            self._reach_model = reach
        return self._reach_model

    def receptive_fields(self, layer: str, positions: Sequence[tuple[int, int]],
                         input_size: Union[int, Sequence[int]]) -> list[tuple[int, int, int, int]]:
        """:meth:`receptive_field` of many positions of one layer (batched, cached)."""
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        shape = self.shape(layer, (h, w))
        lh, lw = (shape[1], shape[2]) if len(shape) == 3 else (1, 1)
        todo = []
        for (y, x) in positions:
            if not (0 <= y < lh and 0 <= x < lw):
                raise ValueError(f"position {(y, x)} outside {layer}'s {lh}x{lw} output")
            if (layer, y, x, h, w) not in self._reach_cache and (y, x) not in todo:
                todo.append((int(y), int(x)))
        reach = self._reach()
        lay = resolve_layer(reach, self.resolve(layer).module_name)
        device = next(reach.parameters()).device
        for s in range(0, len(todo), 32):
            part = todo[s:s + 32]
            x = torch.zeros(len(part), self.in_channels, h, w, device=device,
                            dtype=torch.float64, requires_grad=True)
            with _recording(reach, _Rules(reach, reach=True)):
                maps = _forward_to(reach, lay, x)
                seed = torch.zeros_like(maps)
                for row, (y, xx) in enumerate(part):
                    seed[row, :, y, xx] = 1.0  # every map at (y, x): the union of their paths
                (grad,) = torch.autograd.grad(maps, x, seed, allow_unused=True)
            if grad is None:
                raise ValueError(f"layer {layer!r} does not depend on the input")
            support = grad.detach().abs().sum(1) > 0  # (n, H, W)
            for row, (y, xx) in enumerate(part):
                ys = support[row].any(1).nonzero().flatten()
                xs = support[row].any(0).nonzero().flatten()
                if ys.numel() == 0:
                    raise ValueError(f"activation {(y, xx)} of {layer!r} does not depend on "
                                     f"the input")
                self._reach_cache[(layer, y, xx, h, w)] = (
                    int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1)
        return [self._reach_cache[(layer, int(y), int(x), h, w)] for y, x in positions]

    def receptive_field(self, layer: str, y: int, x: int,
                        input_size: Union[int, tuple[int, int]]) -> tuple[int, int, int, int]:
        """The input-pixel window joined to activation (y, x) of ``layer`` by some path of the
        network (see the module doc: the support of its input gradient with every path
        active), as the bounding box ``(y0, x0, y1, x1)``, half-open.

        Args:
            layer (str): a layer name.
            y, x (int): position in that layer's output ((0, 0) for a (B, C) layer).
            input_size (int or (int, int)): the image's side, or (H, W).

        Returns:
            tuple[int, int, int, int]: ``(y0, x0, y1, x1)``: the patch is
            ``image[:, y0:y1, x0:x1]``.
        """
        return self.receptive_fields(layer, [(y, x)], input_size)[0]


def _check_request(j: int, r: Request, shape: Sequence[int]) -> None:
    c, h, w = shape
    if not 0 <= r.fmap < c:
        raise ValueError(f"request {j}: fmap {r.fmap} out of range for {r.layer} ({c} maps)")
    if r.position is not None:
        y, x = r.position
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"request {j}: position {(y, x)} outside {r.layer}'s {h}x{w} "
                             f"output")


def _shared_rows(images: Sequence[int], batch_size: int, most: Optional[int] = None
                ) -> list[list[list[int]]]:
    """How :meth:`GraphDeconvnet.project` lays requests out so that one recorded forward of an
    image serves many of its requests: groups of at most ``batch_size`` rows (one recorded
    forward each), a row being one image and up to ``k`` of its requests (one backward round
    each).

    Each image's ``n`` requests get ``ceil(n / k)`` rows of near-equal length; rows are
    grouped longest first, so a group's rounds (its longest row) waste few backward rows.
    ``k`` minimises the estimated cost, the rows run forward plus the rows run backward
    (``sum over groups of rows x (1 + rounds)``: a forward and a backward row of a recorded
    image cost about the same on EfficientNet-Lite0's blocks); with one request per image it
    is ``k = 1``, one forward per request.

    Args:
        images (sequence of int): the image of each request, in request order.
        batch_size (int): rows per group (images recorded in one forward pass).
        most (int, optional): use this ``k`` instead of the cheapest (``1``: one forward per
            request). Default: the cheapest.

    Returns:
        list[list[list[int]]]: groups of rows of request positions (indices into ``images``);
        every position appears once, and a row's requests share one image.

    Example: ``_shared_rows([0, 0, 0, 1], 8)`` is ``[[[0, 1, 2], [3]]]`` (one forward of two
    images, three rounds); with ``most=1`` it is ``[[[0], [1], [2], [3]]]``.
    """
    by_image: dict[int, list[int]] = {}
    for j, img in enumerate(images):
        by_image.setdefault(int(img), []).append(j)

    def layout(k: int) -> list[list[list[int]]]:
        rows = []
        for js in by_image.values():
            n = -(-len(js) // k)  # rows of this image, each at most k requests
            rows += [js[i::n] for i in range(n)]
        rows.sort(key=len, reverse=True)  # stable: request order within equal lengths
        return [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]

    def cost(groups) -> int:
        return sum(len(g) * (1 + len(g[0])) for g in groups)

    if not by_image:
        return []
    if most is not None:
        return layout(most)
    # ties go to the larger k: fewer rows recorded, fewer forward calls
    return min((layout(k) for k in range(max(map(len, by_image.values())), 0, -1)), key=cost)


def deconvnet_for(model: nn.Module, layers: Optional[Sequence[str]] = None,
                  rule: Optional[str] = None) -> Projector:
    """The projector for ``model`` under ``rule``: the paper's explicit switch
    :class:`~zfnet_cli.deconv.Deconvnet` where the rule is the deconvnet and the model is a
    plain stack that holds every layer asked for, else :class:`GraphDeconvnet` with the rule.

    Args:
        model (nn.Module): any model.
        layers (sequence of str, optional): the layers that will be projected. Default: the
            model's default layers.
        rule (str, optional): a key of :data:`RULES`. Default: :func:`default_rule` (the
            deconvnet on the paper's networks, ``guided`` elsewhere).

    Returns:
        Projector: a ``Deconvnet`` or a ``GraphDeconvnet``.

    Example:
        >>> import torchvision
        >>> type(deconvnet_for(torchvision.models.alexnet())).__name__
        'Deconvnet'
        >>> type(deconvnet_for(torchvision.models.resnet18())).__name__
        'GraphDeconvnet'
    """
    rule = rule_for(rule or default_rule(model)).name
    if rule != "deconvnet":
        return GraphDeconvnet(model, rule=rule)
    try:
        explicit = Deconvnet(model)
    except ValueError:
        return GraphDeconvnet(model)
    if layers is None or all(layer in explicit._end for layer in layers):
        return explicit
    return GraphDeconvnet(model)


def project_fmap(model: nn.Module, image: torch.Tensor, layer: str, fmap: int,
                 position: Optional[tuple[int, int]] = None, rule: Optional[str] = None
                 ) -> torch.Tensor:
    """Fig 7 (c) on any model: the projection of feature map ``fmap`` of ``layer`` for one
    image (the whole map, or one activation at ``position``) under ``rule``.

    Args:
        model (nn.Module): any model the deconvnet covers (see :func:`deconvnet_for`).
        image (Tensor): (C, H, W) or (1, C, H, W), preprocessed as the model expects.
        layer (str): a layer name (``"conv5"``, ``"layer4.1"``, ``"features.12"``).
        fmap (int): the feature map.
        position ((int, int), optional): keep only this activation. Default: the whole map.
        rule (str, optional): a key of :data:`RULES`. Default: :func:`default_rule`.

    Returns:
        Tensor: (C, H, W) projection, on the model's device.

    Raises:
        ValueError: unknown layer, fmap or position out of range; :class:`NoRuleError` for an
            operation without a deconvnet rule.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18(num_classes=5).eval()
        >>> project_fmap(net, torch.randn(3, 64, 64), "layer4", 7).shape
        torch.Size([3, 64, 64])
    """
    x = image if image.dim() == 4 else image[None]
    if x.shape[0] != 1:
        raise ValueError(f"project_fmap takes one image, got a batch of {x.shape[0]}")
    net = deconvnet_for(model, [layer], rule)
    return net.project(x, [Request(0, layer, fmap, position)])[0]
