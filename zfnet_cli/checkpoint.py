"""Checkpoints: atomic save, load, and finding the one a command means.

A checkpoint is a plain dict saved with ``torch.save``:
``model`` (state dict), ``model_cfg`` (dict of :class:`~zfnet_cli.model.ModelConfig`),
``num_classes``, ``classes`` (names in label order), ``mean`` (the mean image the inputs were
centred with), ``epoch`` (epochs completed), ``optimizer``, ``scheduler``, ``rng`` (torch CPU,
CUDA and data-order generator states), ``history`` (per-epoch metrics so far), ``overrides``
(the config overrides the run was composed with), ``config`` (the resolved config, as a dict).
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import torch

from zfnet_cli.data.sources import DataConfig
from zfnet_cli.deconv import Deconvnet
from zfnet_cli.model import ModelConfig, ZFNet


class CheckpointError(ValueError):
    """No checkpoint where one was expected, or one that does not fit."""


def save(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename,
    so a crash never leaves a half-written checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None


def resolve(spec: str | Path, output_root: str | Path = "outputs", command: str = "train") -> Path:
    """A checkpoint file from ``spec``: a ``.pt`` file, a run folder (its ``checkpoints/last.pt``)
    or ``latest`` (the newest ``<output_root>/<command>`` run)."""
    if str(spec) == "latest":
        run = Path(output_root) / command / "latest"
        if not run.exists():
            raise CheckpointError(f"no {command} run under {Path(output_root) / command}: run "
                                  f"`zfnet {command}` first or pass checkpoint=PATH")
        spec = run.resolve()
    path = Path(spec)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def model_config(state: dict) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in state["model_cfg"].items() if k in known})


def build_model(state: dict) -> ZFNet:
    """The model a checkpoint describes, with its weights loaded."""
    model = ZFNet(model_config(state), num_classes=state["num_classes"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not fit its architecture: {first}") from None
    return model


@dataclass
class Loaded:
    """A trained model ready for the deconvnet, and what it was trained on."""

    state: dict
    model: torch.nn.Module
    deconv: Deconvnet
    data: DataConfig
    mean: torch.Tensor
    input_size: int
    source: Path

    @property
    def scale(self) -> float:
        """The input scale the model was trained with (``data.scale``)."""
        return float(self.state["config"]["data"].get("scale", 1.0))

    def preprocess(self):
        """Evaluation preprocessing exactly as in training: centre crop, minus the training mean
        image, times the training input scale."""
        from zfnet_cli.data.transforms import BatchPreprocess

        return BatchPreprocess(self.mean, self.input_size, train=False, scale=self.scale)

    def fill(self) -> torch.Tensor:
        """The data set's mean colour (the paper's grey occluder) in model-input units, (3, c, c):
        a uniform mean-colour image put through :meth:`preprocess`."""
        colour = self.mean.mean(dim=(1, 2)).round().clamp(0, 255).to(torch.uint8)
        side = self.mean.shape[-1] if self.mean.shape[-1] > 1 else self.input_size
        image = colour.view(1, 3, 1, 1).expand(1, 3, side, side).contiguous()
        return self.preprocess()(image)[0]


def load_trained(spec: str, output_root: str, device: torch.device,
                 data: Optional[DataConfig] = None) -> Loaded:
    """The model ``spec`` names (see :func:`resolve`), in eval mode on ``device``, wrapped for
    the deconvnet, with the data config it was trained on (or ``data``)."""
    path = resolve(spec, output_root, "train")
    state = load(path)
    model = build_model(state).to(device).eval()
    data_cfg = data or DataConfig(**state["config"]["data"])
    return Loaded(state, model, Deconvnet(model), data_cfg, state["mean"],
                  state["model_cfg"]["input_size"], path)


def resolve_label(label: Optional[str], classes: list[str]) -> Optional[int]:
    """``label`` as a class index: an integer in range, or a class name (one-line errors)."""
    if label is None:
        return None
    text = str(label).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(classes):
            raise ValueError(f"label {i} out of range: the model has {len(classes)} classes "
                             f"(0..{len(classes) - 1})")
        return i
    if text in classes:
        return classes.index(text)
    close = difflib.get_close_matches(text, classes, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else \
        f"; classes: {', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}"
    raise ValueError(f"unknown class '{text}'{hint}")
