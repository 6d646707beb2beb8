"""Layers by name: one naming for the CLI and the library, on any ``nn.Module``.

A **layer** is the output of one module of the model, named either

* by the module's own qualified name, exactly as ``model.named_modules()`` gives it
  (``layer3.1`` in a ResNet, ``features.28`` in torchvision's VGG, ``features.pool5`` in
  our ZFNet), or
* by the paper's name, where the model is a plain stack that has one (:func:`paper_names`):
  ``conv1`` .. ``convK`` is the output of the K-th conv *stage* (the conv and its ReLU /
  max-pool / contrast norm up to the next conv: paper Fig 3's "layer K"), ``fc6``, ``fc7``
  the output of those fully connected layers after their ReLU, ``fc8`` the logits.

So ``conv5`` of our ZFNet is ``features.pool5`` (96 .. 256 maps after pooling), and of
torchvision's ``alexnet`` it is ``features.12``; a ResNet has no paper names and its layers
are its modules (``layer3.1`` is the output of the second block of stage 3).

A module that runs more than once in one forward pass (torchvision's ResNet blocks call one
``relu`` module twice) has no single output: reading it is an error that says so and names
the enclosing module to read instead.
"""
from __future__ import annotations

import difflib
import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

# What to do about a TorchScript model's layers, said once for every message that meets them: a
# scripted module takes no forward hooks, but its weights load into the Python code that made it.
SCRIPTED = ("a TorchScript model's layers cannot be read (compiled code takes no forward hooks); "
            "to read them, load the model from its Python code, which works for any model: "
            "torch.save(torch.jit.load(FILE).state_dict(), 'weights.pth'), then "
            "checkpoint=package.module:factory weights=weights.pth (a torchvision model: "
            "checkpoint=weights.pth)")

__all__ = ["SCRIPTED", "Layer", "LayerInfo", "paper_names", "layer_names", "block_names", "resolve_layer",
           "default_layer", "describe_layers", "tap", "read_once", "read_layers", "evaluating"]


@dataclass(frozen=True)
class Layer:
    """A layer resolved on a model.

    Attributes:
        name: the name it was asked for (``"conv5"``, ``"layer3.1"``).
        module_name: the qualified name of the module whose output it is
            (``"features.pool5"``, ``"layer3.1"``).
        module: that module.
    """

    name: str
    module_name: str
    module: nn.Module


@dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`describe_layers`: a module's name, its paper name (or ``""``), its
    type, the shape of its output for one image (``()`` if it did not run) and how many times
    it ran in one forward pass."""

    module_name: str
    paper_name: str
    kind: str
    shape: tuple[int, ...]
    calls: int


def flatten_sequential(seq: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Leaf modules of a (possibly nested) ``nn.Sequential`` with qualified names."""
    out: list[tuple[str, nn.Module]] = []
    for name, m in seq.named_children():
        if isinstance(m, nn.Sequential):
            out += flatten_sequential(m, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", m))
    return out


def _stage_names(modules: list[tuple[str, nn.Module]], kind: type, pattern: str,
                 first: int) -> dict[str, int]:
    """Paper name -> index of the first module of each stage that starts at a ``kind`` module:
    the module's own short name where every such module is called like ``pattern`` (ZFNet's
    ``conv1`` .. ``conv5``, also with layers dropped), else ``{prefix}{first + k}``."""
    starts = [i for i, (_, m) in enumerate(modules) if isinstance(m, kind)]
    short = [modules[i][0].rsplit(".", 1)[-1] for i in starts]
    if all(re.fullmatch(rf"{pattern}\d+", s) for s in short):
        return dict(zip(short, starts))
    return {f"{pattern}{first + k}": i for k, i in enumerate(starts)}


# What a plain stack's feature part is made of (ZFNet, AlexNet, VGG and VGG-BN).
_PLAIN = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.Dropout,
          nn.Dropout2d, nn.Identity)


def paper_names(model: nn.Module) -> dict[str, str]:
    """The paper's layer names that apply to ``model``, mapped to module names.

    They apply to plain stacks: a model with a ``features`` ``nn.Sequential`` of convolutions
    and ReLU / BatchNorm / max-pool / contrast-norm / dropout modules only (not DenseNet's or
    MobileNet's ``features``, which hold blocks) and optionally a ``classifier`` ``nn.Sequential`` with
    ``Linear`` layers: our ZFNet, torchvision's ``alexnet`` and ``vgg*`` (also ``_bn``).

    * ``conv<K>``: the output of the K-th conv stage, the last module before the next
      ``Conv2d`` (or the end of ``features``);
    * ``fc<N>`` for every ``Linear`` of ``classifier`` but the last: its output after the ReLU
      that follows it (the ``Linear`` itself if none does); numbered from 6 as in the paper
      unless the modules are already called ``fc6`` ...;
    * ``fc8`` (or the next number): the last ``Linear``, the logits.

    Args:
        model (nn.Module): any model.

    Returns:
        dict[str, str]: paper name -> qualified module name, bottom to top; empty where the
        model is not a plain stack (a ResNet, say).

    Example:
        >>> from zfnet_cli.model import ZFNet
        >>> names = paper_names(ZFNet())
        >>> names["conv1"], names["conv5"], names["fc7"]
        ('features.norm1', 'features.pool5', 'classifier.relu7')
    """
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        return {}
    out: dict[str, str] = {}
    feats = flatten_sequential(features, "features.")
    if not all(isinstance(m, _PLAIN) for _, m in feats):
        return {}  # a DenseNet / MobileNet "features" holds blocks, not a plain stack
    convs = _stage_names(feats, nn.Conv2d, "conv", 1)
    if not convs:
        return {}
    starts = sorted(convs.values())
    for name, start in convs.items():
        later = [s for s in starts if s > start]
        end = (later[0] if later else len(feats)) - 1
        out[name] = feats[end][0]
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential):
        head = flatten_sequential(classifier, "classifier.")
        fcs = _stage_names(head, nn.Linear, "fc", 6)
        linear_at = sorted(fcs.values())
        for name, i in fcs.items():
            if i == linear_at[-1]:
                out[name] = head[i][0]  # the logits
                continue
            nxt = min(j for j in linear_at if j > i)
            relu = [j for j in range(i + 1, nxt) if isinstance(head[j][1], nn.ReLU)]
            out[name] = head[relu[0] if relu else i][0]
    return out


def layer_names(model: nn.Module) -> list[str]:
    """Every name :func:`resolve_layer` accepts for ``model``.

    Args:
        model (nn.Module): any model.

    Returns:
        list[str]: the paper's names first (bottom to top, see :func:`paper_names`), then
        every module's qualified name in registration order.
    """
    return list(paper_names(model)) + [n for n, _ in model.named_modules() if n]


def resolve_layer(model: nn.Module, name: str | int | nn.Module) -> Layer:
    """Find the layer ``name`` on ``model`` (see the module doc for the naming).

    A paper name (``conv5``, ``fc7``) is looked up first, then a qualified module name; a bare
    number ``3`` means the paper's ``conv3`` where the model has one (else the module called
    ``3``, a child of an ``nn.Sequential``); a module of ``model`` stands for itself.

    Args:
        model (nn.Module): any model.
        name (str, int or nn.Module): a paper name, a number (``3`` for ``conv3``), a module
            name, or one of ``model``'s modules.

    Returns:
        Layer: the name (``conv3`` for ``3``, the module's qualified name for a module), the
        qualified name of the module whose output it is, the module.

    Raises:
        ValueError: ``name`` is none of these; the message gives the closest names and says
            how to list them all (``zfnet layers``).

    Example:
        >>> import torchvision
        >>> net = torchvision.models.alexnet()
        >>> resolve_layer(net, "conv2").module_name, resolve_layer(net, 2).module_name
        ('features.5', 'features.5')
        >>> resolve_layer(net, net.features[5]).name
        'features.5'
    """
    modules = dict(model.named_modules())
    if isinstance(name, nn.Module):
        found = next((n for n, m in modules.items() if m is name and n), None)
        if found is None:
            raise ValueError(f"the {type(name).__name__} given as a layer is not a module of "
                             f"this {type(model).__name__} (pass one of its own modules, or "
                             f"a name: `zfnet layers` lists them)")
        return Layer(found, found, name)
    name = str(name)
    paper = paper_names(model)
    if name.isdigit() and f"conv{name}" in paper:
        name = f"conv{name}"
    module_name = paper.get(name)
    if module_name is None and name in modules and name:
        module_name = name
    if module_name is None:
        names = layer_names(model)
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        if name.isdigit():
            convs = [p for p in paper if p.startswith("conv")]
            hint = (f" (a number means conv<N>: this model's conv layers are "
                    f"{', '.join(convs)})" if convs else
                    " (a number means conv<N> on a plain stack; this model has no paper "
                    "names: name a module)")
        some = list(paper) or names[:8]
        raise ValueError(f"unknown layer {name!r}{hint} (layers of this model include "
                         f"{', '.join(some)}{', ...' if len(names) > len(some) else ''}; "
                         f"`zfnet layers` lists them all)")
    return Layer(name, module_name, modules[module_name])


@contextmanager
def tap(module: nn.Module, fn: Callable[[torch.Tensor], object]) -> Iterator[list]:
    """Apply ``fn`` to ``module``'s output each time it runs, while the context is open.

    ``fn`` runs inside the forward hook, at once: a later in-place module (torchvision's
    ``ReLU(inplace=True)``) could otherwise overwrite the tensor before it is read.

    Args:
        module (nn.Module): the module whose output to read.
        fn (callable): tensor -> anything (e.g. ``lambda t: t.sum(dim=(2, 3))``).

    Yields:
        list: ``fn``'s results, one per call of the module, in order.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> with tap(net[0], lambda t: t.shape) as seen:
        ...     _ = net(torch.zeros(2, 3, 8, 8))
        >>> seen
        [torch.Size([2, 4, 6, 6])]
    """
    seen: list = []

    def hook(_module, _inputs, out):
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"{type(module).__name__} returns {type(out).__name__}, not a "
                             f"tensor: it cannot be read as a layer")
        seen.append(fn(out))

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def read_once(seen: list, layer: Layer | str) -> object:
    """The one result a :func:`tap` recorded in one forward pass; an error that says what to
    read instead when the module ran another number of times."""
    name = layer.module_name if isinstance(layer, Layer) else layer
    if len(seen) == 1:
        return seen[0]
    if not seen:
        raise ValueError(f"layer {name!r} did not run in the forward pass: choose a module "
                         f"that the model's forward calls (`zfnet layers` lists their shapes)")
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    instead = f"; read the module that encloses it ({parent!r})" if parent else ""
    raise ValueError(f"module {name!r} runs {len(seen)} times in one forward pass, so it has "
                     f"no single output{instead}")


def read_layers(model: nn.Module, x: torch.Tensor, names: Sequence[str | int | nn.Module], *,
                output: bool = False):
    """The outputs of the layers ``names`` for the batch ``x``, from one forward pass.

    Each layer is read by a :func:`tap` on its module, copied at once (a later in-place module
    cannot change it). Works on any model; the paper's names (``conv5``, ``fc7``) where the
    model has them, else module names (``layer3.1``).

    Args:
        model (nn.Module): any model (its mode is left as it is: call ``eval()`` first).
        x (Tensor): the input batch, e.g. (B, 3, H, W).
        names (sequence of str, int or nn.Module): layers (see :func:`resolve_layer`).
        output (bool): also return the model's output (the logits). Default: ``False``.

    Returns:
        dict: each name as given (a module: its qualified name) -> (B, ...) output of that
        layer, in the order of ``names``;
        with ``output=True``, ``(logits, that dict)``.

    Raises:
        ValueError: an unknown layer (close matches named), or a module that does not run
            exactly once in the forward pass.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.resnet18().eval()
        >>> with torch.no_grad():
        ...     out = read_layers(net, torch.zeros(1, 3, 64, 64), ["layer3.1", "avgpool"])
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'layer3.1': (1, 256, 4, 4), 'avgpool': (1, 512, 1, 1)}
    """
    layers = [resolve_layer(model, n) for n in names]
    modules = {layer.module_name: layer.module for layer in layers}
    with ExitStack() as stack:
        seen = {m: stack.enter_context(tap(mod, lambda t: t.clone())) for m, mod in modules.items()}
        logits = model(x)
    out = {(a.name if isinstance(asked, nn.Module) else asked):
           read_once(seen[a.module_name], a) for asked, a in zip(names, layers)}
    return (logits, out) if output else out


@torch.no_grad()
def _run_once(model: nn.Module, input_shape: Sequence[int]
              ) -> tuple[list[tuple[str, tuple[int, ...]]], dict[str, int]]:
    """One forward pass of a zero (1, *input_shape) input on the model's device and dtype, in
    eval mode: ``(name, output shape)`` of every tensor a named module returned, in the order
    the modules finished, and how many times each module ran."""
    finished: list[tuple[str, tuple[int, ...]]] = []
    calls: dict[str, int] = {}
    handles = []
    for n, m in model.named_modules():
        if not n:
            continue
        calls[n] = 0

        def hook(_m, _i, out, n=n):
            calls[n] += 1
            if isinstance(out, torch.Tensor):
                finished.append((n, tuple(out.shape)))
        handles.append(m.register_forward_hook(hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        with evaluating(model):
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return finished, calls


@torch.no_grad()
def describe_layers(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)
                    ) -> list[LayerInfo]:
    """Every module of ``model`` with its paper name, type, output shape for one image and
    the number of times it runs in a forward pass (``zfnet layers`` prints this).

    One forward pass of a zero image of ``input_shape`` on the model's device, in eval mode
    (modes restored after).

    Args:
        model (nn.Module): any model.
        input_shape (sequence of int): ``(C, H, W)`` of one input. Default: ``(3, 224, 224)``.

    Returns:
        list[LayerInfo]: in registration order (``named_modules``), without the root.
    """
    paper = {m: p for p, m in paper_names(model).items()}
    finished, calls = _run_once(model, input_shape)
    shapes: dict[str, tuple[int, ...]] = {}
    for n, shape in finished:
        shapes.setdefault(n, shape[1:])  # the first call's output, for one image
    named = [(n, m) for n, m in model.named_modules() if n]
    return [LayerInfo(n, paper.get(n, ""), type(m).__name__, shapes.get(n, ()), calls[n])
            for n, m in named]


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def block_names(model: nn.Module, input_shape: Sequence[int] | None = None) -> list[str]:
    """The layers a figure shows by default (Fig 2 ``--all``, ``zfnet explore``): the paper's
    conv layers (``conv1`` ..) on plain stacks; otherwise the network's blocks, i.e. the
    children that hold a ``Conv2d`` of each top-level container (an ``nn.Sequential``, or an
    ``nn.ModuleList`` / ``nn.ModuleDict`` that ``forward`` loops over: ResNet's ``layer1.0`` ..
    ``layer4.1``, DenseNet's dense blocks and transitions, MobileNet's / ConvNeXt's
    ``features.0`` .., EfficientNet-PyTorch's ``_blocks.0`` ..), or the top-level children that
    hold one where there is no such container.

    With ``input_shape``, one forward pass of a zero input (eval mode, modes restored after)
    keeps the blocks that the forward actually calls, once each, with a 4-D output, in the
    order they finish: a block the forward skips or calls twice cannot be read as a layer.

    Args:
        model (nn.Module): any model.
        input_shape (sequence of int, optional): ``(C, H, W)`` of one input. Default: no
            forward pass (every block found, in registration order).

    Returns:
        list[str]: layer names (:func:`resolve_layer` accepts each), bottom to top.

    Example:
        >>> import torchvision
        >>> block_names(torchvision.models.resnet18())[:3]
        ['layer1.0', 'layer1.1', 'layer2.0']
    """
    paper = [p for p in paper_names(model) if p.startswith("conv")]
    if paper:
        return paper
    has_conv = lambda m: any(isinstance(s, nn.Conv2d) for s in m.modules())  # noqa: E731
    out = [f"{name}.{child}" for name, top in model.named_children()
           if isinstance(top, _CONTAINERS)
           for child, m in top.named_children() if has_conv(m)]
    out = out or [name for name, m in model.named_children() if has_conv(m)]
    if input_shape is None:
        return out
    finished, calls = _run_once(model, input_shape)
    order = [n for n, shape in finished if len(shape) == 4]
    return sorted((n for n in out if calls.get(n) == 1 and n in order), key=order.index)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode while the context is open; every module's mode restored after
    (a figure reads a network as it predicts, BatchNorm with its running statistics)."""
    modes = {m: m.training for m in model.modules()}
    try:
        yield model.eval()
    finally:
        for m, training in modes.items():
            m.training = training


@torch.no_grad()
def default_layer(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> Layer:
    """The layer an instrument reads when none is named (occlusion's panel (b)).

    * Where the paper's names apply (:func:`paper_names`): the last conv stage, the paper's
      "layer 5" (``conv5`` of ZFNet and AlexNet, ``conv13`` of VGG16).
    * Else the network's last feature map before global pooling: the last module, in the
      order the forward pass *finishes* them, whose output is 4-D with more than one spatial
      position and that runs once. A container finishes after its last child, so this is
      ``layer4`` of a ResNet, ``features`` of MobileNet / EfficientNet / DenseNet, the last
      ReLU before the ``Flatten`` of a plain ``nn.Sequential``. Where every 4-D output is 1x1
      (a tiny input), the last 4-D one.

    One forward pass of a zero input of ``input_shape`` in eval mode (modes restored after).

    Args:
        model (nn.Module): any model taking (B, C, H, W) images.
        input_shape (sequence of int): ``(C, H, W)`` of one input. Default: ``(3, 224, 224)``.

    Returns:
        Layer: named by its paper name or its module name.

    Raises:
        ValueError: no module of the model gives a 4-D output (no feature map to read).

    Example:
        >>> import torchvision
        >>> default_layer(torchvision.models.resnet18(), (3, 64, 64)).name
        'layer4'
    """
    paper = [n for n in paper_names(model) if n.startswith("conv")]
    if paper:
        return resolve_layer(model, paper[-1])
    finished, calls = _run_once(model, input_shape)
    maps = [(n, s) for n, s in finished if len(s) == 4 and calls[n] == 1]
    spatial = [n for n, s in maps if s[2] * s[3] > 1]
    if not maps:
        raise ValueError(f"{type(model).__name__} has no module with a 4-D (B, C, H, W) output "
                         f"for a {tuple(input_shape)} input: name the layer to read "
                         f"(`zfnet layers` lists them)")
    return resolve_layer(model, (spatial or [n for n, _ in maps])[-1])
