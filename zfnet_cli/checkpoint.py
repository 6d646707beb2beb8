"""Checkpoints: atomic save, load, and finding the one a command means.

A checkpoint is a plain dict saved with ``torch.save``:
``model`` (state dict), ``model_cfg`` (dict of :class:`~zfnet_cli.model.ModelConfig`),
``num_classes``, ``classes`` (names in label order), ``mean`` (the mean image the inputs were
centred with), ``epoch`` (epochs completed), ``optimizer``, ``scheduler``, ``rng`` (torch CPU,
CUDA and data-order generator states), ``history`` (per-epoch metrics so far), ``overrides``
(the config overrides the run was composed with), ``config`` (the resolved config, as a dict),
``class_names`` (a human name per class, or ``None``).

Commands that look inside a trained model (:func:`load_trained`) also take weights trained
elsewhere: a torchvision ``alexnet`` / ``vgg`` state dict or pytorchcv's ``zfnet`` weights,
told apart by their keys (see :mod:`zfnet_cli.pretrained`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from zfnet_cli.data.sources import DataConfig
from zfnet_cli.deconv import Deconvnet
from zfnet_cli.files import write_atomic
from zfnet_cli.model import ModelConfig, ZFNet


class CheckpointError(ValueError):
    """No checkpoint where one was expected, or one that does not fit."""


def save(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`zfnet_cli.files.write_atomic`): a
    temporary file in the same folder, then rename, so a crash never leaves a half-written
    checkpoint behind; a failed write removes its temporary file and raises one line
    (:class:`~zfnet_cli.files.WriteError`: disk full, read-only, ...), and temporaries of
    writers killed earlier in that folder are removed."""
    return write_atomic(path, lambda f: torch.save(state, f))


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict a checkpoint file holds, read with ``weights_only=True`` (tensors and plain
    containers only: a file's code is never run).

    Raises:
        CheckpointError: no such file, or a file that is not a checkpoint; one line saying
            what it is not (empty, text, a damaged archive, a pickle holding Python objects),
            never advising to load it unsafely.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated, foreign or unsafe file
        raise CheckpointError(f"{path} is not a checkpoint: {_not_a_checkpoint(path, err)}") from None


def _not_a_checkpoint(path: Path, err: Exception) -> str:
    """What a file torch.load refused is, in a few words (torch's own message would advise
    weights_only=False, i.e. running the file's code)."""
    import pickle
    import zipfile

    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        return "a damaged or truncated torch.save archive (an interrupted copy?)"
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err).lower() \
                or "Unsupported global" in str(err):
            return ("it holds Python objects other than tensors and plain containers, which "
                    "are refused without running their code; a checkpoint of ours or a state "
                    "dict holds only tensors")
        return "a damaged torch.save archive"
    try:
        head.decode("utf-8")
        return "a text file, not one written by torch.save"
    except UnicodeDecodeError:
        return "neither a torch.save archive nor a pickle of tensors"


def _run_order(p: Path) -> tuple:
    """Run folders ``YYYY-MM-DD_HH-MM-SS[_N]`` in creation order (``_10`` after ``_9``)."""
    date, _, rest = p.name.partition("_")
    time, _, n = rest.partition("_")
    return date, time, int(n) if n.isdigit() else 0


def run_folders(base: str | Path) -> list[Path]:
    """The run folders of one command (``<output_root>/<command>``), oldest first: every
    sub-folder but the ``latest`` link and hidden temporaries; none when ``base`` is missing."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted((p for p in base.iterdir() if p.is_dir() and not p.is_symlink()
                   and not p.name.startswith(".")), key=_run_order)


def resolve(spec: str | Path, output_root: str | Path = "outputs", command: str = "train",
            exclude: Optional[Path] = None, *, finished: bool = True,
            key: str = "checkpoint") -> Path:
    """A checkpoint file from ``spec``: a ``.pt`` / ``.pth`` file, a run folder (its
    ``checkpoints/last.pt``) or ``latest``.

    ``latest`` is the newest ``<output_root>/<command>`` run that holds a checkpoint and, with
    ``finished`` (the default: commands that use a trained model), has finished: it wrote its
    ``metrics.json`` at the end. A run still training (or killed) is passed over, so that a
    figure never shows a half-trained model by accident; name its folder to use it anyway.
    ``zfnet train resume=latest`` passes ``finished=False``: the newest run with a checkpoint,
    interrupted or not. Runs without a checkpoint (evaluation-only runs, one that failed
    early) and the folder ``exclude`` are always passed over.

    Raises:
        CheckpointError: nothing there (one line naming ``key``, the option to set).
    """
    if str(spec) == "latest":
        base = Path(output_root) / command
        runs = [p for p in run_folders(base)
                if (exclude is None or p.resolve() != Path(exclude).resolve())
                and (p / "checkpoints" / "last.pt").is_file()]
        done = [p for p in runs if (p / "metrics.json").is_file()] if finished else runs
        if not done:
            if runs:
                raise CheckpointError(f"no finished {command} run under {base}: the newest, "
                                      f"{runs[-1].name}, is still training or was interrupted; "
                                      f"name it to use it ({key}={runs[-1]}) or let it finish")
            raise CheckpointError(f"no {command} run with a checkpoint under {base}: run "
                                  f"`zfnet {command}` first or pass {key}=PATH")
        spec = done[-1]
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
    mismatch = weights_mismatch(model, state["model"])
    if mismatch:
        raise CheckpointError(f"checkpoint weights do not fit its architecture (model_cfg): "
                              f"{mismatch}")
    model.load_state_dict(state["model"])
    return model


def weights_mismatch(model: nn.Module, weights: dict, shown: int = 3) -> str:
    """How ``weights`` (a state dict) differ from ``model``'s own, in one line: keys missing
    from the file, unexpected keys, and shapes that differ (``shown`` of each, then a count);
    ``""`` when they fit. torch's own message lists them on many lines after
    "Error(s) in loading state_dict for ZFNet:"."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [f"{k}: {tuple(weights[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in weights and hasattr(weights[k], "shape")
              and tuple(weights[k].shape) != tuple(own[k].shape)]

    def part(items: list[str], what: str) -> str:
        more = f" and {len(items) - shown} more" if len(items) > shown else ""
        return f"{len(items)} {what} ({'; '.join(items[:shown])}{more})"
    parts = [part(shapes, "shape(s) differ"), part(missing, "key(s) missing from the file"),
             part(extra, "unexpected key(s) in the file")]
    return ", ".join(p for p, items in zip(parts, (shapes, missing, extra)) if items)


def is_ours(state) -> bool:
    """A checkpoint written by ``zfnet train`` (not a foreign state dict)."""
    return isinstance(state, dict) and "model" in state and "model_cfg" in state


def load_model(path: str | Path) -> tuple[dict, nn.Module]:
    """``(state, model)`` from a checkpoint file: one of ours (:func:`build_model`), or a
    foreign state dict turned into a checkpoint-like state and its model
    (:func:`zfnet_cli.pretrained.load_foreign`: torchvision alexnet / vgg, pytorchcv zfnet).

    Raises:
        CheckpointError: an unreadable file, or weights that fit no known format (one line,
            naming the formats accepted).
    """
    state = load(path)
    if is_ours(state):
        return state, build_model(state)
    from zfnet_cli import pretrained

    try:
        return pretrained.load_foreign(state)
    except pretrained.UnknownWeights as err:
        raise CheckpointError(f"{path}: {err}") from None
    except RuntimeError as err:  # keys of a known format, shapes that do not fit it
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit their architecture: {first}") from None


class ChannelScale:
    """:class:`~zfnet_cli.data.transforms.BatchPreprocess`, then a per-channel scale: the
    division by torchvision's per-channel std that foreign weights expect (``BatchPreprocess``
    takes one scale for all channels). Attributes other than the scale are ``pre``'s."""

    def __init__(self, pre, scale: torch.Tensor) -> None:
        self.pre, self.channel_scale = pre, scale.detach().to(torch.float32).view(3, 1, 1)

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator] = None):
        x = self.pre(images, generator)
        return x * self.channel_scale.to(x.device)  # (B, 3, c, c) * (3, 1, 1)

    def __getattr__(self, name):
        return getattr(self.pre, name)


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
    def scale(self) -> float | torch.Tensor:
        """The input scale the model was trained with (``data.scale``), or for foreign weights
        a per-channel (3, 1, 1) scale (``state["input_scale"]``: 1 / (255 x torchvision's std))."""
        if self.state.get("input_scale") is not None:
            return self.state["input_scale"]
        return float(self.state["config"]["data"].get("scale", 1.0))

    @property
    def classes(self) -> list[str]:
        """Class ids in label order (wnids for ImageNet; names where there are no ids)."""
        return list(self.state["classes"])

    @property
    def class_names(self) -> list[str]:
        """The human name of each class (``"tench"`` for ``n01440764``): the checkpoint's
        ``class_names``, else the ids themselves. Figures show these."""
        return list(self.state.get("class_names") or self.state["classes"])

    def preprocess(self):
        """Evaluation preprocessing exactly as in training: centre crop, minus the training mean
        image, times the training input scale (per channel for foreign weights)."""
        from zfnet_cli.data.transforms import BatchPreprocess

        scale = self.scale
        if isinstance(scale, torch.Tensor):
            return ChannelScale(BatchPreprocess(self.mean, self.input_size, train=False), scale)
        return BatchPreprocess(self.mean, self.input_size, train=False, scale=scale)

    def label_of(self, dataset, label: int) -> Optional[int]:
        """The model's class index for ``label`` of ``dataset``: the same index when the data
        set has the model's classes (or as many: ImageNet in its standard order), else the
        index of the same class id (wnid), else ``None`` (not a class of the model)."""
        ids = list(getattr(dataset, "classes", []))
        if not ids or ids == self.classes or len(ids) == len(self.classes):
            return int(label)
        return self.classes.index(ids[label]) if ids[label] in self.classes else None

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
    state, model = load_model(path)
    model = model.to(device).eval()
    known = {f.name for f in fields(DataConfig)}
    data_cfg = data or DataConfig(**{k: v for k, v in state["config"]["data"].items() if k in known})
    _name_classes(state, data_cfg)
    return Loaded(state, model, Deconvnet(model), data_cfg, state["mean"],
                  state["model_cfg"]["input_size"], path)


def _name_classes(state: dict, data: DataConfig) -> None:
    """Fill in class ids and names from an ImageNet root's ``meta.bin`` / devkit when the
    checkpoint lacks them: wnids for foreign weights (which carry names only), human names for
    our checkpoints trained before ``class_names`` was recorded."""
    if data.name != "imagenet" or not data.root or not Path(data.root).is_dir():
        return
    from zfnet_cli.data.imagenet import read_meta

    meta = read_meta(data.root)
    if meta is None:
        return
    foreign = state.get("format") is not None  # set by pretrained.load_foreign
    if foreign and len(meta.wnid_to_classes) == state["num_classes"]:
        state["classes"] = sorted(meta.wnid_to_classes)  # ILSVRC's sorted-wnid label order
    if not state.get("class_names"):
        state["class_names"] = [meta.name(c) for c in state["classes"]]


def resolve_label(label: Optional[str], classes: list[str],
                  names: Optional[list[str]] = None) -> Optional[int]:
    """``label`` as a class index: an integer in range, a class id (``n02112018``) or a human
    class name from ``names`` (``Pomeranian``; case-insensitive; the first class of that name
    where two share it). One-line errors with close matches."""
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
    lowered = [n.lower() for n in names or []]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if names:
        classes = list(dict.fromkeys(list(names) + list(classes)))  # suggest names first
    close = difflib.get_close_matches(text, classes, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else \
        f"; classes: {', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}"
    raise ValueError(f"unknown class '{text}'{hint}")
