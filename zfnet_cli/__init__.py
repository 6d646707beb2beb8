"""zfnet: reproduce Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks"
(ECCV 2014, arXiv 1311.2901 v3), and use its instruments on any convnet.

The library face, for notebooks and scripts (the ``zfnet`` command is built on the same
functions)::

    import zfnet_cli as zf
    loaded = zf.load_model("resnet18.pth")          # any model: ours, torchvision, TorchScript
    seen, x = loaded.image("photo.jpg")             # the pixels it sees, its input
    maps = zf.occlude(loaded.model, x, size=56, stride=28, fill=loaded.fill())
    zf.plot_fig7(maps, seen, classes=loaded.class_names, path="fig7.png")

Each name in ``__all__`` is imported on first use, so ``import zfnet_cli`` is cheap and
loads none of the command-line machinery (typer, hydra, omegaconf) nor matplotlib.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # models: loading any model and how it reads images
    "load_model": "loading", "Loaded": "loading", "Preprocess": "loading",
    "ZFNet": "model", "ModelConfig": "model",
    # layers by name
    "Layer": "layers", "resolve_layer": "layers", "layer_names": "layers",
    "paper_names": "layers", "describe_layers": "layers", "default_layer": "layers",
    "read_layers": "layers",
    # images
    "load_image": "data.images", "PhotoFolder": "data.images", "ImageError": "data.images",
    # occlusion sensitivity (paper §4.2, Fig 7)
    "occlude": "occlusion", "OcclusionMaps": "occlusion", "occluder_positions": "occlusion",
    "resample": "occlusion", "plot_fig7": "occlusion",
    # exact incremental occlusion (Krypton, SIGMOD 2019): what occlude(method="auto") runs
    "IncrementalOcclusion": "incremental", "NotIncremental": "incremental",
    # the switch deconvnet (paper §2.1) and the top-9 scan (Fig 2)
    "Deconvnet": "deconv", "Request": "deconv", "receptive_field": "deconv",
    "scan_top9": "top9", "TopK": "top9", "gather_top9": "top9",
    # the deconvnet on any network (the paper's rules through the graph), Fig 7 (c) on any model
    "GraphDeconvnet": "deconv_graph", "deconvnet_for": "deconv_graph",
    "project_fmap": "deconv_graph", "NoRuleError": "deconv_graph", "block_names": "layers",
    # projection rules (deconvnet, guided, gradient) and the sanity numbers of a projection
    "RULES": "deconv_graph", "default_rule": "deconv_graph",
    "image_similarity": "sanity", "cascade": "sanity", "is_template": "sanity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zfnet_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"zfnet_cli.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
