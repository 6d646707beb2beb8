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
loads none of the command-line machinery (typer, hydra, omegaconf) nor matplotlib. Type
checkers and editors read the same names from the ``TYPE_CHECKING`` imports below, which
mirror the table (``tests/test_api.py`` checks that they agree).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # models: loading any model and how it reads images
    "load_model": "loading", "Loaded": "loading", "Preprocess": "schemas",
    "CheckpointError": "checkpoint", "SourceNote": "loading",
    "ZFNet": "model", "ModelConfig": "schemas",
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
    "scan_top9": "top9", "TopK": "top9", "gather_top9": "top9", "plot_fig2": "fig2",
    # the deconvnet on any network (the paper's rules through the graph), Fig 7 (c) on any model
    "GraphDeconvnet": "deconv_graph", "deconvnet_for": "deconv_graph",
    "project_fmap": "deconv_graph", "NoRuleError": "deconv_graph", "block_names": "layers",
    # projection rules (deconvnet, guided, gradient) and the sanity numbers of a projection
    "RULES": "deconv_graph", "default_rule": "deconv_graph",
    "image_similarity": "sanity", "cascade": "sanity", "is_template": "sanity",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what the lazy table gives, spelled out for type checkers and "go to definition"
    from zfnet_cli.checkpoint import CheckpointError as CheckpointError
    from zfnet_cli.data.images import ImageError as ImageError
    from zfnet_cli.data.images import PhotoFolder as PhotoFolder
    from zfnet_cli.data.images import load_image as load_image
    from zfnet_cli.deconv import Deconvnet as Deconvnet
    from zfnet_cli.deconv import Request as Request
    from zfnet_cli.deconv import receptive_field as receptive_field
    from zfnet_cli.deconv_graph import RULES as RULES
    from zfnet_cli.deconv_graph import GraphDeconvnet as GraphDeconvnet
    from zfnet_cli.deconv_graph import NoRuleError as NoRuleError
    from zfnet_cli.deconv_graph import deconvnet_for as deconvnet_for
    from zfnet_cli.deconv_graph import default_rule as default_rule
    from zfnet_cli.deconv_graph import project_fmap as project_fmap
    from zfnet_cli.fig2 import plot_fig2 as plot_fig2
    from zfnet_cli.incremental import IncrementalOcclusion as IncrementalOcclusion
    from zfnet_cli.incremental import NotIncremental as NotIncremental
    from zfnet_cli.layers import Layer as Layer
    from zfnet_cli.layers import block_names as block_names
    from zfnet_cli.layers import default_layer as default_layer
    from zfnet_cli.layers import describe_layers as describe_layers
    from zfnet_cli.layers import layer_names as layer_names
    from zfnet_cli.layers import paper_names as paper_names
    from zfnet_cli.layers import read_layers as read_layers
    from zfnet_cli.layers import resolve_layer as resolve_layer
    from zfnet_cli.loading import Loaded as Loaded
    from zfnet_cli.loading import SourceNote as SourceNote
    from zfnet_cli.loading import load_model as load_model
    from zfnet_cli.model import ZFNet as ZFNet
    from zfnet_cli.occlusion import OcclusionMaps as OcclusionMaps
    from zfnet_cli.occlusion import occlude as occlude
    from zfnet_cli.occlusion import occluder_positions as occluder_positions
    from zfnet_cli.occlusion import plot_fig7 as plot_fig7
    from zfnet_cli.occlusion import resample as resample
    from zfnet_cli.sanity import cascade as cascade
    from zfnet_cli.sanity import image_similarity as image_similarity
    from zfnet_cli.sanity import is_template as is_template
    from zfnet_cli.schemas import ModelConfig as ModelConfig
    from zfnet_cli.schemas import Preprocess as Preprocess
    from zfnet_cli.top9 import TopK as TopK
    from zfnet_cli.top9 import gather_top9 as gather_top9
    from zfnet_cli.top9 import scan_top9 as scan_top9


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zfnet_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"zfnet_cli.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
