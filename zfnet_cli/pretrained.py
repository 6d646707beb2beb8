"""Weights trained elsewhere, as models the deconvnet, occlusion and our commands take
(``checkpoint=alexnet-owt-7be5be79.pth``).

A file that is not one of our checkpoints (those are dicts with ``model`` and ``model_cfg``)
is read as a state dict and recognised by its keys (a ``{"state_dict": ...}``, ``{"model": ...}``
or ``{"model_state_dict": ...}`` wrapper and DataParallel's ``module.`` prefix are removed
first, :func:`unwrap`); a few by their exact keys (:func:`detect`):

* ``torchvision_alexnet`` (``alexnet-owt-7be5be79.pth``): exactly the keys
  ``features.{0,3,6,8,10}`` and ``classifier.{1,4,6}`` (each ``.weight``, ``.bias``);
  becomes our :class:`~zfnet_cli.model.ZFNet` (:func:`torchvision_alexnet`).
* ``torchvision_vgg11`` / ``13`` / ``16`` / ``19`` (``vgg16-397923af.pth``): exactly
  ``features.<i>`` at the conv positions of torchvision's VGG config A / B / D / E and
  ``classifier.{0,3,6}``; torchvision's own VGG.
* ``pytorchcv_zfnet`` / ``zfnetb`` / ``alexnet`` / ``alexnetb`` (``zfnet-1727-d010ddca.pth``):
  at least ``features.stage1.unit1.conv``, ``stage2.unit1.conv``, ``stage3.unit{1,2,3}.conv``,
  ``output.fc{1,2}.fc`` and ``output.fc3`` (pytorchcv's own loader ignores extra keys); the
  variant is read off conv1's shape; becomes our ZFNet (:func:`pytorchcv_zfnet`).

**Our ZFNet reproduces AlexNet and pytorchcv's nets exactly**: the same convolutions, ReLUs,
3x3/2 max-pools (floor mode for torchvision, ceil mode for pytorchcv) and linear layers in the
same order, so the logits are those of the original module (tests/test_pretrained.py compares
them with the original classes). torchvision's ``AdaptiveAvgPool2d((6, 6))`` before the
classifier is the identity on the 6x6 map a 224x224 input gives, and our commands always feed
224x224 (``input_size``). pytorchcv puts contrast normalisation after the ReLU and *before* the
pool (``lrn_before_pool=True``) and calls ``F.local_response_norm(x, size=5, k=2.0)`` with
torch's default alpha 1e-4 and beta 0.75; torch divides alpha by the size, so in our
Krizhevsky convention (alpha on the plain sum of squares) that is ``lrn_alpha = 1e-4 / 5``.
Dropout sits before fc6/fc7 in torchvision's AlexNet and after their ReLU here: the same in
eval mode, which is all these models are used in.

**Any other torchvision classifier** (``resnet18``, ``vgg16_bn``, ``densenet121``,
``mobilenet_v3_small``, ``efficientnet_b0``, ``convnext_tiny``, ...: ``list_models(module=
torchvision.models)``) is recognised by comparing the state dict's keys and shapes with each
architecture's, built with ``weights=None`` on the meta device (:func:`detect_architecture`;
the classifier may have any number of classes), or named with ``arch=``. It stays
torchvision's own module, so its layers keep the names users know (``layer3.1``,
``features.28``); the paper's names come from :mod:`zfnet_cli.layers` where they apply (VGG).
Its preprocessing is what torchvision states for the architecture's ``DEFAULT`` weights
(resize, crop, mean, std: :func:`torchvision_preprocessing`). Known limit: googlenet and
inception_v3 were trained with ``transform_input=True``, which a state dict does not record;
they are built with torchvision's ``weights=None`` default (False).

**Inputs.** alexnet and pytorchcv's nets were trained on ImageNet-1k (1000 classes in sorted-wnid order) and
expect torchvision's evaluation transforms: short side resized to 256, the centre 224x224,
pixels in 0..1 normalised by mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
(pytorchcv's README states that all its ImageNet models use this normalisation; its model
table gives image scale 0.875, i.e. the 224 centre of 256).
:func:`load_foreign` writes that as our preprocessing: a per-channel mean ``255 * mean``
(3, 1, 1) subtracted from 0..255 pixels, then a per-channel ``input_scale`` ``1 / (255 * std)``.
Class names are torchvision's ``IMAGENET1K_V1`` categories (shipped with torchvision, no
download).
"""
from __future__ import annotations

import difflib
import re
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Iterator, Mapping, Optional

import torch
from torch import nn

from zfnet_cli.data.sources import DataConfig
from zfnet_cli.model import ModelConfig, ZFNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of 0..1 RGB pixels, torchvision's Normalize
IMAGENET_STD = (0.229, 0.224, 0.225)
# How these models read images: short side 256, centre 224 (see the module doc).
IMAGENET_INPUT = DataConfig(name="imagenet", root=None, image_size=256, crop=224, flip=False,
                            mean="channel", scale=1.0)
ACCEPTED = ("our zfnet train checkpoints", "state dicts of any torchvision classifier (resnet18, "
            "vgg16_bn, ...)", "pytorchcv zfnet / zfnetb / alexnet / alexnetb weights")

_ALEXNET_FEATURES = (0, 3, 6, 8, 10)  # torchvision AlexNet().features: the Conv2d positions
_ALEXNET_CLASSIFIER = (1, 4, 6)  # .classifier: Dropout Linear ReLU Dropout Linear ReLU Linear
_VGG_NAMES = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
_VGG_CLASSIFIER = (0, 3, 6)  # Linear ReLU Dropout Linear ReLU Dropout Linear
_PYTORCHCV_UNITS = ("stage1.unit1", "stage2.unit1", "stage3.unit1", "stage3.unit2", "stage3.unit3")
_PYTORCHCV_FC = ("output.fc1.fc", "output.fc2.fc", "output.fc3")


class UnknownWeights(ValueError):
    """A state dict none of the known formats fits; the message is one line."""


def _pairs(prefix: str, indices) -> set[str]:
    return {f"{prefix}.{i}.{p}" for i in indices for p in ("weight", "bias")}


def _vgg_convs(config: str) -> list[int]:
    """Positions of the Conv2d modules in torchvision's ``make_layers(cfgs[config])``."""
    from torchvision.models.vgg import cfgs

    positions, i = [], 0
    for v in cfgs[config]:
        if v == "M":
            i += 1
        else:
            positions.append(i)
            i += 2  # Conv2d, ReLU
    return positions


WRAPPERS = ("state_dict", "model", "model_state_dict")  # training scripts' {"model": sd, ...}


def unwrap(state: Mapping) -> dict:
    """A plain ``{name: tensor}`` dict: the state dict under ``state_dict``, ``model`` or
    ``model_state_dict`` when wrapped (also nested), with DataParallel's ``module.`` and
    ``torch.compile``'s ``_orig_mod.`` prefixes removed."""
    for _ in range(3):
        inner = next((state[w] for w in WRAPPERS if isinstance(state.get(w), Mapping)), None)
        if inner is None:
            break
        state = inner
    for prefix in ("module.", "_orig_mod."):
        if state and all(str(k).startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def detect(state: Mapping) -> Optional[str]:
    """The format of a state dict (see the module doc), ``"zfnet_cli"`` for our checkpoints, or
    ``None``. torchvision's are recognised by their exact key sets; pytorchcv's by the keys its
    loader reads (it ignores extra keys, so do we)."""
    if "model" in state and "model_cfg" in state:
        return "zfnet_cli"
    keys = set(unwrap(state))
    if keys == _pairs("features", _ALEXNET_FEATURES) | _pairs("classifier", _ALEXNET_CLASSIFIER):
        return "torchvision_alexnet"
    for name, config in _VGG_NAMES.items():
        if keys == _pairs("features", _vgg_convs(config)) | _pairs("classifier", _VGG_CLASSIFIER):
            return f"torchvision_{name}"
    wanted = {f"features.{u}.conv.{p}" for u in _PYTORCHCV_UNITS for p in ("weight", "bias")}
    wanted |= {f"{f}.{p}" for f in _PYTORCHCV_FC for p in ("weight", "bias")}
    if wanted <= keys:
        return "pytorchcv"
    return None


def imagenet_categories(num_classes: int) -> list[str]:
    """torchvision's names of the 1000 ImageNet-1k classes in sorted-wnid order (``"tench"``,
    ``"goldfish"``, ...), shipped with torchvision; class indices as strings for another count."""
    if num_classes != 1000:
        return [str(i) for i in range(num_classes)]
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


# ---------------------------------------------------------------- onto our ZFNet

def _zfnet(cfg: ModelConfig, weights: dict[str, torch.Tensor]) -> ZFNet:
    """Our ZFNet for ``cfg`` holding ``weights`` (built on the meta device: no random init of
    60M parameters only to overwrite them)."""
    with torch.device("meta"):
        model = ZFNet(cfg, num_classes=weights["classifier.fc8.weight"].shape[0])
    model.load_state_dict(weights, strict=True, assign=True)
    return model


def _renamed(state: dict, names: dict[str, str]) -> dict[str, torch.Tensor]:
    """``state`` with key prefix ``old`` -> ``new`` for each pair of ``names``, as float32."""
    out = {}
    for old, new in names.items():
        for p in ("weight", "bias"):
            t = state[f"{old}.{p}"]
            out[f"{new}.{p}"] = t.float() if t.is_floating_point() else t
    return out


def _shapes(weights: dict[str, torch.Tensor]) -> dict:
    """ModelConfig widths and kernels read off the weights."""
    convs = [weights[f"features.conv{i}.weight"] for i in range(1, 6)]
    return {"channels": [w.shape[0] for w in convs], "kernels": [w.shape[-1] for w in convs],
            "fc_widths": [weights["classifier.fc6.weight"].shape[0],
                          weights["classifier.fc7.weight"].shape[0]]}


def torchvision_alexnet(state: dict) -> tuple[ModelConfig, ZFNet]:
    """torchvision's ``alexnet`` as our ZFNet: conv1 11x11/4 pad 2, conv2 5x5/1 pad 2, conv3-5
    3x3/1 pad 1 (64, 192, 384, 256, 256 maps), 3x3/2 max-pools in floor mode after conv1,
    conv2 and conv5, no contrast normalisation, fc 4096, 4096, 1000."""
    names = {f"features.{i}": f"features.conv{k + 1}" for k, i in enumerate(_ALEXNET_FEATURES)}
    names |= {f"classifier.{i}": f"classifier.fc{k + 6}" for k, i in enumerate(_ALEXNET_CLASSIFIER)}
    weights = _renamed(state, names)
    cfg = ModelConfig(name="torchvision_alexnet", input_size=224, strides=[4, 1, 1, 1, 1],
                      paddings=[2, 2, 1, 1, 1], pool_ceil=False, lrn=False, **_shapes(weights))
    return cfg, _zfnet(cfg, weights)


def pytorchcv_zfnet(state: dict) -> tuple[ModelConfig, ZFNet]:
    """pytorchcv's ``zfnet`` / ``zfnetb`` / ``alexnet`` / ``alexnetb`` (``AlexNet`` class of
    ``pytorchcv/models/alexnet.py``) as our ZFNet. Each conv unit is conv + ReLU, then in stages
    1-2 ``F.local_response_norm(size=5, k=2.0)`` (alpha 1e-4, beta 0.75: torch's defaults), then
    each stage ends with a 3x3/2 max-pool in ceil mode. The variant is read from conv1:
    7x7 -> zfnet(b) (stride 2 pad 1, conv2 stride 2 pad 0); 11x11 with 96 maps -> alexnet
    (stride 4 pad 0, conv2 pad 2); 11x11 with 64 maps -> alexnetb (pad 2, no LRN)."""
    names = {f"features.{u}.conv": f"features.conv{k + 1}" for k, u in enumerate(_PYTORCHCV_UNITS)}
    names |= {f: f"classifier.fc{k + 6}" for k, f in enumerate(_PYTORCHCV_FC)}
    weights = _renamed(state, names)
    shapes = _shapes(weights)
    k1, c1 = shapes["kernels"][0], shapes["channels"][0]
    if k1 == 7:
        variant = "zfnetb" if shapes["channels"][2] == 512 else "zfnet"
        geometry = dict(strides=[2, 2, 1, 1, 1], paddings=[1, 0, 1, 1, 1], lrn=True)
    elif k1 == 11 and c1 == 96:
        variant, geometry = "alexnet", dict(strides=[4, 1, 1, 1, 1], paddings=[0, 2, 1, 1, 1], lrn=True)
    elif k1 == 11 and c1 == 64:
        variant, geometry = "alexnetb", dict(strides=[4, 1, 1, 1, 1], paddings=[2, 2, 1, 1, 1], lrn=False)
    else:
        raise UnknownWeights(f"pytorchcv-style keys but an unknown conv1 ({c1} maps {k1}x{k1}); "
                             f"known: zfnet, zfnetb (7x7), alexnet (96 maps 11x11), alexnetb (64)")
    cfg = ModelConfig(name=f"pytorchcv_{variant}", input_size=224, pool_ceil=True,
                      lrn_size=5, lrn_alpha=1e-4 / 5, lrn_beta=0.75, lrn_k=2.0,
                      lrn_layers=["conv1", "conv2"], lrn_before_pool=True, **geometry, **shapes)
    return cfg, _zfnet(cfg, weights)


# ---------------------------------------------------------------- any torchvision classifier

def torchvision_architectures() -> list[str]:
    """torchvision's image classification architectures (``resnet18``, ``vgg16_bn``,
    ``densenet121``, ``mobilenet_v3_small``, ``efficientnet_b0``, ``convnext_tiny``, ...)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device but their buffers real: for
    builders that compute with tensors while building (RegNet's widths), which fails under
    ``torch.device("meta")``; also keeps non-persistent buffers (not in a state dict) usable."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _build(name: str, meta: bool, **kwargs) -> nn.Module:
    """torchvision's ``name`` with ``weights=None`` (nothing is downloaded), without spending
    time on a random initialisation: everything on the meta device (``meta=True``, shapes only)
    or parameters on the meta device, buffers real (to load a state dict into, ``assign=True``)."""
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet / inception_v3 warn about their init
        if meta:
            try:
                with torch.device("meta"):
                    return torchvision.models.get_model(name, weights=None, **kwargs)
            except NotImplementedError:  # a builder that reads tensor values (RegNet)
                pass
        with _parameters_on_meta():
            return torchvision.models.get_model(name, weights=None, **kwargs)


@dataclass(frozen=True)
class Fit:
    """How a state dict compares with one architecture: keys the architecture has and the
    state dict lacks (``missing``), the reverse (``unexpected``), keys whose shapes differ
    (``mismatched``: ``(key, expected shape, given shape)``), and the class count read off the
    last layer."""

    arch: str
    num_classes: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[tuple[str, tuple, tuple], ...]
    matched: int = 0  # keys of the architecture the state dict has, shapes aside

    @property
    def overlap(self) -> float:
        """The share of keys the two have in common (of all keys either has): 1 for an exact
        fit, near 1 for a near miss (a key deleted, a head replaced), near 0 for another
        architecture."""
        return self.matched / max(1, self.matched + len(self.missing) + len(self.unexpected))

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def distance(self) -> int:
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def near_miss(self, n: int = 3) -> str:
        """What a state dict close to this architecture lacks, has besides and holds in other
        shapes, for a one-line error: ``lacks features.0.weight``."""
        return self._listed(n, "lacks", "also has", "holds other shapes",
                            lambda k, a, b: f"{k} {list(b)} in the file vs {list(a)} in {self.arch}")

    def differences(self, n: int = 3) -> str:
        """A few of the differences, for a one-line error."""
        return self._listed(n, "missing", "unexpected", "shapes differ",
                            lambda k, a, b: f"{k} {list(a)} here vs {list(b)} in the file")

    def _listed(self, n: int, missing: str, unexpected: str, mismatched: str, shape) -> str:
        """The first ``n`` keys of each kind of difference, each kind named by its word."""
        def first(items: list, text) -> str:
            more = f" (+{len(items) - n} more)" if len(items) > n else ""
            return ", ".join(text(i) for i in items[:n]) + more

        parts = [f"{what} {first(items, str)}" for what, items in
                 ((missing, self.missing), (unexpected, self.unexpected)) if items]
        if self.mismatched:
            parts.append(f"{mismatched}: {first(self.mismatched, lambda m: shape(*m))}")
        return "; ".join(parts)


def _compare(arch: str, expected: Mapping, state: Mapping, num_classes: int) -> Fit:
    given, wanted = set(state), set(expected)
    mismatched = tuple((k, tuple(expected[k].shape), tuple(state[k].shape))
                       for k in expected if k in given and
                       tuple(expected[k].shape) != tuple(state[k].shape))
    return Fit(arch, num_classes, tuple(k for k in expected if k not in given),
               tuple(k for k in state if k not in wanted), mismatched, len(given & wanted))


def _head_classes(fit: Fit, expected: Mapping) -> Optional[int]:
    """The class count of a state dict whose only differences from ``expected`` are in dim 0 of
    the last layer's parameters (a classifier trained for another number of classes)."""
    if fit.missing or fit.unexpected or not fit.mismatched:
        return None
    last = list(expected)[-1].rsplit(".", 1)[0]  # the module of the last parameter: the head
    counts = {b[0] for k, a, b in fit.mismatched if k.rsplit(".", 1)[0] == last
              and len(a) == len(b) and a[1:] == b[1:]}
    if len(counts) != 1 or len(fit.mismatched) != sum(k.startswith(last + ".")
                                                        for k, _, _ in fit.mismatched):
        return None
    return counts.pop()


def fit_architecture(arch: str, state: Mapping, **kwargs) -> Fit:
    """Compare ``state`` (a plain state dict) with torchvision's ``arch`` (built on the meta
    device: shapes only), letting the classifier have any number of classes."""
    model = _build(arch, meta=True, **kwargs)
    expected = model.state_dict()
    default = next(m for m in reversed(list(model.modules()))
                   if isinstance(m, (nn.Linear, nn.Conv2d)))  # the head
    fit = _compare(arch, expected, state, getattr(default, "out_features", None)
                   or default.out_channels)
    n = _head_classes(fit, expected)
    if n is None:
        return fit
    expected = _build(arch, meta=True, num_classes=n, **kwargs).state_dict()
    return _compare(arch, expected, state, n)


# A first cut that needs no model built: a key each family's state dicts have (torchvision's
# module names). An architecture of a family not listed here (a newer torchvision) is always
# compared; tests/test_sources.py checks every listed family against torchvision's own models.
_FAMILY_KEYS = (
    (("resnet", "resnext", "wide_resnet"), r"layer1\.0\.conv1\.weight"),
    (("regnet",), r"trunk_output\..*"),
    (("shufflenet",), r"stage2\..*"),
    (("vit_",), r"conv_proj\.weight"),
    (("swin",), r"features\.1\.0\.attn\..*"),
    (("mnasnet",), r"layers\.0\.weight"),
    (("maxvit",), r"blocks\..*"),
    (("googlenet",), r"inception3a\..*"),
    (("inception",), r"Mixed_5b\..*"),
    (("densenet",), r"features\.denseblock1\..*"),
    (("vgg", "alexnet"), r"features\.0\.weight"),
    (("squeezenet",), r"features\.\d+\.squeeze\.weight"),
    (("mobilenet_v2",), r"features\.1\.conv\..*"),
    (("mobilenet_v3",), r"features\.1\.block\..*"),
    (("efficientnet",), r"features\.1\.0\.block\..*"),
    (("convnext",), r"features\.1\.0\.layer_scale"),
)


def _family_key(arch: str) -> Optional[str]:
    for prefixes, pattern in _FAMILY_KEYS:
        if arch.startswith(prefixes):
            return pattern
    return None


def _candidates(state: Mapping, hint: str, loose: bool = False) -> list[str]:
    """Architectures worth comparing with ``state``, most likely first: those whose family key
    (``_FAMILY_KEYS``) the state dict has, or whose family is not listed; among them, those
    named in ``hint`` (a weights file is usually named after its architecture:
    ``resnet18-f37072fd.pth``) first, longest name first. ``loose``: a family key with any
    numbers (``features.3.weight`` for ``features.0.weight``), to find the nearest
    architecture of a state dict that lost its family key."""
    keys = list(state)
    found = {p for _, p in _FAMILY_KEYS
             if any(re.fullmatch(re.sub(r"\d+", r"\\d+", p) if loose else p, k) for k in keys)}
    names = [n for n in torchvision_architectures()
             if _family_key(n) is None or _family_key(n) in found]
    hint = hint.lower()
    named = sorted((n for n in names if n in hint), key=len, reverse=True)
    return named + [n for n in names if n not in named]


# A state dict sharing at least this share of its keys with an architecture is called a near
# miss of it (a key deleted, a layer added); below, "looks like no torchvision architecture".
NEAR_MISS = 0.5


def detect_architecture(state: Mapping, hint: str = "") -> Fit:
    """The torchvision architecture a plain state dict is the weights of.

    Each candidate is built with ``weights=None`` on the meta device (no memory, no random
    init) and its state dict's keys and shapes compared with ``state``'s; the classifier may
    have any number of classes. torchvision's architectures differ in their keys or shapes
    (no two of ``list_models`` have the same ones), so the first exact fit is the one.
    Candidates are tried in the order of :func:`_candidates`; where none fits, those of the
    families whose key the state dict has with other numbers too (a near miss that lost its
    family key: ``features.0.weight`` deleted from an alexnet).

    Args:
        state (Mapping): a plain state dict (see :func:`unwrap`).
        hint (str): text that may name the architecture (the file name). Default: ``""``.

    Returns:
        Fit: the exact fit (``fit.exact``).

    Raises:
        UnknownWeights: nothing fits; the message names the nearest architecture and the keys
            that differ from it ("looks like torchvision's alexnet but lacks
            features.0.weight"), or says it looks like none (fewer than half the keys shared).
    """
    tried: list[Fit] = []
    first = _candidates(state, hint)
    for name in first + [n for n in _candidates(state, hint, loose=True) if n not in first]:
        fit = fit_architecture(name, state)
        if fit.exact:
            return fit
        tried.append(fit)
    near = max(tried, key=lambda f: (f.overlap, -f.distance), default=None)
    if near is None or near.overlap < NEAR_MISS:
        raise UnknownWeights(f"the state dict (keys {', '.join(list(state)[:3])}, ...) looks "
                             f"like no torchvision architecture; if it is a model of your own, "
                             f"load it with checkpoint=module:factory weights=FILE")
    raise UnknownWeights(f"the state dict fits no torchvision architecture: it looks like "
                         f"torchvision's {near.arch} but {near.near_miss()}; name another with "
                         f"arch=NAME, or if it is a model of your own, load it with "
                         f"checkpoint=module:factory weights=FILE")


def load_architecture(arch: str, state: Mapping) -> tuple[Fit, nn.Module]:
    """torchvision's ``arch`` holding the weights ``state`` (a plain state dict), in eval mode.

    Raises:
        UnknownWeights: ``arch`` is not a torchvision classification architecture (close
            matches named), or ``state`` does not fit it (the keys that differ named).
    """
    names = torchvision_architectures()
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            f" (torchvision has {', '.join(names[:6])}, ...)"
        raise UnknownWeights(f"unknown architecture arch={arch!r}{hint}")
    fit = fit_architecture(arch, state)
    kwargs: dict = {}
    if not fit.exact and arch in ("googlenet", "inception_v3"):
        # saved without their auxiliary classifiers (aux_logits=False, as after fine-tuning)
        kwargs = {"aux_logits": False, "init_weights": False}
        fit = fit_architecture(arch, state, **kwargs)
    if not fit.exact:
        raise UnknownWeights(f"the state dict does not fit torchvision's {arch}: "
                             f"{fit.differences()}")
    model = _build(arch, meta=False, num_classes=fit.num_classes, **kwargs)
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(floats, strict=True, assign=True)
    return fit, model.eval()


def torchvision_preprocessing(arch: str) -> dict:
    """How torchvision's weights for ``arch`` read images (its ``DEFAULT`` weights'
    ``transforms()``, shipped with torchvision, nothing downloaded): ``resize`` (short side),
    ``crop`` (the square the model sees), per-channel ``mean`` and ``std`` of 0..1 RGB pixels.
    ImageNet's 256 / 224 and mean / std where torchvision lists no weights."""
    import torchvision

    try:
        t = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        return {"resize": int(t.resize_size[0]), "crop": int(t.crop_size[0]),
                "mean": tuple(t.mean), "std": tuple(t.std)}
    except (ValueError, AttributeError, IndexError, TypeError):
        return {"resize": 256, "crop": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

# ---------------------------------------------------------------- entry point

def foreign_state(fmt: str, num_classes: int, preprocessing: dict, **extra) -> dict:
    """The checkpoint-like state of a model trained elsewhere: what
    :class:`zfnet_cli.loading.Loaded` reads from our checkpoints. ``format``, ``model_cfg``
    (``name`` and ``input_size``, plus ``extra["model_cfg"]`` where given), ``num_classes``,
    ``classes`` and ``class_names`` (torchvision's ImageNet names for 1000 classes, else the
    indices), ``mean`` and ``input_scale`` (3, 1, 1) in 0..255 pixel units (see the module
    doc), ``config`` with the ``data`` it expects (resize, crop)."""
    names = imagenet_categories(num_classes)
    data = replace(IMAGENET_INPUT, image_size=preprocessing["resize"], crop=preprocessing["crop"])
    cfg = {"name": fmt, "input_size": preprocessing["crop"], **extra.pop("model_cfg", {})}
    return {"format": fmt, "model_cfg": cfg, "num_classes": num_classes, "classes": names,
            "class_names": names,
            "mean": torch.tensor(preprocessing["mean"]).mul(255.0).view(3, 1, 1),  # 0..255 units
            "input_scale": torch.tensor(preprocessing["std"]).mul(255.0).reciprocal().view(3, 1, 1),
            "config": {"data": asdict(data)}, **extra}


IMAGENET_PREPROCESSING = {"resize": 256, "crop": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def load_foreign(state: Mapping, *, arch: Optional[str] = None, hint: str = ""
                 ) -> tuple[dict, nn.Module]:
    """A state dict trained elsewhere as ``(checkpoint-like state, model)`` (see
    :func:`foreign_state` for the state).

    torchvision's ``alexnet`` and pytorchcv's nets become our ZFNet (the state then also has
    ``model``, our state dict, so :func:`zfnet_cli.checkpoint.build_model` rebuilds them); any
    other torchvision classifier is torchvision's own module, recognised by
    :func:`detect_architecture` or named by ``arch``.

    Args:
        state (Mapping): a state dict, possibly wrapped (see :func:`unwrap`).
        arch (str, optional): the torchvision architecture (``"resnet18"``); ``None`` to
            recognise it from the keys and shapes.
        hint (str): text that may name the architecture (the file name), tried first.

    Raises:
        UnknownWeights: not a state dict, or one that fits no architecture (the nearest named,
            with the keys that differ).
    """
    if not isinstance(state, Mapping):
        raise UnknownWeights(f"not a state dict ({type(state).__name__}); accepted: "
                             f"{'; '.join(ACCEPTED)}")
    fmt = detect(state)
    if fmt == "zfnet_cli":
        raise UnknownWeights("one of our own checkpoints: use zfnet_cli.checkpoint.build_model")
    plain = unwrap(state)
    if not plain or not all(isinstance(v, torch.Tensor) for v in plain.values()):
        raise UnknownWeights(f"not a state dict of tensors (keys {', '.join(map(str, list(plain)[:3]))}"
                             f"); accepted: {'; '.join(ACCEPTED)}")
    if arch in (None, "alexnet") and fmt in ("torchvision_alexnet", "pytorchcv"):
        cfg, model = (torchvision_alexnet if fmt == "torchvision_alexnet" else pytorchcv_zfnet)(plain)
        out = foreign_state(cfg.name, model.num_classes, IMAGENET_PREPROCESSING,
                            model_cfg=asdict(cfg), model=model.state_dict())
        return out, model.eval()
    if arch is None and fmt is not None and fmt.startswith("torchvision_vgg"):
        arch = fmt.split("_", 1)[1]  # told apart by its keys alone: no search needed
    fit, model = load_architecture(arch, plain) if arch else \
        (lambda f: (f, load_architecture(f.arch, plain)[1]))(detect_architecture(plain, hint))
    return foreign_state(f"torchvision_{fit.arch}", fit.num_classes,
                         torchvision_preprocessing(fit.arch), arch=fit.arch), model
