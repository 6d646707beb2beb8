"""ZFNet (Zeiler & Fergus 2014, Fig 3) and its AlexNet-style variants, all of it in this file.

The network is two flat ``nn.Sequential``s whose children carry the paper's names:

    features:   conv1 relu1 pool1 norm1 | conv2 relu2 pool2 norm2 | conv3 relu3 | conv4 relu4
                | conv5 relu5 pool5
    classifier: fc6 relu6 drop6 | fc7 relu7 drop7 | fc8

Shapes for the paper's model (``ModelConfig()`` defaults, 224x224 input, Fig 3; the config
itself is :class:`zfnet_cli.schemas.ModelConfig`, beside the other configs):

    input   3 x 224 x 224
    conv1  96 x 110 x 110   7x7 stride 2 pad 1      -> pool1 (3/2, ceil) 96 x 55 x 55 -> norm1
    conv2 256 x  26 x  26   5x5 stride 2 pad 0      -> pool2 (3/2, ceil) 256 x 13 x 13 -> norm2
    conv3 384 x  13 x  13   3x3 stride 1 pad 1
    conv4 384 x  13 x  13   3x3 stride 1 pad 1
    conv5 256 x  13 x  13   3x3 stride 1 pad 1      -> pool5 (3/2, ceil) 256 x 6 x 6
    fc6  4096, fc7 4096 (ReLU, dropout 0.5), fc8 C-way (softmax in the loss)

ReLUs are separate, non-inplace modules and the max-pools are :class:`SwitchMaxPool2d`, which
can also hand back their switches, because the deconvnet needs both (paper §2.1).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from zfnet_cli.schemas import ModelConfig

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7")
# Layers Table 3 removes; conv1, conv2, conv5 and fc8 always exist.
DROPPABLE = ("conv3", "conv4", "fc6", "fc7")


class SwitchMaxPool2d(nn.MaxPool2d):
    """Max-pooling that can also return its switches (paper §2.1: the argmax location inside
    each pooling region, as flat indices into the input plane, the format of
    ``F.max_unpool2d``)."""

    def forward_with_switches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=True)


def conv_output_size(size: int, kernel: int, stride: int, padding: int = 0,
                     ceil: bool = False) -> int:
    """Output side of a conv or pool, as PyTorch computes it (ceil mode never starts a window
    inside the padding only)."""
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class ZFNet(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None, num_classes: int | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        num_classes = num_classes or cfg.num_classes or 1000
        unknown = set(cfg.drop) - set(DROPPABLE)
        if unknown:
            raise ValueError(f"model.drop: cannot drop {sorted(unknown)}; droppable: {DROPPABLE}")
        for key in ("channels", "kernels", "strides", "paddings", "pools"):
            if len(getattr(cfg, key)) != len(CONV_LAYERS):
                raise ValueError(f"model.{key} needs {len(CONV_LAYERS)} entries (conv1..conv5), "
                                 f"got {list(getattr(cfg, key))}")
        if len(cfg.fc_widths) != len(FC_LAYERS):
            raise ValueError(f"model.fc_widths needs 2 entries (fc6, fc7), got {cfg.fc_widths}")
        self.cfg, self.num_classes = cfg, num_classes

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch, size = 3, cfg.input_size
        for i, name in enumerate(CONV_LAYERS):
            if name in cfg.drop:
                continue
            n = i + 1
            layers[name] = nn.Conv2d(in_ch, cfg.channels[i], cfg.kernels[i], cfg.strides[i],
                                     cfg.paddings[i])
            layers[f"relu{n}"] = nn.ReLU(inplace=False)
            size = conv_output_size(size, cfg.kernels[i], cfg.strides[i], cfg.paddings[i])
            norm = None
            if cfg.lrn and name in cfg.lrn_layers:
                # torch divides alpha by size; Krizhevsky's alpha multiplies the plain sum.
                norm = nn.LocalResponseNorm(cfg.lrn_size, cfg.lrn_alpha * cfg.lrn_size,
                                            cfg.lrn_beta, cfg.lrn_k)
            if norm is not None and cfg.lrn_before_pool:
                layers[f"norm{n}"] = norm
            if cfg.pools[i]:
                layers[f"pool{n}"] = SwitchMaxPool2d(cfg.pool_kernel, cfg.pool_stride,
                                                     ceil_mode=cfg.pool_ceil)
                size = conv_output_size(size, cfg.pool_kernel, cfg.pool_stride, 0, cfg.pool_ceil)
            if norm is not None and not cfg.lrn_before_pool:
                layers[f"norm{n}"] = norm
            if size < 1:
                raise ValueError(f"input_size {cfg.input_size} is too small: {name} leaves "
                                 f"nothing ({size} px)")
            in_ch = cfg.channels[i]
        self.features = nn.Sequential(layers)
        self.feature_shape = (in_ch, size, size)  # (C, H, W) entering fc6

        head: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_ch * size * size
        for j, name in enumerate(FC_LAYERS):
            if name in cfg.drop:
                continue
            n = j + 6
            head[name] = nn.Linear(width, cfg.fc_widths[j])
            head[f"relu{n}"] = nn.ReLU(inplace=False)
            head[f"drop{n}"] = nn.Dropout(cfg.dropout)
            width = cfg.fc_widths[j]
        head["fc8"] = nn.Linear(width, num_classes)
        self.classifier = nn.Sequential(head)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Paper §3: weights N(0, 0.01^2), biases 0 (``init="kaiming"`` is our deviation, for the
        small CPU preset only; see configs/model/small.yaml)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.cfg.init == "normal":
                    nn.init.normal_(m.weight, 0.0, self.cfg.init_std)
                elif self.cfg.init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    raise ValueError(f"model.init must be 'normal' or 'kaiming', got {self.cfg.init!r}")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C5, 6, 6) for the paper's model
        return self.classifier(torch.flatten(x, 1))  # (B, num_classes) logits

    def layer_outputs(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Each stage's output, keyed by paper layer: conv1..conv5 after their ReLU/pool/norm,
        fc6 and fc7 after their ReLU (before dropout), fc8 the logits."""
        return stage_outputs(self.features, self.classifier, x)


def stage_outputs(features: nn.Sequential, classifier: nn.Sequential, x: torch.Tensor,
                  between: Optional[nn.Module] = None) -> "OrderedDict[str, torch.Tensor]":
    """Run ``features`` then ``classifier`` (children named with the paper's words: conv<k>,
    relu<k>, pool<k>, norm<k>, fc<k>, drop<k>) and keep each stage's last output: conv<k>
    after its ReLU / pool / norm, fc<k> after its ReLU (the logits for the last fc).
    ``between`` (e.g. VGG's average pool) runs before flattening into the classifier."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    stage = None
    for name, module in features.named_children():
        if name.startswith("conv"):
            stage = name
        x = module(x)
        out[stage] = x
    if between is not None:
        x = between(x)
    x = torch.flatten(x, 1)
    for name, module in classifier.named_children():
        x = module(x)
        if name.startswith("fc"):
            out[name] = x
        elif name.startswith("relu"):
            out[f"fc{name[4:]}"] = x
    return out


@torch.no_grad()
def renormalize_filters(model: nn.Module, max_rms: float = 0.1) -> None:
    """Paper §3: after each update, any conv filter whose RMS exceeds 0.1 is rescaled to RMS 0.1.

    A filter is one output channel's weights (in_channels x k x k); RMS over those values.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.flatten(1)  # (out_channels, in * k * k)
            rms = w.pow(2).mean(dim=1).sqrt()
            scale = (max_rms / rms).clamp(max=1.0)  # only shrink filters above the bound
            m.weight.mul_(scale.view(-1, 1, 1, 1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
