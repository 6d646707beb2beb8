"""The checkpoint file format: what ``zfnet train`` saves, written atomically and read safely.

A checkpoint is a plain dict saved with ``torch.save``:
``model`` (state dict), ``model_cfg`` (dict of :class:`~zfnet_cli.model.ModelConfig`),
``num_classes``, ``classes`` (names in label order), ``mean`` (the mean image the inputs were
centred with), ``epoch`` (epochs completed), ``optimizer``, ``scheduler``, ``rng`` (torch CPU,
CUDA and data-order generator states), ``history`` (per-epoch metrics so far), ``overrides``
(the config overrides the run was composed with), ``config`` (the resolved config, as a dict),
``class_names`` (a human name per class, or ``None``).

Where a command's checkpoint is found (``latest``, a run folder) is :mod:`zfnet_cli.runs`;
loading any model, ours or one a user brings, is :mod:`zfnet_cli.loading`. torch is imported
when a file is read or written, so the run lookup that raises :class:`CheckpointError` stays
light.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from zfnet_cli.files import write_atomic


class CheckpointError(ValueError):
    """No checkpoint where one was expected, or one that does not fit.

    :func:`zfnet_cli.load_model` raises it for a model it cannot read: a missing or damaged
    file, weights that fit no architecture, an untrusted pickle, a factory that does not
    import. The message is one line that says what to do; the CLI prints it after ``error:``.
    """


def save(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`zfnet_cli.files.write_atomic`): a
    temporary file in the same folder, then rename, so a crash never leaves a half-written
    checkpoint behind; a failed write removes its temporary file and raises one line
    (:class:`~zfnet_cli.files.WriteError`: disk full, read-only, ...), and temporaries of
    writers killed earlier in that folder are removed."""
    import torch

    return write_atomic(path, lambda f: torch.save(state, f))


def load(path: str | Path, map_location="cpu") -> dict:
    """The dict a checkpoint file holds, read with ``weights_only=True`` (tensors and plain
    containers only: a file's code is never run).

    Raises:
        CheckpointError: no such file, or a file that is not a checkpoint; one line saying
            what it is not (empty, text, a damaged archive, a pickle holding Python objects),
            never advising to load it unsafely.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated, foreign or unsafe file
        raise CheckpointError(f"{path} is not a checkpoint: {not_a_checkpoint(path, err)}") from None


def not_a_checkpoint(path: Path, err: Exception) -> str:
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


def model_config(state: dict):
    """The :class:`~zfnet_cli.model.ModelConfig` a checkpoint of ours records."""
    from zfnet_cli.model import ModelConfig

    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in state["model_cfg"].items() if k in known})


def build_model(state: dict):
    """The :class:`~zfnet_cli.model.ZFNet` a checkpoint describes, with its weights loaded."""
    from zfnet_cli.model import ZFNet

    model = ZFNet(model_config(state), num_classes=state["num_classes"])
    mismatch = weights_mismatch(model, state["model"])
    if mismatch:
        raise CheckpointError(f"checkpoint weights do not fit its architecture (model_cfg): "
                              f"{mismatch}")
    model.load_state_dict(state["model"])
    return model


def weights_mismatch(model, weights: dict, shown: int = 3) -> str:
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

