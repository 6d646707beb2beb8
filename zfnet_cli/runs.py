"""Run folders: where each command's results go, and finding them again.

Every run of a command gets a new folder ``<output_root>/<command>/<YYYY-MM-DD_HH-MM-SS>[_N]``
with ``latest`` pointing at it (:func:`new_run_dir`); a run that failed on bad input and made
nothing is removed again (:func:`discard_run_dir`). :func:`run_folders` lists one command's runs
oldest first, :func:`finished_runs` those that wrote their ``metrics.json`` at the end, and
:func:`resolve` finds the checkpoint a ``checkpoint=`` / ``resume=`` value means (``latest``: the
newest finished ``train`` run, never one still writing). The config layer describes each run in
its folder (``config.yaml``, ``command.txt``, ``run.json``: :func:`zfnet_cli.config.describe_run`).

No torch here: the command line finds and makes folders before it loads a model.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Optional

from zfnet_cli.checkpoint import CheckpointError
from zfnet_cli.files import WriteError, describe, write_atomic

# What describe_run writes into every run folder before the run produces anything.
DESCRIPTION = {"config.yaml", "command.txt", "run.json", "figures"}


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


def finished_runs(base: str | Path) -> list[Path]:
    """The runs of one command that finished (wrote ``metrics.json`` at the end), oldest
    first: what a report or a claim reads (a run still writing, or killed, has none)."""
    return [p for p in run_folders(base) if (p / "metrics.json").is_file()]


def point_latest(base: Path, name: Optional[str]) -> None:
    """Point ``<base>/latest`` at the run folder ``name`` (atomically: a new link renamed over
    the old one), or remove it (``None``)."""
    link = base / "latest"
    if name is None:
        if link.is_symlink():
            link.unlink()
        return
    tmp = base / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(name, tmp)
    os.replace(tmp, link)


def new_run_dir(root: Path, command: str, now: _dt.datetime | None = None) -> Path:
    """A new, empty ``<root>/<command>/<date_time>[_N]`` folder, ``latest`` pointing at it.

    Raises:
        WriteError: the output root cannot be written (read-only, full, no permission): one line.
    """
    try:
        return _new_run_dir(Path(root), command, now)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(describe(err, err.filename or Path(root) / command)) from None


def _new_run_dir(root: Path, command: str, now: _dt.datetime | None) -> Path:
    base = root / command
    base.mkdir(parents=True, exist_ok=True)
    stamp = (now or _dt.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    for i in range(10_000):
        path = base / (stamp if i == 0 else f"{stamp}_{i}")
        try:
            path.mkdir()  # atomic: two runs in the same second get different folders
        except FileExistsError:
            continue
        point_latest(base, path.name)
        return path
    raise RuntimeError(f"could not create a run folder under {base}")


def discard_run_dir(path: Path, error: str = "") -> None:
    """A run failed on bad input. If it produced nothing but its description, remove its folder
    and point ``latest`` back at the newest remaining run (a typo never hides the last good run);
    otherwise keep everything and record the error in ``error.txt``."""
    try:
        produced = {p.name for p in path.iterdir()} - DESCRIPTION
    except OSError:
        return
    if produced or ((path / "figures").is_dir() and any((path / "figures").iterdir())):
        try:
            write_atomic(path / "error.txt", error + "\n")
        except WriteError:  # the disk that failed the run may not take this either
            pass
        return
    base = path.parent
    shutil.rmtree(path, ignore_errors=True)
    runs = run_folders(base)
    try:
        point_latest(base, runs[-1].name if runs else None)
    except OSError:  # a full or read-only disk: the error being reported matters more
        pass


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


def kept_checkpoints(spec: str | Path, output_root: str | Path = "outputs"
                     ) -> tuple[Path, list[tuple[int, Path]]]:
    """A training run folder and the epoch checkpoints it kept (``keep_epochs``: Fig 4's
    epochs), oldest first.

    Args:
        spec (str or Path): a checkpoint file of the run, its folder, or ``latest``.
        output_root (str or Path, optional): where ``latest`` is looked for. Default: outputs.

    Returns:
        tuple[Path, list[tuple[int, Path]]]: the run folder and ``(epoch, file)`` pairs.

    Raises:
        CheckpointError: no checkpoint there, or no kept epoch checkpoints (one line saying how
            to get them).
    """
    path = resolve(spec, output_root, "train")
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    kept = sorted((int(p.stem.split("_")[1]), p) for p in (run / "checkpoints").glob("epoch_*.pt"))
    if not kept:
        raise CheckpointError(f"no kept epoch checkpoints (epoch_*.pt) in {run / 'checkpoints'}: "
                              "train with keep_epochs=[...] to get them")
    return run, kept
