"""Exact incremental occlusion (Krypton: Nakandala, Kumar, Papakonstantinou, SIGMOD 2019,
"Incremental and Approximate Inference for Faster Occlusion-based Deep CNN Explanations").

An occluder changes only a square of the input. Through a convolution, pool or pointwise layer
that change reaches only a rectangle of the layer's output: the **update patch**, which grows
with each layer's kernel, stride and padding (its *projective field*). So, given every layer's
output on the clean image, a layer needs recomputing only over its update patch, from its
**read-in context** (the input rectangle its kernels read for that patch: the clean input with
the previous layer's update patch pasted in). From the first layer whose update patch covers the
whole map, or whose operation is not one of those below (fully connected, flatten, global or
adaptive pooling, attention, anything unknown), the rest of the network runs normally on the
full tensors. The result is the same as running the whole network on the occluded image: every
output value is computed by the same operation from the same inputs; only values that cannot
change are taken from the clean run.

How it runs here:

* The model is traced once with :mod:`torch.fx` (Conv2d, MaxPool2d, AvgPool2d, ConstantPad2d,
  LocalResponseNorm, BatchNorm and pointwise activations kept as single nodes), and the clean
  image is run through the graph, keeping every node's output.
* Occluder positions run in **chunks** (their size from a memory budget). In a chunk every
  position's update patch at a node has the same height and width (the largest of the chunk),
  each at its own offset, shifted inside the map at the borders; patches that are a little
  larger than needed are still exact, they only recompute a few unchanged values. The read-in
  contexts of all positions are gathered into one (B, C, h, w) batch and the layer runs once.
* Covered operations, as modules or as functional calls: ``Conv2d`` (zero padding, any stride,
  dilation, groups), ``MaxPool2d``, ``AvgPool2d`` (where its divisor is the same for every
  window), constant padding (``ZeroPad2d``, ``ConstantPad2d``, ``F.pad(mode="constant")``, any
  amounts on each side: the "same" padding of TensorFlow-style convs), ``LocalResponseNorm``
  (a window over channels, pointwise in space), ``BatchNorm`` in eval mode, pointwise
  activations (ReLU, LeakyReLU, ELU, GELU, SiLU, sigmoid, tanh, ...), dropout in eval mode,
  arithmetic with a number, and the sum / product of two changed tensors (ResNet's residual
  ``add``: the union of the two patches).
* The **readout** (the total of every map of one module's output, as
  :func:`zfnet_cli.occlusion.occlude` reads layer L) is ``clean total - clean sum over the
  update patch + new sum over the update patch`` while that module's output is still a patch,
  summed in float64.

Speed: the work saved is the fraction of each layer outside its update patch
(:attr:`IncrementalOcclusion.cost` lists it per layer). It is large for small occluders and
early layers (a 56 px occluder on ZFNet's 224 px input changes about a third of conv1's output
rows and columns) and nothing once a patch covers the map; the fully connected layers always run
in full.
"""
from __future__ import annotations

import math
import operator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["IncrementalOcclusion", "incremental_or_full", "NotIncremental", "CostEstimate",
           "LayerCost", "DEFAULT_MEMORY_BUDGET", "AUTO_MAX_RATIO", "AUTO_BUILD_POSITIONS",
           "METHODS"]

# Bytes of per-position activations (update patches, read-in contexts, full tensors after the
# incremental part) one chunk of positions may hold at once. 256 MiB keeps a chunk of the
# paper's ZFNet at 224 px in the tens of positions, enough to keep the CPU's GEMMs busy.
DEFAULT_MEMORY_BUDGET = 256 * 2 ** 20
# Bytes of gather indices alive at once per gathered cell (_gather): four int64 tensors (the
# index, a product, the patch index, torch.where's result) and two boolean masks.
_INDEX_BYTES = 4 * 8 + 2
# Bytes a chunk's run holds beyond the tensors counted (the backend's per-shape scratch and
# primitive caches, the allocator's bookkeeping): measured, not derived. On the paper's ZFNet at
# 224 px the run's resident peak exceeded the counted bytes by 3-10 MiB at small budgets
# (scripts/bench_incremental.py --budgets), so 12 MiB are set aside.
_BACKEND_BYTES = 12 * 2 ** 20


class NotIncremental(ValueError):
    """The model cannot run incrementally; use the full computation (``method="full"``).

    Raised by :class:`IncrementalOcclusion` when the model does not trace with torch.fx, takes
    more than one input, its traced graph does not reproduce its output on the clean image, or
    the readout module is not one node of that graph. The message says which.
    ``method="auto"`` catches it and runs the full path instead.
    """


# --- which operations are covered ------------------------------------------------------------

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.LocalResponseNorm,
    nn.BatchNorm2d,  # eval mode only (checked where used): running stats, per channel
)
_WINDOW_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
                   nn.ConstantPad2d)  # and its subclass ZeroPad2d
_COVERED_MODULES = _POINTWISE_MODULES + _WINDOW_MODULES

_POINTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.hardtanh, F.hardswish, F.hardsigmoid, F.softplus, torch.sigmoid, F.sigmoid, torch.tanh,
    F.tanh, torch.exp, torch.abs, torch.neg, F.dropout, F.local_response_norm, torch.clamp,
    operator.neg,
}
_POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "exp", "abs", "neg", "clamp", "contiguous",
                      "clone"}
# with a number: pointwise; with two changed tensors of the same shape: union of their patches
_BINARY = {operator.add: operator.add, torch.add: torch.add, operator.mul: operator.mul,
           torch.mul: torch.mul, operator.sub: operator.sub, torch.sub: torch.sub,
           operator.truediv: operator.truediv, torch.div: torch.div}
_BINARY_METHODS = {"add", "mul", "sub", "div"}
_IN_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub,
             operator.imul: operator.mul, operator.itruediv: operator.truediv}


def _own_forward(m: nn.Module) -> bool:
    """A covered type whose ``forward`` is torch's own (a subclass that redefines it, such as a
    weight-standardised conv, computes something else and is traced through instead)."""
    for base in _COVERED_MODULES:
        if isinstance(m, base):
            return type(m).forward is base.forward
    return False


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping covered modules (and subclasses that do not redefine their
    forward, such as zfnet's ``SwitchMaxPool2d``) as single ``call_module`` nodes."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return _own_forward(m) or super().is_leaf_module(m, qualified_name)


# --- geometry: update patches and read-in contexts -------------------------------------------

@dataclass
class _Window:
    """A sliding-window op along both axes; ``fn(context)`` computes its output over a read-in
    context laid out without padding (the context already holds the padding values)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]  # top, left (bottom / right only shape the output: known)
    dilation: tuple[int, int]
    pad_value: float
    fn: Callable[[torch.Tensor], torch.Tensor]
    flops_per_output: int  # multiply-adds per output value (for the cost estimate)


@dataclass
class _Patch:
    """The update patch of one node for a chunk of B positions: an ``h`` x ``w`` rectangle at
    ``(oy[b], ox[b])`` in the node's output coordinates, ``values`` (B, C, h, w) the recomputed
    output there (``None`` in a geometry-only pass)."""

    oy: torch.Tensor  # (B,) int64
    ox: torch.Tensor  # (B,) int64
    h: int
    w: int
    values: Optional[torch.Tensor] = None
    kind: str = ""  # the op that made it: "input", "window", "pointwise", "binary"


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


@contextmanager
def _freed_memory_returned() -> Iterator[None]:
    """While the chunks run, make glibc give freed large blocks back to the system.

    glibc serves an allocation below its mmap threshold from its heap, and raises that
    threshold (up to 32 MiB) each time a larger block is freed; the chunks' tensors then come
    from the heap, whose freed blocks stay resident and fragment across chunks and threads (the
    process's peak reached 1.6x the budget over several chunks). Fixing the threshold at glibc's
    own default (128 KiB) maps each large tensor and unmaps it when freed, so resident memory
    follows what is alive. That costs speed (every large tensor is mapped and faulted in anew):
    left in place it slowed the full path of later ``occlude`` calls in the same process
    (EfficientNet-Lite0, 224 px, 49 positions, 2-core CPU: 9.5-12.3 s per call before, 15.4-22.5
    s after), so on the way out the thresholds go
    to where glibc's own adjustment ends in a long-running process (mmap 32 MiB, trim 64 MiB;
    glibc has no call that reads the old values back). Where the C library has no ``mallopt``
    (not glibc) nothing changes."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        mallopt = None
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    try:
        yield
    finally:
        if mallopt is not None:
            mallopt(_M_MMAP_THRESHOLD, 32 * 2 ** 20)
            mallopt(_M_TRIM_THRESHOLD, 64 * 2 ** 20)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _place(lo: torch.Tensor, hi: torch.Tensor, extent: int, at_least: int = 0
           ) -> tuple[torch.Tensor, int]:
    """One size for the chunk along one axis: the largest ``hi - lo + 1`` (inclusive ranges,
    already clipped to ``[0, extent)``), or ``at_least`` if larger, each start moved up where
    the common size would run past the far edge; the moved range still contains the original
    one."""
    n = max(1, int((hi - lo).max()) + 1, min(at_least, extent))  # 1: a 1x1 stride-2 kernel
    return lo.clamp(max=extent - n), n


def _grow(start: torch.Tensor, n: int, k: int, s: int, p: int, d: int, out_extent: int,
          at_least: int = 0) -> tuple[torch.Tensor, int]:
    """Output rows a window op (kernel k, stride s, top padding p, dilation d) must recompute
    when input rows ``start .. start + n - 1`` changed: output o reads input rows
    ``o*s - p .. o*s - p + d*(k-1)``."""
    lo = torch.div(start + p - d * (k - 1) + s - 1, s, rounding_mode="floor").clamp(min=0)
    hi = torch.div(start + n - 1 + p, s, rounding_mode="floor").clamp(max=out_extent - 1)
    return _place(lo, hi, out_extent, at_least)


def _union(a: _Patch, b: _Patch, height: int, width: int, at_least: tuple[int, int] = (0, 0)
           ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    lo_y, lo_x = torch.minimum(a.oy, b.oy), torch.minimum(a.ox, b.ox)
    hi_y = torch.maximum(a.oy + a.h, b.oy + b.h) - 1
    hi_x = torch.maximum(a.ox + a.w, b.ox + b.w) - 1
    oy, h = _place(lo_y, hi_y, height, at_least[0])
    ox, w = _place(lo_x, hi_x, width, at_least[1])
    return oy, ox, h, w


def _gather(clean: torch.Tensor, patch: Optional[_Patch], ry: torch.Tensor, rx: torch.Tensor,
            rh: int, rw: int, pad_value: float = 0.0) -> torch.Tensor:
    """(B, C, rh, rw): for each position b the rectangle at ``(ry[b], rx[b])`` of the clean map
    ``clean`` (C, H, W) with ``patch`` pasted in; cells outside the map hold ``pad_value``.

    One ``index_select`` from the clean map, one pad cell and the patch values laid side by
    side, so every value is copied, never computed (the gathered batch is bit-exact)."""
    c, height, width = clean.shape
    dev = clean.device
    rows = ry[:, None] + torch.arange(rh, device=dev)  # (B, rh)
    cols = rx[:, None] + torch.arange(rw, device=dev)  # (B, rw)
    inside = (((rows >= 0) & (rows < height))[:, :, None]
              & ((cols >= 0) & (cols < width))[:, None, :])  # (B, rh, rw)
    index = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
    index = torch.where(inside, index, height * width)  # the pad cell
    parts = [clean.reshape(c, height * width),
             torch.full((c, 1), pad_value, dtype=clean.dtype, device=dev)]
    if patch is not None:
        pr = rows - patch.oy[:, None]  # (B, rh) rows inside the patch
        pc = cols - patch.ox[:, None]
        in_patch = (((pr >= 0) & (pr < patch.h))[:, :, None]
                    & ((pc >= 0) & (pc < patch.w))[:, None, :])
        b = torch.arange(rows.shape[0], device=dev)[:, None, None]
        at = (height * width + 1 + b * (patch.h * patch.w)
              + pr.clamp(0, patch.h - 1)[:, :, None] * patch.w
              + pc.clamp(0, patch.w - 1)[:, None, :])
        index = torch.where(in_patch, at, index)
        parts.append(patch.values.transpose(0, 1).reshape(c, -1))  # (C, B*h*w)
    out = torch.cat(parts, dim=1).index_select(1, index.reshape(-1))  # (C, B*rh*rw)
    return out.view(c, -1, rh, rw).transpose(0, 1).contiguous()  # (B, C, rh, rw)


def _paste(clean: torch.Tensor, patch: _Patch) -> torch.Tensor:
    """(B, C, H, W): the clean map (C, H, W) with each position's patch written in."""
    c, height, width = clean.shape
    b = patch.oy.shape[0]
    dev = clean.device
    rows = patch.oy[:, None] + torch.arange(patch.h, device=dev)
    cols = patch.ox[:, None] + torch.arange(patch.w, device=dev)
    index = (rows[:, :, None] * width + cols[:, None, :]).view(b, 1, -1).expand(b, c, -1)
    out = clean.reshape(1, c, height * width).repeat(b, 1, 1)
    out.scatter_(2, index, patch.values.reshape(b, c, -1))
    return out.view(b, c, height, width)


# --- the cost estimate ------------------------------------------------------------------------

@dataclass
class LayerCost:
    """One node of the traced graph: what the incremental path recomputes of it per position.

    Attributes:
        name: the fx node's name (``features_conv1``, ``layer1_0_conv1``, ``max_pool2d``).
        op: ``"window"`` (conv / pool), ``"pointwise"``, ``"binary"``, or ``"full"`` (run on
            the whole map: uncovered, or reached by a patch covering the map).
        recomputed: fraction of the node's output recomputed per position (1.0 for ``full``).
        flops_full: multiply-adds per position when run in full.
        flops_incremental: multiply-adds per position in the incremental path.
    """

    name: str
    op: str
    recomputed: float
    flops_full: int
    flops_incremental: int


@dataclass
class CostEstimate:
    """Per-position work of the two paths, from the update patches' sizes (an upper bound:
    the largest patch over all positions at each node).

    Attributes:
        full_flops: multiply-adds of one full forward pass.
        incremental_flops: multiply-adds of the incremental path, plus one per value copied into
            the read-in contexts (the gather is memory traffic the full path does not have).
        layers: :class:`LayerCost` per node that depends on the image, in graph order.
    """

    full_flops: int
    incremental_flops: int
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """``incremental_flops / full_flops``: below 1 the incremental path does less work."""
        return self.incremental_flops / max(1, self.full_flops)


# --- the engine -------------------------------------------------------------------------------

_FULL = "full"  # a node's state in a geometry-only pass: computed on the whole map


@contextmanager
def _out_of_place(model: nn.Module) -> Iterator[None]:
    """Turn off ``inplace`` on every module for the call: the clean outputs are kept and reused
    across chunks, and an in-place ReLU (torchvision's) would overwrite them."""
    changed = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


def _bind(args: tuple, kwargs: dict, names: list[str], defaults: dict) -> dict:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


class IncrementalOcclusion:
    """Exact incremental inference for occlusion (Krypton, SIGMOD 2019): the logits and one
    module's per-map totals for many occluder positions, recomputing each layer only over the
    region the occluder reaches, on top of the clean image's activations.

    Build it once per image (it traces the model and runs the clean image), then call it with
    occluder corners. Results equal running the model on each occluded image (the occluder's
    pixels set to ``fill``, as :func:`zfnet_cli.occlusion.occlude` does) up to floating-point
    summation order: bit-identical where every sum is exact (tests/test_incremental.py), within
    float32 rounding otherwise.

    Positions run in chunks of :attr:`chunk_size`, chosen so that a chunk's estimated memory
    fits ``memory_budget`` bytes: per position its update patches, read-in contexts, gather
    indices, the backend's output copies and the full tensors from the first uncovered layer on
    (at the point in the graph where most are alive), plus once per chunk the clean map a
    gather copies, a layer's weights in the backend's layout and a measured allowance for the
    backend's scratch. Every chunk uses the same patch shapes, and while the chunks run glibc's
    allocator is set to return freed large blocks (:func:`_freed_memory_returned`), so chunks
    do not pile up fragments: the process's resident peak above the model and clean run stays
    within the budget (scripts/bench_incremental.py --budgets measures it; it used to reach
    1.8x). A
    budget below one position plus the per-chunk part (about 15 MiB for the paper's ZFNet)
    cannot be kept: positions then run one at a time.

    Args:
        model (nn.Module): maps a (B, C, H, W) batch to (B, classes) logits; run in the mode it
            is in (call ``model.eval()`` first; ``occlude`` does), under ``torch.no_grad()``.
            It must trace with :func:`torch.fx.symbolic_trace` (no data-dependent Python
            control flow), else :class:`NotIncremental` is raised.
        image (Tensor): (C, H, W), on the model's device and dtype, preprocessed.
        size (int): the occluder's side in pixels.
        readout (nn.Module, optional): the module whose output's per-map totals are read (the
            module that ends layer L; it must run once per forward pass). Default: none, the
            totals are then empty (B, 0).
        fill (float or Tensor, optional): the occluder's pixels: a float or a tensor that
            broadcasts to (C, H, W). Default: ``0.0``.
        memory_budget (int, optional): bytes of per-position activations one chunk may hold.
            Default: :data:`DEFAULT_MEMORY_BUDGET` (256 MiB).
        model_output (tuple, optional): the model's own ``(readout totals (1, M) or None,
            logits (1, classes))`` on the clean image, where the caller has run it (``occlude``
            has): the traced graph is checked against these instead of running the model once
            more. Default: ``None``.

    Attributes:
        clean_totals (Tensor): (M,) the readout's per-map totals on the clean image.
        clean_logits (Tensor): (classes,) the logits on the clean image.
        chunk_size (int): positions per chunk.
        bytes_per_position (int): the per-position estimate ``chunk_size`` is derived from.
        bytes_per_chunk (int): the estimate's part paid once per chunk.
        cost (CostEstimate): per-position multiply-adds of both paths and per-layer recomputed
            fractions, for the largest update patches any position gets.

    Raises:
        NotIncremental: the model does not trace, does not take one 4-d input, its traced
            graph does not reproduce its output on the clean image, or ``readout`` is not a
            module of it that runs exactly once.
        ValueError: ``memory_budget`` below 1.

    Example:
        >>> from zfnet_cli.model import ModelConfig, ZFNet
        >>> net = ZFNet(ModelConfig(input_size=64, channels=[8, 8, 8, 8, 8],
        ...                         fc_widths=[16, 16]), num_classes=5).eval()
        >>> inc = IncrementalOcclusion(net, torch.randn(3, 64, 64), size=16,
        ...                            readout=net.features.pool5)
        >>> totals, logits = inc(torch.tensor([[0, 0], [24, 40]]))
        >>> totals.shape, logits.shape
        (torch.Size([2, 8]), torch.Size([2, 5]))

    Reference:
        S. Nakandala, A. Kumar, Y. Papakonstantinou, "Incremental and Approximate Inference for
        Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019.
        https://doi.org/10.1145/3299869.3319874
    """

    def __init__(self, model: nn.Module, image: torch.Tensor, *, size: int,
                 readout: Optional[nn.Module] = None, fill: Union[float, torch.Tensor] = 0.0,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 model_output: Optional[tuple[Optional[torch.Tensor], torch.Tensor]] = None):
        self._trace(model, image, size, readout, fill, memory_budget)
        with torch.no_grad(), _out_of_place(model):
            self.clean = self._run_clean()
        logits = self._clean_outputs()
        self.clean_logits = logits[0]
        self.clean_totals = (self.clean[self.readout].sum(dim=(2, 3))[0]
                             if self.readout is not None else logits.new_zeros(0))
        self._clean_totals64 = (self.clean[self.readout][0].double().sum(dim=(1, 2))
                                if self.readout is not None else None)
        with torch.no_grad():
            self._check_against_model(readout, logits, model_output)
        self._layout()

    @classmethod
    def _estimate(cls, model: nn.Module, image: torch.Tensor, *, size: int,
                  readout: Optional[nn.Module] = None,
                  memory_budget: int = DEFAULT_MEMORY_BUDGET) -> tuple[CostEstimate, int]:
        """``(cost, chunk_size)`` of the engine these arguments would build, from the trace and
        every node's output shape alone: no clean run, no check against the model (the parts
        that cost forward passes), so ``method="auto"`` can decide before paying for them.
        Shapes come from a pass on the meta device (:meth:`_shapes`).

        Raises:
            NotIncremental: the model does not trace, takes more than one input, its output or
                the readout's has the wrong rank, or the readout is not one node of the graph.
        """
        engine = cls.__new__(cls)
        engine._trace(model, image, size, readout, 0.0, memory_budget)
        engine.clean = engine._shapes()
        engine._clean_outputs()
        engine._layout()
        return engine.cost, engine.chunk_size

    def _trace(self, model: nn.Module, image: torch.Tensor, size: int,
               readout: Optional[nn.Module], fill: Union[float, torch.Tensor],
               memory_budget: int) -> None:
        """Check the arguments, trace the model and find the nodes that depend on the image
        and the readout's node."""
        if memory_budget < 1:
            raise ValueError(f"memory_budget must be >= 1 byte, got {memory_budget}")
        if image.dim() != 3:
            raise ValueError(f"image must be (C, H, W), got {tuple(image.shape)}")
        self.model, self.size, self.memory_budget = model, int(size), int(memory_budget)
        self.image = image
        self.fill = torch.as_tensor(fill, dtype=image.dtype, device=image.device).expand_as(image)
        try:
            self.graph = _Tracer().trace(model)
        except Exception as err:  # fx raises many kinds (TraceError, TypeError, ...)
            raise NotIncremental(f"the model does not trace with torch.fx "
                                 f"({type(err).__name__}: {str(err).splitlines()[0]})") from err
        self.nodes = list(self.graph.nodes)
        inputs = [n for n in self.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise NotIncremental(f"the model takes {len(inputs)} inputs; expected one image batch")
        self.input = inputs[0]
        self.modules = dict(model.named_modules())
        # nodes whose value depends on the image; the others are the same for every position
        self.dependent = self._depends_on_input()
        self.readout = self._readout_node(readout)
        self.last_use = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                self.last_use[a] = i

    def _shapes(self) -> dict:
        """Every node's output on the clean image as tensors on the meta device (shapes and
        dtypes, no data, nothing computed), the model's parameters and buffers swapped for meta
        copies during the pass; the real clean run where the model does something the meta
        device cannot follow (a value read back into Python, a tensor that is neither
        parameter nor buffer)."""
        model, image = self.model, self.image
        state = {name: t.to("meta") for name, t in [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False)]}
        try:
            # torch.func.functional_call's context manager (present since torch 2.0, private):
            # where a torch release lacks it, the real clean run below is taken instead
            from torch.nn.utils.stateless import _reparametrize_module

            self.image = image.to("meta")
            with torch.no_grad(), _out_of_place(model), _reparametrize_module(model, state):
                return self._run_clean()
        except Exception:  # noqa: BLE001 - any failure of the meta pass: compute the values
            pass
        finally:
            self.image = image
        with torch.no_grad(), _out_of_place(model):
            return self._run_clean()

    def _clean_outputs(self) -> torch.Tensor:
        """The (1, classes) logits of the clean run, after checking the ranks of the model's
        output and the readout's."""
        logits = self.clean[self._output_node().args[0]]
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise NotIncremental("the model's output is not one (B, classes) tensor")
        if self.readout is not None and (not isinstance(self.clean[self.readout], torch.Tensor)
                                         or self.clean[self.readout].dim() != 4):
            raise NotIncremental("the readout module's output is not a (B, M, H, W) map")
        return logits

    def _layout(self) -> None:
        """Which operation each node is, the update patches' sizes, the cost estimate and the
        chunk size (shapes are all they read from the clean run)."""
        self._ops = {n: self._classify(n) for n in self.nodes if n in self.dependent}
        self._sizes: dict = {}  # node -> (h, w) of its update patch in every chunk (_plan)
        self.cost, self.bytes_per_position, self.bytes_per_chunk = self._plan()
        self.chunk_size = max(1, (self.memory_budget - self.bytes_per_chunk)
                              // max(1, self.bytes_per_position))

    # -- graph set-up --------------------------------------------------------------------------

    def _readout_node(self, readout: Optional[nn.Module]) -> Optional[fx.Node]:
        """The node that is ``readout``'s output: the last node traced inside it."""
        if readout is None:
            return None
        names = [q for q, m in self.modules.items() if m is readout]
        if not names:
            raise NotIncremental("the readout module is not a submodule of the model")
        found, calls = None, set()
        for n in self.nodes:
            for key, (qualified, _) in (n.meta.get("nn_module_stack") or {}).items():
                if qualified in names:
                    found = n
                    calls.add(key)
        if found is None:
            raise NotIncremental(f"the readout module {names[0]!r} does not appear in the graph")
        if len(calls) != 1:
            raise NotIncremental(f"the readout module {names[0]!r} runs {len(calls)} times in one "
                                 f"forward pass; expected once")
        if found not in self.dependent:
            raise NotIncremental(f"the readout module {names[0]!r} does not depend on the image")
        return found

    def _depends_on_input(self) -> set:
        dependent = {self.input}
        for n in self.nodes:
            if any(a in dependent for a in n.all_input_nodes):
                dependent.add(n)
        return dependent

    def _check_against_model(self, readout: Optional[nn.Module], logits: torch.Tensor,
                             model_output: Optional[tuple] = None) -> None:
        """The traced graph must be the model: run the model itself once on the clean image,
        reading ``readout`` with a forward hook as ``occlude`` does (or take that run's
        ``(totals, logits)`` from the caller), and compare."""
        seen: list[torch.Tensor] = []
        if model_output is not None:
            totals, expected = model_output
            seen += [totals] if totals is not None else []
        else:
            handle = (readout.register_forward_hook(
                lambda m, i, o: seen.append(o.sum(dim=(2, 3)))) if readout is not None else None)
            try:
                expected = self.model(self.image[None])
            finally:
                if handle is not None:
                    handle.remove()
        same = (isinstance(expected, torch.Tensor) and expected.shape == logits.shape
                and torch.allclose(expected, logits, rtol=1e-4, atol=1e-6))
        if readout is not None:
            same = same and len(seen) == 1 and torch.allclose(
                seen[0][0], self.clean_totals, rtol=1e-4, atol=1e-6)
        if not same:
            raise NotIncremental("the traced graph does not reproduce the model's output or the "
                                 "readout module's on the clean image")

    def _output_node(self) -> fx.Node:
        return next(n for n in reversed(self.nodes) if n.op == "output")

    def _attr(self, target: str):
        obj = self.model
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def _call(self, node: fx.Node, args: tuple, kwargs: dict):
        """Run one node on plain values (the clean run, and the full computation), never in
        place (see :func:`_out_of_place`)."""
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            fn = _IN_PLACE.get(node.target, node.target)
            if kwargs.get("inplace") is True:
                kwargs = {**kwargs, "inplace": False}
            return fn(*args, **kwargs)
        if node.op == "call_method":
            self_, *rest = args
            name = node.target
            if name.endswith("_") and not name.endswith("__") and hasattr(self_, name[:-1]):
                name = name[:-1]  # relu_ -> relu, add_ -> add
            return getattr(self_, name)(*rest, **kwargs)
        if node.op == "get_attr":
            return self._attr(node.target)
        raise NotIncremental(f"unexpected fx node {node.op}")

    def _run_clean(self) -> dict:
        env: dict = {}
        for n in self.nodes:
            if n.op == "placeholder":
                env[n] = self.image[None]
            elif n.op == "output":
                env[n] = env[n.args[0]] if isinstance(n.args[0], fx.Node) else None
            else:
                args = fx.node.map_arg(n.args, lambda a: env[a])
                kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a])
                env[n] = self._call(n, args, kwargs)
        return env

    # -- which operation a node is -------------------------------------------------------------

    def _classify(self, n: fx.Node) -> tuple[str, Any]:
        """``("window", _Window)``, ``("pointwise", fn)``, ``("binary", None)``, or ``("",
        None)`` for a node computed in full."""
        if n.op in ("placeholder", "output"):
            return "", None
        out = self.clean[n]
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            return "", None
        window = self._window(n)
        if window is not None and self._changed_args(n) == [n.args[0]]:
            return "window", window
        fn = self._pointwise(n)
        if fn is not None:
            return "pointwise", fn
        if self._binary(n):
            return "binary", None
        return "", None

    def _changed_args(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a in self.dependent]

    def _window(self, node: fx.Node) -> Optional[_Window]:
        """The node as a sliding-window op on its first argument, or None."""
        value = self.clean.get(node)
        if not isinstance(value, torch.Tensor) or value.dim() != 4:
            return None
        if node.op == "call_module":
            m = self.modules[node.target]
            if not _own_forward(m) or not isinstance(m, _WINDOW_MODULES) or len(node.args) != 1:
                return None
            if isinstance(m, nn.Conv2d):
                return self._conv(node, m.weight, m.bias, m.stride, m.padding, m.dilation,
                                  m.groups, m.padding_mode)
            if isinstance(m, nn.MaxPool2d):
                return self._max_pool(node, m.kernel_size, m.stride, m.padding, m.dilation,
                                      m.return_indices)
            if isinstance(m, nn.ConstantPad2d):
                return self._pad(node, m.padding, "constant", m.value)
            return self._avg_pool(node, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                  m.count_include_pad, m.divisor_override)
        if node.op != "call_function":
            return None
        args = fx.node.map_arg(node.args, lambda a: self.clean[a])
        kwargs = fx.node.map_arg(node.kwargs, lambda a: self.clean[a])
        if node.target in (F.conv2d, torch.conv2d):
            a = _bind(args, kwargs, ["input", "weight", "bias", "stride", "padding", "dilation",
                                     "groups"], dict(bias=None, stride=1, padding=0, dilation=1,
                                                     groups=1))
            if self._changed_args(node) != [node.args[0]]:
                return None  # a weight that depends on the image is not a convolution layer
            return self._conv(node, a["weight"], a["bias"], a["stride"], a["padding"],
                              a["dilation"], a["groups"], "zeros")
        if node.target is F.max_pool2d:
            a = _bind(args, kwargs, ["input", "kernel_size", "stride", "padding", "dilation",
                                     "ceil_mode", "return_indices"],
                      dict(stride=None, padding=0, dilation=1, ceil_mode=False,
                           return_indices=False))
            return self._max_pool(node, a["kernel_size"], a["stride"], a["padding"],
                                  a["dilation"], a["return_indices"])
        if node.target is F.avg_pool2d:
            a = _bind(args, kwargs, ["input", "kernel_size", "stride", "padding", "ceil_mode",
                                     "count_include_pad", "divisor_override"],
                      dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                           divisor_override=None))
            return self._avg_pool(node, a["kernel_size"], a["stride"], a["padding"],
                                  a["ceil_mode"], a["count_include_pad"], a["divisor_override"])
        if node.target is F.pad:
            a = _bind(args, kwargs, ["input", "pad", "mode", "value"],
                      dict(mode="constant", value=None))
            return self._pad(node, a["pad"], a["mode"], a["value"])
        return None

    def _conv(self, node, weight, bias, stride, padding, dilation, groups, padding_mode):
        if padding_mode != "zeros" or weight.dim() != 4:
            return None
        k, s, d = _pair(weight.shape[2:]), _pair(stride), _pair(dilation)
        if padding == "valid":
            p = (0, 0)
        elif padding == "same":  # torch pads (total // 2) before, the rest after
            p = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
        else:
            p = _pair(padding)
        fan_in = weight.shape[1] * k[0] * k[1]
        return _Window(k, s, p, d, 0.0, lambda x: F.conv2d(x, weight, bias, s, 0, d, groups),
                       fan_in)

    def _pad(self, node, pad, mode, value):
        """Constant padding of the last two axes (``pad`` = left, right[, top, bottom], any
        amounts, negative ones crop) as a 1x1 window whose read-in context already holds the
        padding: output (y, x) is input (y - top, x - left), or ``value`` outside the input."""
        if mode != "constant" or not isinstance(pad, (tuple, list)) or len(pad) not in (2, 4):
            return None
        left, right, top, bottom = (*(int(p) for p in pad), 0, 0)[:4]
        h, w = self.clean[node.args[0]].shape[2:]
        if tuple(self.clean[node].shape[2:]) != (h + top + bottom, w + left + right):
            return None
        return _Window((1, 1), (1, 1), (top, left), (1, 1), float(value or 0.0), lambda x: x, 1)

    def _max_pool(self, node, kernel, stride, padding, dilation, return_indices):
        if return_indices:
            return None
        k = _pair(kernel)
        s = _pair(stride) if stride not in (None, []) else k
        d = _pair(dilation)
        # -inf outside the map: torch's max pool ignores padding and ceil-mode overhang alike
        return _Window(k, s, _pair(padding), d, -math.inf,
                       lambda x: F.max_pool2d(x, k, s, 0, d), k[0] * k[1])

    def _avg_pool(self, node, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
        k = _pair(kernel)
        s = _pair(stride) if stride not in (None, []) else k
        p = _pair(padding)
        h, w = self.clean[node.args[0]].shape[2:]
        out = self.clean[node].shape[2:]
        floor_out = tuple((n + 2 * q - kk) // ss + 1 for n, q, kk, ss in zip((h, w), p, k, s))
        # Covered only where every window divides by k*k: zero padding counted (or none) and no
        # ceil-mode window hanging past the padding, whose divisor torch shortens.
        if divisor is not None or (any(p) and not count_include_pad) or tuple(out) != floor_out:
            return None
        return _Window(k, s, p, (1, 1), 0.0, lambda x: F.avg_pool2d(x, k, s, 0),
                       k[0] * k[1])

    def _pointwise(self, node: fx.Node) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        """The node as a spatially pointwise op of its one changed argument, or None."""
        changed = self._changed_args(node)
        value = self.clean.get(node)
        if (len(changed) != 1 or not isinstance(value, torch.Tensor) or value.dim() != 4
                or value.shape != self.clean[changed[0]].shape):
            return None
        src = changed[0]
        others = [a for a in node.all_input_nodes if a is not src]
        if any(isinstance(self.clean[a], torch.Tensor) for a in others):
            return None  # a tensor that broadcasts over space is not pointwise in our sense
        if node.op == "call_module":
            m = self.modules[node.target]
            if not _own_forward(m) or not isinstance(m, _POINTWISE_MODULES):
                return None
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and (
                    m.training or not m.track_running_stats):
                return None  # batch statistics mix the positions
            if isinstance(m, (nn.Dropout, nn.Dropout2d)) and m.training:
                return None
        elif node.op == "call_function":
            fn = _IN_PLACE.get(node.target, node.target)
            if fn not in _POINTWISE_FUNCTIONS and fn not in _BINARY:
                return None
            if fn is F.dropout and (node.kwargs.get("training", True)
                                    if len(node.args) < 3 else node.args[2]):
                return None
        elif node.op == "call_method":
            name = node.target[:-1] if node.target.endswith("_") else node.target
            if name not in _POINTWISE_METHODS and name not in _BINARY_METHODS:
                return None
        else:
            return None

        def fn(patch_values: torch.Tensor) -> torch.Tensor:
            sub = lambda a: patch_values if a is src else self.clean[a]
            return self._call(node, fx.node.map_arg(node.args, sub),
                              fx.node.map_arg(node.kwargs, sub))
        return fn

    def _binary(self, node: fx.Node) -> bool:
        """Two changed tensors of one shape combined pointwise (ResNet's residual add)."""
        changed = self._changed_args(node)
        if len(changed) != 2 or len(node.all_input_nodes) != 2:
            return False
        shapes = {tuple(self.clean[a].shape) for a in changed} | {tuple(self.clean[node].shape)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 4:
            return False
        if node.op == "call_function":
            return _IN_PLACE.get(node.target, node.target) in _BINARY and not node.kwargs
        if node.op == "call_method":
            return node.target.rstrip("_") in _BINARY_METHODS and not node.kwargs
        return False

    # -- the plan: geometry of all positions at once, cost and memory ---------------------------

    def _plan(self) -> tuple[CostEstimate, int, int]:
        """Geometry of every node's update patch for the largest patches any position gives
        (all positions at once), kept as the size of that node's patches in every chunk (so
        every chunk allocates the same shapes and the allocator reuses the last chunk's
        memory instead of fragmenting it); the per-position cost of both paths; and the bytes a
        chunk holds at its peak: per position, and once per chunk."""
        _, h, w = self.image.shape
        corners = _all_corners(h, w, self.size, self.image.device)
        states = self._propagate(corners, values=False)
        self._sizes = {n: (st.h, st.w) for n, st in states.items() if isinstance(st, _Patch)}
        item = self.image.element_size()
        layers: list[LayerCost] = []
        full_total = incremental_total = 0
        live: dict = {}
        peak = per_chunk = 0
        for i, n in enumerate(self.nodes):
            if n not in self.dependent or n.op in ("placeholder", "output"):
                continue
            value = self.clean[n]
            numel = value[0].numel() if isinstance(value, torch.Tensor) else 0
            full = _flops(self, n, numel)
            state = states.get(n)
            transient = once = 0
            if isinstance(state, _Patch):
                kind, area = state.kind, state.h * state.w
                c = value.shape[1]
                frac = area / (value.shape[2] * value.shape[3])
                window = self._ops[n][1] if self._ops[n][0] == "window" else None
                if window is not None:
                    src = states[n.args[0]]
                    ctx = ((state.h - 1) * window.stride[0] + window.dilation[0]
                           * (window.kernel[0] - 1) + 1) * ((state.w - 1) * window.stride[1]
                                                            + window.dilation[1]
                                                            * (window.kernel[1] - 1) + 1)
                    cin = self.clean[n.args[0]].shape[1]
                    incr = c * area * window.flops_per_output + cin * ctx
                    src_area = src.h * src.w if isinstance(src, _Patch) else 0
                    # _gather: the context twice (index_select, then contiguous), the source
                    # patch laid beside the clean map, the int64 indices; the backend's copy of
                    # the output (oneDNN's blocked layout); once per chunk: the clean map copied
                    transient = ((2 * cin * ctx + cin * src_area + c * area) * item
                                 + _INDEX_BYTES * ctx)
                    once = self.clean[n.args[0]][0].numel() * item
                else:
                    incr = c * area * 2 + c * area  # op + gathering the union / clean readout
                    transient = c * area * item * 3 + _INDEX_BYTES * area
                    once = value[0].numel() * item
                if n is self.readout:  # the clean values under the patch, both in float64
                    transient += c * area * (item + 16) + _INDEX_BYTES * area
                layers.append(LayerCost(n.name, kind, frac, full, int(incr)))
                live[n] = c * area * item
            else:
                incr = full
                layers.append(LayerCost(n.name, "full", 1.0, full, full))
                live[n] = numel * item
                # a changed input still a patch is pasted into a full copy for this op
                transient = sum(self.clean[a][0].numel() * item for a in self._changed_args(n)
                                if isinstance(states.get(a), _Patch))
                if self._ops[n][0] == "window":  # the backend's copy of the output
                    transient += numel * item
            if self._ops[n][0] == "window" and n.op == "call_module":
                weight = getattr(self.modules[n.target], "weight", None)  # the backend's copy
                once += weight.numel() * item if isinstance(weight, torch.Tensor) else 0
            full_total += full
            incremental_total += incr
            peak = max(peak, sum(live.values()) + transient)  # live includes n's output
            per_chunk = max(per_chunk, once)
            for a in n.all_input_nodes:
                if self.last_use.get(a) == i:
                    live.pop(a, None)
        return (CostEstimate(full_total, incremental_total, layers),
                max(peak, self.image[0].numel() * item), per_chunk + _BACKEND_BYTES)

    # -- running a chunk -------------------------------------------------------------------------

    def _propagate(self, corners: torch.Tensor, values: bool) -> dict:
        """Each changed node's state for the positions ``corners`` (B, 2): a :class:`_Patch`, or
        a full (B, ...) value. In the geometry-only pass (``values=False``) patches carry no
        values and full nodes are ``_FULL``. With ``values``, nodes are dropped after their
        last use and the readout's (B, M) totals are stored under ``"readout"``."""
        b = corners.shape[0]
        env: dict = {}
        for i, n in enumerate(self.nodes):
            if n.op == "placeholder":
                fill = (_gather(self.fill, None, corners[:, 0], corners[:, 1], self.size,
                                self.size) if values else None)
                env[n] = _Patch(corners[:, 0], corners[:, 1], self.size, self.size, fill,
                                "input")
            elif n not in self.dependent:
                continue
            elif n.op == "output":
                out = env[n.args[0]]
                env[n] = self._full(n.args[0], out) if values else _FULL
            else:
                env[n] = self._step(n, env, b, values)
            if values and n is self.readout:
                env["readout"] = self._readout(env[n])
            if values:
                for a in n.all_input_nodes:
                    if self.last_use.get(a) == i:
                        env.pop(a, None)
        return env

    def _full(self, node: fx.Node, state) -> torch.Tensor:
        """A changed node's full (B, ...) value."""
        if isinstance(state, _Patch):
            return _paste(self.clean[node][0], state)
        return state

    def _step(self, n: fx.Node, env: dict, b: int, values: bool):
        changed = self._changed_args(n)
        states = [env[a] for a in changed]
        kind, op = self._ops[n]
        if kind and all(isinstance(s, _Patch) for s in states):
            height, width = self.clean[n].shape[2:]
            if kind == "window":
                src = states[0]
                at_least = self._sizes.get(n, (0, 0))
                oy, h = _grow(src.oy, src.h, op.kernel[0], op.stride[0], op.padding[0],
                              op.dilation[0], height, at_least[0])
                ox, w = _grow(src.ox, src.w, op.kernel[1], op.stride[1], op.padding[1],
                              op.dilation[1], width, at_least[1])
                if h < height or w < width:
                    if not values:
                        return _Patch(oy, ox, h, w, None, kind)
                    rh = (h - 1) * op.stride[0] + op.dilation[0] * (op.kernel[0] - 1) + 1
                    rw = (w - 1) * op.stride[1] + op.dilation[1] * (op.kernel[1] - 1) + 1
                    ctx = _gather(self.clean[n.args[0]][0], src, oy * op.stride[0] - op.padding[0],
                                  ox * op.stride[1] - op.padding[1], rh, rw, op.pad_value)
                    return _Patch(oy, ox, h, w, op.fn(ctx), kind)  # (B, C, h, w)
            elif kind == "pointwise":
                src = states[0]
                return _Patch(src.oy, src.ox, src.h, src.w, op(src.values) if values else None,
                              kind)
            else:  # binary: the union of the two patches
                oy, ox, h, w = _union(states[0], states[1], height, width,
                                      self._sizes.get(n, (0, 0)))
                if h < height or w < width:
                    if not values:
                        return _Patch(oy, ox, h, w, None, kind)
                    parts = {a: _gather(self.clean[a][0], env[a], oy, ox, h, w)
                             for a in changed}
                    sub = lambda a: parts[a] if a in parts else self.clean[a]
                    return _Patch(oy, ox, h, w, self._call(
                        n, fx.node.map_arg(n.args, sub), fx.node.map_arg(n.kwargs, sub)), kind)
        if not values:
            return _FULL
        # The full computation from here: uncovered op, or the patch covers the map.
        if n.op == "call_method" and n.target == "size" or (
                n.op == "call_function" and n.target is getattr and n.args[1] == "shape"):
            shape = list(self.clean[n.args[0]].shape)  # a shape needs no values
            shape[0] = b
            if n.op == "call_function":
                return torch.Size(shape)
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
            return torch.Size(shape) if dim is None else shape[dim]
        full = {a: self._full(a, env[a]) for a in changed}
        sub = lambda a: full[a] if a in full else self.clean[a]
        return self._call(n, fx.node.map_arg(n.args, sub), fx.node.map_arg(n.kwargs, sub))

    def _readout(self, state) -> torch.Tensor:
        """(B, M) per-map totals of the readout node's output, in float64: clean total minus
        the clean values under the update patch plus the new ones."""
        clean = self.clean[self.readout][0]  # (M, H, W)
        if isinstance(state, _Patch):
            before = _gather(clean, None, state.oy, state.ox, state.h, state.w)
            return (self._clean_totals64[None] - before.double().sum(dim=(2, 3))
                    + state.values.double().sum(dim=(2, 3)))
        return state.double().sum(dim=(2, 3))

    @torch.no_grad()
    def __call__(self, corners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Readout totals and logits for each occluder position.

        Args:
            corners (Tensor): (P, 2) int64 ``(y, x)`` top-left corners of the occluder, wholly
                inside the image (:func:`zfnet_cli.occlusion.occluder_positions`).

        Returns:
            tuple[Tensor, Tensor]: (P, M) the readout's per-map totals (float64, empty with
            ``readout=None``) and (P, classes) logits, in the image's dtype, on its device.

        Raises:
            ValueError: ``corners`` is not (P, 2) or puts the occluder outside the image.
        """
        return self._chunks(corners, None)

    def _chunks(self, corners: torch.Tensor, chunk_size: Optional[int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        _, h, w = self.image.shape
        if corners.dim() != 2 or corners.shape[1] != 2:
            raise ValueError(f"corners must be (P, 2), got {tuple(corners.shape)}")
        corners = corners.to(device=self.image.device, dtype=torch.long)
        if len(corners) and (corners.min() < 0 or corners[:, 0].max() > h - self.size
                             or corners[:, 1].max() > w - self.size):
            raise ValueError(f"an occluder of size {self.size} at these corners leaves the "
                             f"{h}x{w} image")
        step = chunk_size or self.chunk_size
        totals, logits = [], []
        with _out_of_place(self.model), _freed_memory_returned():
            for s in range(0, len(corners), step):
                env = self._propagate(corners[s:s + step], values=True)
                logits.append(env[self._output_node()])
                totals.append(env["readout"] if self.readout is not None
                              else logits[-1].new_zeros(len(logits[-1]), 0, dtype=torch.float64))
        if not logits:
            return (torch.zeros(0, len(self.clean_totals), dtype=torch.float64),
                    self.clean_logits.new_zeros(0, len(self.clean_logits)))
        return torch.cat(totals), torch.cat(logits)

    def iter_chunks(self, corners: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor,
                                                                    torch.Tensor]]:
        """Like calling the object, one chunk at a time: ``(slice into corners, totals,
        logits)``, for a progress bar or to write results out as they come."""
        for s in range(0, len(corners), self.chunk_size):
            part = slice(s, min(s + self.chunk_size, len(corners)))
            yield (part, *self._chunks(corners[part], None))


def _all_corners(h: int, w: int, size: int, device) -> torch.Tensor:
    """Every occluder position at stride 1 (the geometry pass's worst case)."""
    ys, xs = torch.arange(h - size + 1, device=device), torch.arange(w - size + 1, device=device)
    return torch.cartesian_prod(ys, xs)


def _flops(engine: IncrementalOcclusion, n: fx.Node, numel: int) -> int:
    """Multiply-adds of node ``n`` run in full for one position (pointwise ops: one per value)."""
    kind, op = engine._ops.get(n, ("", None))
    if kind == "window":
        return numel * op.flops_per_output
    if n.op == "call_module":
        m = engine.modules[n.target]
        if isinstance(m, nn.Linear):
            return m.in_features * m.out_features
        if isinstance(m, nn.modules.conv._ConvNd):
            return numel * m.weight[0].numel()
    return numel


# ``method="auto"`` runs incrementally where the estimated work, with the build counted as
# AUTO_BUILD_POSITIONS more positions, is at most AUTO_MAX_RATIO of the full pass's:
# ratio * (positions + AUTO_BUILD_POSITIONS) <= AUTO_MAX_RATIO * positions. The gather of
# read-in contexts and the many small convolutions make a recomputed multiply-add dearer than
# one in the full pass (hence 0.8, not 1), and the engine's build (trace, clean run at batch 1,
# plan) is paid once per image. Whole occlude() calls, build included, 224 px, occluder 56 /
# stride 28 (49 positions), 2-core CPU with nothing else running (README, "What method=auto
# runs"), the incremental path's speed over the full path's: EfficientNet-Lite0 (estimated work
# 0.69) 2.91x, resnet18 (0.56) 1.79x, ZFNet (0.45) 2.72x, vgg16 (0.28, 16 positions) 2.21x. Runs
# of the same cases while other jobs loaded the machine gave much smaller gains (resnet18
# 0.93-1.81x, Lite0 0.93-1.22x over four runs): memory traffic, which the gather adds, suffers
# most under contention. The known losses lie above 0.8: EfficientNet-Lite0 at 64 px (0.82, one
# chunk of 169 positions against batches of 64) about 1.2x slower, resnet18 and alexnet at 64-96
# px (0.84-0.89) slower. (An earlier finding that a larger pass alone made the incremental path
# faster, Lite0 at 64 px with every layer in full, was measured while the engine left glibc's
# mmap threshold at 128 KiB for the rest of the process, which slows the full path: the likely
# cause.)
AUTO_MAX_RATIO = 0.8
AUTO_BUILD_POSITIONS = 5
METHODS = ("auto", "incremental", "full")


def incremental_or_full(model: nn.Module, image: torch.Tensor, *, size: int,
                        readout: Optional[nn.Module], fill: Union[float, torch.Tensor] = 0.0,
                        method: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET,
                        positions: Optional[int] = None,
                        model_output: Optional[tuple[Optional[torch.Tensor], torch.Tensor]] = None
                        ) -> Optional[IncrementalOcclusion]:
    """Pick the occlusion method: an :class:`IncrementalOcclusion` to run the positions with,
    or ``None`` for the full computation (one forward pass of the whole model per position).

    ``"auto"`` takes the incremental path where the model traces and its estimated work
    (:attr:`CostEstimate.ratio`, for the largest update patches), the build counted as
    :data:`AUTO_BUILD_POSITIONS` more positions, is at most :data:`AUTO_MAX_RATIO` of the full
    path's; ``"incremental"`` insists on it; ``"full"`` never
    builds it. ``"auto"`` decides from the trace and the layers' shapes alone (a pass on the
    meta device) and builds the engine only where it takes the incremental path.

    Args:
        model (nn.Module): the classifier, in eval mode.
        image (Tensor): (C, H, W) on the model's device and dtype.
        size (int): the occluder's side in pixels.
        readout (nn.Module, optional): the module whose per-map totals are read.
        fill (float or Tensor, optional): the occluder's pixels. Default: ``0.0``.
        method (str, optional): ``"auto"``, ``"incremental"`` or ``"full"``. Default: ``"auto"``.
        memory_budget (int, optional): bytes of per-position activations per chunk.
            Default: :data:`DEFAULT_MEMORY_BUDGET`.
        positions (int, optional): how many occluder positions will run, for ``"auto"`` (the
            build is repaid over them). Default: ``None`` (many: the build is not counted).
        model_output (tuple, optional): the model's own (readout totals, logits) on the clean
            image, for the engine's check (:class:`IncrementalOcclusion`). Default: ``None``.

    Returns:
        IncrementalOcclusion or None: the engine, or ``None`` for the full path.

    Raises:
        ValueError: ``method`` is not one of :data:`METHODS`; ``memory_budget`` below 1.
        NotIncremental: ``method="incremental"`` for a model that cannot run incrementally.

    Example:
        >>> from zfnet_cli.model import ModelConfig, ZFNet
        >>> net = ZFNet(ModelConfig(input_size=64, channels=[8, 8, 8, 8, 8],
        ...                         fc_widths=[16, 16]), num_classes=5).eval()
        >>> incremental_or_full(net, torch.randn(3, 64, 64), size=16, readout=None,
        ...                     method="full") is None
        True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if memory_budget < 1:
        raise ValueError(f"memory_budget must be >= 1 byte, got {memory_budget}")
    if method == "full":
        return None
    if method == "auto":  # decide from the trace and shapes before paying for the clean run
        try:
            cost, _ = IncrementalOcclusion._estimate(
                model, image, size=size, readout=readout, memory_budget=memory_budget)
        except NotIncremental:
            return None
        build = AUTO_BUILD_POSITIONS / positions if positions else 0.0
        if cost.ratio * (1 + build) > AUTO_MAX_RATIO:
            return None
    try:
        return IncrementalOcclusion(model, image, size=size, readout=readout, fill=fill,
                                    memory_budget=memory_budget, model_output=model_output)
    except NotIncremental:
        if method == "incremental":
            raise
        return None
