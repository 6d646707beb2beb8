"""Loading any model to look inside: ours, or one a user brings, with the preprocessing, classes
and input size it needs (:func:`load_model`, the library's main entry, and :class:`Loaded`).

The sources (:class:`ModelSource`, :func:`read_model`): one of our checkpoints
(:mod:`zfnet_cli.checkpoint`, found by :mod:`zfnet_cli.runs`); a state dict of any torchvision
classifier (recognised from its keys and shapes, see :mod:`zfnet_cli.pretrained`, or named with
``arch=``), also wrapped in ``{"model": ...}`` / ``{"state_dict": ...}``; pytorchcv's ``zfnet``
weights; a TorchScript file (occlusion only); a whole pickled model (only with
``trust_pickle=true``); ``package.module:factory`` (with ``weights=FILE``); or, from Python, an
``nn.Module``. Each comes with its preprocessing, overridable with ``preprocess.*``. Class
labels given by index, id or name: :func:`resolve_label`.
"""
from __future__ import annotations

import difflib
import importlib
import os
import pickle
import re
import sys
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator, Mapping, Optional

import numpy as np
import torch
from torch import nn

from zfnet_cli.checkpoint import CheckpointError, build_model, is_ours, not_a_checkpoint
from zfnet_cli.data.sources import DataConfig, for_model
from zfnet_cli.layers import SCRIPTED
from zfnet_cli.runs import resolve
from zfnet_cli.schemas import ModelSource, Preprocess


class SourceNote(UserWarning):
    """What a user could not know from the command line about the model that was loaded (a
    factory's own weights used, none loaded from a file): a warning from Python, one
    ``zfnet <command>: note: ...`` line from the CLI."""


_FACTORY = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def is_factory(spec) -> bool:
    """``package.module:factory`` (and not an existing file of that name)."""
    return isinstance(spec, str) and bool(_FACTORY.fullmatch(spec)) and not Path(spec).exists()


@contextmanager
def _quiet() -> Iterator[None]:
    """torch.load / torch.jit.load print FutureWarning / UserWarning text of their own (about
    ``weights_only``, TorchScript archives): our one-line errors say what matters instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``): a zip file holding compiled ``code/``."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, UnicodeDecodeError, ValueError, OSError):
        return False  # a damaged archive: torch.load names it as such


def _read_file(path: Path, trust_pickle: bool):
    """The object a ``torch.save`` file holds: tensors and plain containers only, unless
    ``trust_pickle`` (then anything: a whole model)."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file {path}")
    try:
        with _quiet():
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        # torch names the class it refused ("Unsupported global: GLOBAL pkg.Net"); any other
        # unpickling error is a damaged or foreign file
        if trust_pickle or "unsupported global" not in str(err).lower():
            raise CheckpointError(f"{path} is not a checkpoint: "
                                  f"{not_a_checkpoint(path, err)}") from None
        raise CheckpointError(
            f"{path} holds pickled Python objects (a whole model saved with torch.save(model)?), "
            f"and loading them runs code from the file: pass trust_pickle=true (--trust-pickle) "
            f"if you trust it, or save a state dict instead: torch.save(model.state_dict(), "
            f"PATH)") from None
    except Exception as err:  # a truncated or foreign file
        raise CheckpointError(f"{path} is not a checkpoint: {not_a_checkpoint(path, err)}") from None


def _factory(spec: str) -> nn.Module:
    """Import ``package.module``, call ``factory()``; the current folder is searched first,
    as ``python -m`` does."""
    module_name, attr = spec.split(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise CheckpointError(f"checkpoint={spec}: cannot import {module_name!r}: "
                              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                              f" (run from the folder that holds it or add it to PYTHONPATH)"
                              ) from None
    finally:
        sys.path.remove(os.getcwd())
    factory = getattr(module, attr, None)
    if factory is None:
        close = difflib.get_close_matches(attr, [n for n in dir(module) if not n.startswith("_")],
                                          n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CheckpointError(f"checkpoint={spec}: module {module_name!r} has no {attr!r}{hint}")
    if not callable(factory):
        raise CheckpointError(f"checkpoint={spec}: {attr!r} is a {type(factory).__name__}, not "
                              f"a function or class that returns the model")
    try:
        model = factory()
    except Exception as err:
        raise CheckpointError(f"checkpoint={spec}: {attr}() raised {type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"checkpoint={spec}: {attr}() returned a {type(model).__name__}, "
                              f"not an nn.Module")
    return model


def _load_weights(model: nn.Module, path: str | Path, what: str) -> None:
    from zfnet_cli import pretrained

    state = _read_file(Path(path), trust_pickle=False)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"weights={path}: not a state dict ({type(state).__name__})")
    state = pretrained.unwrap(state)
    result = model.load_state_dict(state, strict=False)
    expected = model.state_dict()
    fit = pretrained._compare(what, expected, state, 0)
    if result.missing_keys or result.unexpected_keys or fit.mismatched:
        raise CheckpointError(f"weights={path} do not fit {what}: {fit.differences()}")


def _outputs(model: nn.Module, size: int) -> int:
    """The number of classes: the width of the logits for one zero image."""
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"the model maps a (1, 3, {size}, {size}) image to {got}, not "
                              f"(1, classes) logits")
    return int(out.shape[1])


def _module_state(model: nn.Module, fmt: str, kind: str) -> dict:
    """The checkpoint-like state of a whole module (TorchScript, pickled, factory, in memory):
    ImageNet preprocessing (UNSTATED by such files: override with ``preprocess.*``)."""
    from zfnet_cli import pretrained

    pre = pretrained.IMAGENET_PREPROCESSING
    model.eval()
    return pretrained.foreign_state(fmt, _outputs(model, pre["crop"]), pre, source=kind)


def read_model(spec: str | Path | nn.Module, *, arch: Optional[str] = None,
               weights: Optional[str | Path] = None, trust_pickle: bool = False
               ) -> tuple[dict, nn.Module]:
    """``(state, model)`` for a model a user brings (the sources: :class:`ModelSource`); the
    model is on the CPU, in eval mode.

    ``state`` is a checkpoint-like dict: ours as saved, else (:func:`zfnet_cli.pretrained.
    foreign_state`) ``format``, ``source`` (``"torchvision"``, ``"converted"``,
    ``"torchscript"``, ``"pickle"``, ``"factory"``, ``"module"``), ``model_cfg["input_size"]``,
    ``num_classes``, ``classes``, ``class_names``, ``mean``, ``input_scale``, ``config["data"]``.

    Raises:
        CheckpointError: one line: an unreadable file, an untrusted pickled model, weights
            that fit no architecture (the nearest named, with the keys that differ), a factory
            that does not import or is not callable.
    """
    from zfnet_cli import pretrained

    if isinstance(spec, nn.Module):
        return _module_state(spec, type(spec).__name__, "module"), spec.eval()
    if is_factory(str(spec)):
        model = _factory(str(spec))
        if weights is not None:
            _load_weights(model, weights, str(spec))
        else:
            factory = str(spec).split(":")[1]
            warnings.warn(SourceNote(f"checkpoint={spec} without weights=: the model keeps "
                                     f"the weights {factory}() gives it (random unless it "
                                     f"loads some); weights=FILE (--weights) loads a state "
                                     f"dict into it"), stacklevel=2)
        return _module_state(model, str(spec), "factory"), model.eval()
    if weights is not None:
        raise CheckpointError(f"weights={weights} goes with checkpoint=package.module:factory; "
                              f"a state dict file is itself the checkpoint (checkpoint=FILE)")
    path = Path(spec)
    if path.is_file() and _is_torchscript(path):
        try:
            with _quiet():
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise CheckpointError(f"cannot read TorchScript file {path}: "
                                  f"{str(err).splitlines()[0]}") from None
        return _module_state(model, "torchscript", "torchscript"), model.eval()
    state = _read_file(path, trust_pickle)
    if isinstance(state, Mapping) and not is_ours(state):
        inner = next((state[w] for w in pretrained.WRAPPERS if w in state), None)
        if isinstance(inner, nn.Module):  # {"model": model, "epoch": ...} pickled whole
            state = inner
    if isinstance(state, nn.Module):
        return _module_state(state, type(state).__name__, "pickle"), state.eval()
    if is_ours(state) and arch is None:
        return state, build_model(state).eval()
    try:
        out, model = pretrained.load_foreign(state, arch=arch, hint=path.name)
    except pretrained.UnknownWeights as err:
        raise CheckpointError(f"{path}: {err}") from None
    except RuntimeError as err:  # keys of a known format, shapes that do not fit it
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit their architecture: {first}") from None
    out["source"] = "converted" if "model" in out else "torchvision"
    return out, model


class ChannelScale:
    """:class:`~zfnet_cli.data.transforms.BatchPreprocess`, then a per-channel scale: the
    division by torchvision's per-channel std that foreign weights expect (``BatchPreprocess``
    takes one scale for all channels). Attributes other than the scale are ``pre``'s."""

    def __init__(self, pre, scale: torch.Tensor) -> None:
        self.pre, self.channel_scale = pre, scale.detach().to(torch.float32).view(3, 1, 1)

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                 draws=None):
        # draws: InMemoryBatches hands BatchPreprocess's pre-drawn crops to any preprocess
        # that has .draw (this one, through __getattr__)
        x = self.pre(images, generator, draws=draws)
        return x * self.channel_scale.to(x.device)  # (B, 3, c, c) * (3, 1, 1)

    def __getattr__(self, name):
        return getattr(self.pre, name)


@dataclass
class Loaded:
    """A model ready to look inside, and how it reads images.

    Attributes:
        state (dict): the checkpoint (ours) or a checkpoint-like record (see :func:`read_model`).
        model (nn.Module): in eval mode on the device asked for.
        data (DataConfig): the data it was trained on (ours) or how it reads images
            (``image_size``: the short side images are resized to; ``crop``).
        mean (Tensor): (3, S, S) or (3, 1, 1) subtracted from 0..255 pixels.
        input_size (int): side of the square input the model sees.
        source (Path or str): the file, or the ``module:factory`` / module type it came from.
        deconv: the switch deconvnet of ``model``, built on first use (a property); a
            ValueError of one line where none applies (TorchScript).
    """

    state: dict
    model: torch.nn.Module
    data: DataConfig
    mean: torch.Tensor
    input_size: int
    source: Path | str
    _deconv: Optional[object] = field(default=None, repr=False)  # Deconvnet / GraphDeconvnet

    @property
    def kind(self) -> str:
        """Where the model came from: ``"zfnet"`` (ours), ``"converted"`` (alexnet / pytorchcv
        as our ZFNet), ``"torchvision"``, ``"torchscript"``, ``"pickle"``, ``"factory"`` or
        ``"module"`` (an ``nn.Module`` given in Python)."""
        return self.state.get("source", "zfnet")

    @property
    def num_classes(self) -> int:
        """The width of the model's logits."""
        return int(self.state["num_classes"])

    @property
    def name(self) -> str:
        """The architecture's name (``"torchvision_resnet18"``, ``"zfnet"``)."""
        return str(self.state.get("model_cfg", {}).get("name") or self.state.get("format")
                   or self.kind)

    @property
    def deconv(self):
        """The deconvnet over :attr:`model`, built on first use: the paper's explicit switch
        :class:`~zfnet_cli.deconv.Deconvnet` on plain stacks, else the same rules through the
        network's graph (:class:`~zfnet_cli.deconv_graph.GraphDeconvnet`); see
        :func:`~zfnet_cli.deconv_graph.deconvnet_for`.

        Raises:
            ValueError: one line, where no deconvnet applies: a TorchScript model (its modules
                are compiled code the deconvnet cannot go through).
        """
        if self._deconv is None:
            if self.kind == "torchscript":
                raise ValueError(f"{self.source} is a TorchScript model: it supports occlusion "
                                 f"only, no deconvnet: {SCRIPTED}")
            from zfnet_cli.deconv_graph import deconvnet_for

            self._deconv = deconvnet_for(self.model)
        return self._deconv

    @property
    def deconv_unavailable(self) -> Optional[str]:
        """Why :attr:`deconv` cannot be built (its one-line error), or ``None`` if it can."""
        try:
            self.deconv
        except ValueError as err:
            return str(err)
        return None

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

    def image(self, picture) -> tuple[torch.Tensor, torch.Tensor]:
        """A photo as this model reads it, in any usual form.

        A file is decoded with :func:`~zfnet_cli.data.images.load_image` (EXIF orientation,
        alpha over grey); a PIL image is taken upright as it is (alpha over grey); an array or
        tensor is RGB pixels. Each then has its short side resized to ``data.image_size`` and
        the centre square kept, and goes through :meth:`preprocess` (the centre ``input_size``
        crop, minus the mean, times the scale).

        Args:
            picture: an image file (str or Path, any format PIL reads); a PIL image; a uint8
                (H, W, 3) or (H, W) array; or a (3, H, W) tensor, uint8 0..255 or float 0..1.

        Returns:
            tuple[Tensor, Tensor]: the uint8 (3, c, c) pixels the model sees (the region that
            occlusion slides over; ``c = input_size``) and the float (3, c, c) model input, on
            the CPU.

        Raises:
            ImageError: one line, for a file that is not a readable image.
            ValueError: an array or tensor of another shape or type (one line).
        """
        from zfnet_cli.data.images import load_image, resize_center_crop, to_rgb, to_tensor
        from zfnet_cli.data.transforms import center_crop

        size = self.data.image_size
        if isinstance(picture, (str, Path)):
            raw = load_image(picture, size)  # (3, S, S) uint8
        else:
            from PIL import Image

            if isinstance(picture, torch.Tensor):
                t = picture.detach().cpu()
                if t.dim() != 3 or t.shape[0] != 3:
                    raise ValueError(f"an image tensor is (3, H, W), got {tuple(t.shape)}")
                if t.is_floating_point():
                    t = (t.clamp(0, 1) * 255).round()
                picture = t.to(torch.uint8).permute(1, 2, 0).numpy()
            if isinstance(picture, np.ndarray):
                if picture.dtype != np.uint8 or picture.ndim not in (2, 3) or (
                        picture.ndim == 3 and picture.shape[2] not in (3, 4)):
                    raise ValueError(f"an image array is uint8 (H, W, 3), (H, W, 4) or (H, W), "
                                     f"got {picture.dtype} {picture.shape}")
                picture = Image.fromarray(picture)
            if not isinstance(picture, Image.Image):
                raise ValueError(f"an image is a file path, a PIL image, an array or a tensor, "
                                 f"not a {type(picture).__name__}")
            raw = to_tensor(resize_center_crop(to_rgb(picture), size))
        return center_crop(raw, self.input_size), self.preprocess()(raw[None])[0]

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


def load_model(spec: str | Path | nn.Module = "latest", *, arch: Optional[str] = None,
               weights: Optional[str | Path] = None, trust_pickle: bool = False,
               preprocess: Optional[Preprocess] = None, device: str | torch.device = "cpu",
               output_root: str | Path = "outputs", data: Optional[DataConfig] = None) -> Loaded:
    """A model to look inside, with the preprocessing, classes and input size it needs.

    Args:
        spec (str, Path or nn.Module): one of our checkpoints (a ``.pt`` file, a
            ``zfnet train`` run folder, ``"latest"``: the newest under ``output_root``); a state
            dict file of a torchvision classifier (also wrapped in ``{"model": ...}`` /
            ``{"state_dict": ...}``, or with ``module.`` prefixes); a TorchScript file; a
            pickled whole model (with ``trust_pickle``); ``"package.module:factory"``; or an
            ``nn.Module`` (ImageNet preprocessing). Default: ``"latest"``.
        arch (str, optional): the torchvision architecture of a state dict (``"resnet18"``);
            ``None``: recognised from its keys and shapes.
        weights (str or Path, optional): a state dict file to load into a factory's model.
        trust_pickle (bool): allow a whole pickled model; unpickling runs code from the file.
            Default: ``False``.
        preprocess (Preprocess, optional): overrides of mean / std / input_size / resize.
        device (str or torch.device): where the model goes. Default: ``"cpu"``.
        output_root (str or Path): where ``"latest"`` looks. Default: ``"outputs"``.
        data (DataConfig, optional): the data set to read images from instead of the model's.

    Returns:
        Loaded: ``.model`` (eval mode, on ``device``), ``.preprocess()`` (uint8 images ->
        model inputs), ``.classes`` / ``.class_names``, ``.input_size``, ``.data``
        (``image_size``: the short side images are resized to), ``.kind``, ``.deconv`` (lazy).

    Raises:
        CheckpointError: the model cannot be read (one line, see :func:`read_model`).
        ValueError: a bad preprocessing override.

    Example:
        >>> import torchvision
        >>> loaded = load_model(torchvision.models.resnet18())
        >>> loaded.input_size, loaded.kind, len(loaded.classes)
        (224, 'module', 1000)
    """
    if isinstance(spec, nn.Module):
        path: Path | str = type(spec).__name__
        state, model = read_model(spec)
    else:
        path = str(spec) if is_factory(str(spec)) else resolve(spec, output_root, "train")
        state, model = read_model(path, arch=arch, weights=weights, trust_pickle=trust_pickle)
    model = model.to(device).eval()
    known = {f.name for f in fields(DataConfig)}
    data_cfg = for_model(data, DataConfig(**{k: v for k, v in state["config"]["data"].items()
                                             if k in known}))
    apply_preprocess(state, data_cfg, preprocess or Preprocess())
    _name_classes(state, data_cfg)
    return Loaded(state, model, data_cfg, state["mean"], state["model_cfg"]["input_size"], path)


def apply_preprocess(state: dict, data: DataConfig, pre: Preprocess) -> None:
    """Apply ``preprocess.*`` overrides to a model's state and data config (in place).

    Raises:
        ValueError: a mean or std without 3 values, a std <= 0, an input larger than the
            resized image.
    """
    for key, values in (("mean", pre.mean), ("std", pre.std)):
        if values is not None and (len(values) != 3 or (key == "std" and min(values) <= 0)):
            raise ValueError(f"preprocess.{key} needs 3 values (R, G, B of 0..1 pixels"
                             f"{', each > 0' if key == 'std' else ''}), got {list(values)}")
    if pre.mean is not None:
        state["mean"] = torch.tensor(pre.mean, dtype=torch.float32).mul(255.0).view(3, 1, 1)
    if pre.std is not None:
        std = torch.tensor(pre.std, dtype=torch.float32).mul(255.0)  # 0..255 units
        state["input_scale"] = std.reciprocal().view(3, 1, 1)
    if pre.input_size is not None:
        state["model_cfg"] = {**state["model_cfg"], "input_size": int(pre.input_size)}
        data.crop = int(pre.input_size)
        if pre.resize is None:  # the centre 224 of 256, as torchvision's evaluation transforms
            data.image_size = round(pre.input_size / 0.875)
    if pre.resize is not None:
        data.image_size = int(pre.resize)
    size = state["model_cfg"]["input_size"]
    if min(size, data.image_size) < 1 or size > data.image_size:
        raise ValueError(f"preprocess.input_size={size} must be at least 1 and at most the "
                         f"resized image's side (preprocess.resize={data.image_size})")


def load_trained(spec: str, output_root: str, device: torch.device,
                 data: Optional[DataConfig] = None, source: Optional[ModelSource] = None) -> Loaded:
    """:func:`load_model` for a command: ``spec`` is its ``checkpoint``, ``source`` its config
    (a :class:`ModelSource`: ``arch``, ``weights``, ``trust_pickle``, ``preprocess``)."""
    source = source or ModelSource()
    return load_model(spec, arch=source.arch, weights=source.weights,
                      trust_pickle=source.trust_pickle, preprocess=source.preprocess,
                      device=device, output_root=output_root, data=data)


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
