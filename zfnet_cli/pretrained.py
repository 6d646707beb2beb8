"""Weights trained elsewhere, as models the deconvnet, occlusion and our commands take
(``checkpoint=alexnet-owt-7be5be79.pth``).

A file that is not one of our checkpoints (those are dicts with ``model`` and ``model_cfg``)
is read as a state dict and recognised by its keys (:func:`detect`; a ``{"state_dict": ...}``
wrapper and DataParallel's ``module.`` prefix are removed first):

* ``torchvision_alexnet`` (``alexnet-owt-7be5be79.pth``): exactly the keys
  ``features.{0,3,6,8,10}`` and ``classifier.{1,4,6}`` (each ``.weight``, ``.bias``);
  becomes our :class:`~zfnet_cli.model.ZFNet` (:func:`torchvision_alexnet`).
* ``torchvision_vgg11`` / ``13`` / ``16`` / ``19`` (``vgg16-397923af.pth``): exactly
  ``features.<i>`` at the conv positions of torchvision's VGG config A / B / D / E and
  ``classifier.{0,3,6}``; becomes torchvision's own VGG under :class:`PaperNames`.
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

**VGG** (13 convs for vgg16) does not fit ZFNet's five conv layers: torchvision's own ``VGG``
is built and loaded, then :class:`PaperNames` gives its modules ZFNet's names (``conv1`` ..
``conv13``, ``fc6`` .. ``fc8``) and a ``layer_outputs`` like ZFNet's, which is all that the
deconvnet, occlusion, invariance and correspondence use.

**Inputs.** All of them were trained on ImageNet-1k (1000 classes in sorted-wnid order) and
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

from collections import OrderedDict
from dataclasses import asdict
from typing import Mapping, Optional

import torch
from torch import nn

from zfnet_cli.data.sources import DataConfig
from zfnet_cli.model import ModelConfig, ZFNet, stage_outputs

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # of 0..1 RGB pixels, torchvision's Normalize
IMAGENET_STD = (0.229, 0.224, 0.225)
# How these models read images: short side 256, centre 224 (see the module doc).
IMAGENET_INPUT = DataConfig(name="imagenet", root=None, image_size=256, crop=224, flip=False,
                            mean="channel", scale=1.0)
ACCEPTED = ("our zfnet train checkpoints", "torchvision alexnet / vgg11 / vgg13 / vgg16 / vgg19 "
            "state dicts", "pytorchcv zfnet / zfnetb / alexnet / alexnetb weights")

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


def unwrap(state: Mapping) -> dict:
    """A plain ``{name: tensor}`` dict: ``state["state_dict"]`` when wrapped, DataParallel's
    ``module.`` prefix removed."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
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


# ---------------------------------------------------------------- torchvision's VGG

class PaperNames(nn.Module):
    """A torchvision-style classifier (``features`` of Conv2d / ReLU / MaxPool2d, ``avgpool``,
    ``classifier`` of Linear / ReLU / Dropout) with ZFNet's module names, so that everything
    written for ZFNet reads it the same way.

    ``features``: ``conv1``, ``relu1``, ..., ``convK``, ``reluK``, with ``poolK`` after the
    K-th conv where a max-pool follows it (the deconvnet's layers ``conv1`` .. ``convK``);
    ``classifier``: ``fc6 relu6 drop6 fc7 relu7 drop7 fc8``. The conv, pool, linear and
    dropout modules are the wrapped model's own (weights shared); ReLUs become non-inplace ones
    (the deconvnet and ``layer_outputs`` keep activations that an inplace ReLU would overwrite).

    Args:
        net (nn.Module): e.g. ``torchvision.models.vgg16()``.
        name (str): recorded as ``self.name``.

    >>> net = PaperNames(torchvision.models.vgg16()).eval()   # doctest: +SKIP
    >>> list(net.layer_outputs(torch.randn(1, 3, 224, 224)))  # doctest: +SKIP
    ['conv1', ..., 'conv13', 'fc6', 'fc7', 'fc8']
    """

    def __init__(self, net: nn.Module, name: str = "") -> None:
        super().__init__()
        self.name = name
        features: OrderedDict[str, nn.Module] = OrderedDict()
        k = 0
        for m in net.features:
            if isinstance(m, nn.Conv2d):
                k += 1
                features[f"conv{k}"] = m
            elif isinstance(m, nn.ReLU):
                features[f"relu{k}"] = nn.ReLU(inplace=False)
            elif isinstance(m, nn.MaxPool2d):
                features[f"pool{k}"] = m
            else:
                raise ValueError(f"PaperNames: unexpected {type(m).__name__} in features")
        head: OrderedDict[str, nn.Module] = OrderedDict()
        n = 5
        for m in net.classifier:
            if isinstance(m, nn.Linear):
                n += 1
                head[f"fc{n}"] = m
            elif isinstance(m, nn.ReLU):
                head[f"relu{n}"] = nn.ReLU(inplace=False)
            elif isinstance(m, nn.Dropout):
                head[f"drop{n}"] = m
            else:
                raise ValueError(f"PaperNames: unexpected {type(m).__name__} in classifier")
        self.features = nn.Sequential(features)
        self.avgpool = net.avgpool
        self.classifier = nn.Sequential(head)
        self.num_classes = head[f"fc{n}"].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (B, 512, 7, 7) for VGG
        return self.classifier(torch.flatten(x, 1))  # (B, num_classes) logits

    def layer_outputs(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """As :meth:`zfnet_cli.model.ZFNet.layer_outputs`: each conv stage's output (after its
        ReLU / pool), fc6 and fc7 after their ReLU, fc8 the logits."""
        return stage_outputs(self.features, self.classifier, x, between=self.avgpool)


def torchvision_vgg(state: dict, name: str) -> tuple[dict, PaperNames]:
    """torchvision's ``vgg11`` / ``13`` / ``16`` / ``19`` (no batch norm), built by torchvision
    and loaded with ``state``, in :class:`PaperNames`; and a ``model_cfg``-like record of it."""
    from torchvision.models.vgg import VGG, cfgs, make_layers

    num_classes = state["classifier.6.weight"].shape[0]
    with torch.device("meta"):
        net = VGG(make_layers(cfgs[_VGG_NAMES[name]]), num_classes=num_classes, init_weights=False)
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model = PaperNames(net, f"torchvision_{name}").eval()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    record = {"name": model.name, "input_size": 224, "channels": [c.out_channels for c in convs],
              "kernels": [c.kernel_size[0] for c in convs], "strides": [c.stride[0] for c in convs],
              "paddings": [c.padding[0] for c in convs],
              "fc_widths": [model.classifier.fc6.out_features, model.classifier.fc7.out_features]}
    return record, model


# ---------------------------------------------------------------- entry point

def load_foreign(state: Mapping) -> tuple[dict, nn.Module]:
    """A foreign state dict as ``(checkpoint-like state, model)``.

    The state has what :class:`zfnet_cli.checkpoint.Loaded` reads from our checkpoints:
    ``format``, ``model_cfg`` (a ModelConfig as a dict; for VGG a record of its geometry),
    ``num_classes``, ``classes`` and ``class_names`` (torchvision's ImageNet names),
    ``mean`` (3, 1, 1) and ``input_scale`` (3, 1, 1) (see the module doc), ``config`` with
    the ``data`` it expects (:data:`IMAGENET_INPUT`), and for the ZFNet-shaped ones ``model``
    (our state dict, so :func:`zfnet_cli.checkpoint.build_model` rebuilds them).

    Raises:
        UnknownWeights: ``state`` fits none of the formats (the message lists those accepted),
            or is a VGG with batch norm (its BatchNorm2d has no deconvnet).
    """
    if not isinstance(state, Mapping):
        raise UnknownWeights(f"not a state dict ({type(state).__name__}); accepted: "
                             f"{'; '.join(ACCEPTED)}")
    fmt = detect(state)
    plain = unwrap(state)
    if fmt is None:
        if any(k.endswith("running_mean") for k in plain) and "classifier.6.weight" in plain:
            raise UnknownWeights("a VGG with batch norm (vgg*_bn): the deconvnet has no inverse "
                                 "of BatchNorm2d; use the plain vgg weights")
        sample = ", ".join(list(plain)[:3])
        raise UnknownWeights(f"neither a zfnet checkpoint nor a known state dict (keys {sample}"
                             f"{', ...' if len(plain) > 3 else ''}); accepted: {'; '.join(ACCEPTED)}")
    if fmt == "zfnet_cli":
        raise UnknownWeights("one of our own checkpoints: use zfnet_cli.checkpoint.build_model")
    out: dict = {"format": fmt}
    if fmt == "torchvision_alexnet" or fmt == "pytorchcv":
        cfg, model = (torchvision_alexnet if fmt == "torchvision_alexnet" else pytorchcv_zfnet)(plain)
        out.update(format=cfg.name, model_cfg=asdict(cfg), model=model.state_dict())
    else:
        out["model_cfg"], model = torchvision_vgg(plain, fmt.split("_", 1)[1])
    num_classes = model.num_classes
    names = imagenet_categories(num_classes)
    out.update(
        num_classes=num_classes, classes=names, class_names=names,
        mean=torch.tensor(IMAGENET_MEAN).mul(255.0).view(3, 1, 1),  # 0..255 units
        input_scale=torch.tensor(IMAGENET_STD).mul(255.0).reciprocal().view(3, 1, 1),
        config={"data": asdict(IMAGENET_INPUT)})
    return out, model.eval()
