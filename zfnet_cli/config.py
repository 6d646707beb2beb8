"""Typed configs, composed from ``configs/`` with Hydra's Compose API, and each run's description.

Each subcommand has one dataclass schema in :mod:`zfnet_cli.schemas`, registered in Hydra's
ConfigStore as ``<command>_schema`` when that command composes (:func:`schema`); that module
imports no torch and no experiment, so a bad override answers before either loads.
``configs/<command>.yaml`` starts its defaults list with that schema, so
YAML files and ``key=value`` overrides only override typed fields: an unknown key or a value of
the wrong type is a :class:`ConfigError` naming the key. Core code receives the plain dataclass
(``OmegaConf.to_object``), never a ``DictConfig``. Only this module and ``cli.py`` import hydra.
The run folders themselves (making, listing, ``latest``) are :mod:`zfnet_cli.runs`.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra import compose as _hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zfnet_cli import schemas
from zfnet_cli.bounds import check_bounds
from zfnet_cli.files import WriteError, append_text, describe, write_atomic
from zfnet_cli.runs import new_run_dir

CONFIG_DIR = Path(os.environ.get("ZFNET_CONFIG_DIR", Path(__file__).resolve().parent.parent / "configs"))


class ConfigError(ValueError):
    """A bad override or config file; the message is one line that names the key."""


# command -> its schema's name in zfnet_cli.schemas
_SCHEMA_NAMES: dict[str, str] = {
    "train": "TrainConfig", "visualize": "VisualizeConfig", "occlude": "OccludeConfig",
    "invariance": "InvarianceConfig", "correspond": "CorrespondConfig", "ablate": "AblateConfig",
    "transfer": "TransferConfig", "report": "ReportConfig", "prepare": "PrepareConfig",
    "layers": "LayersConfig", "explore": "ExploreConfig"}
COMMANDS = tuple(_SCHEMA_NAMES)


def schema(command: str) -> type:
    """The dataclass schema of ``command``, registered in Hydra's ConfigStore on first use."""
    if command not in _SCHEMA_NAMES:
        raise ConfigError(f"no config schema for command '{command}'")
    node = getattr(schemas, _SCHEMA_NAMES[command])
    ConfigStore.instance().store(name=f"{command}_schema", node=node)
    return node


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a nested dict."""
    keys = []
    for k, v in node.items():
        keys += _flat_keys(v, prefix + k + ".") if isinstance(v, dict) else [prefix + k]
    return keys


def _one_line(command: str, err: Exception, overrides: Sequence[str] = ()) -> str:
    """Turn a Hydra/OmegaConf error into one line that names the key and close matches."""
    msgs = []
    e: BaseException | None = err
    while e is not None:
        msgs.append(str(e))
        e = e.__cause__ or e.__context__
    text = "\n".join(msgs)
    known = _flat_keys(OmegaConf.to_container(OmegaConf.structured(schema(command))))
    m = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' not in", text) \
        or re.search(r"Key '([^']+)' is not in struct", text)
    if m and ("not in struct" in text or "Could not override" in text) and "converted" not in text:
        key = m.group(1)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        return f"unknown config key '{key}'{hint}"
    m = re.search(r"Could not find '([^']+)'", text)
    if m:
        choice, opts = m.group(1), re.findall(r"^\s+(\S+)$", text, re.M)
        if choice.startswith(f"experiment/{command}/"):  # per-command experiments, see compose
            choice = "experiment/" + choice.split("/", 2)[2]
            opts = sorted(p.stem for p in (CONFIG_DIR / "experiment" / command).glob("*.yaml"))
        return f"unknown config choice '{choice}'" + (f"; available: {', '.join(opts)}" if opts else "")
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    bad = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") in groups
                and not re.fullmatch(r"[\w./-]+", o.split("=", 1)[-1])), "") or next(
        (o for o in overrides if o.split("=", 1)[0].lstrip("+~") in groups), "")
    if bad and ("Config group override must be a string" in text
                or isinstance(err, (TypeError, AssertionError, AttributeError))):
        # model=1.5, optim=null, data=[1,[2]], optim=${oc.decode:'[1]'}, data={a:1}: Hydra's
        # ValueError, or a TypeError, AssertionError or AttributeError from inside it
        group = bad.split("=", 1)[0].lstrip("+~")
        where = CONFIG_DIR / group / command if group == "experiment" else CONFIG_DIR / group
        shown = bad.replace(f"experiment={command}/", "experiment=", 1)
        names = ", ".join(sorted(p.stem for p in where.glob("*.yaml")))
        return (f"'{shown}': {group or 'a config group'} takes the name of one of its configs"
                + (f" ({names})" if names else "") + ", not a number, null, a boolean, a list or a dict")
    m = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text)
    if m:
        k = re.search(r"full_key: (\S+)", text) or re.search(r"override (\S+?)=", text)
        where = f" for '{k.group(1)}'" if k else ""
        return f"bad value '{m.group(1)}'{where}: expected {m.group(2).lower()}"
    m = re.search(r"Cannot convert '(?:list|dict)' to string: '(.*)'", text)  # root=[1,2]
    if m:
        k = re.search(r"full_key: (\S+)", text)
        where = f" for '{k.group(1)}'" if k else ""
        return f"bad value '{m.group(1)}'{where}: expected a string, not a list or a dict"
    first = next((line.strip() for line in text.splitlines() if line.strip()), repr(err))
    return first


def compose(command: str, overrides: Sequence[str] = ()) -> Any:
    """Compose ``configs/<command>.yaml`` with ``key=value`` overrides into the typed dataclass.

    Raises:
        ConfigError: an unknown key, an unknown group choice, a badly typed value, a value out
            of its field's bounds or an impossible combination (:mod:`zfnet_cli.bounds`; one
            line).
    """
    schema(command)
    # Experiments are per command (configs/experiment/<command>/NAME.yaml); users say NAME.
    overrides = [f"experiment={command}/{o.split('=', 1)[1]}"
                 if o.startswith("experiment=") and o != "experiment=null" else o for o in overrides]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = _hydra_compose(config_name=command, overrides=list(overrides))
        cfg = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as err:
        # Hydra raises a plain ValueError for some bad overrides (a group set to a number),
        # and lets a TypeError out for others (a group set to a list of numbers or lists)
        raise ConfigError(_one_line(command, err, overrides)) from None
    except AttributeError as err:  # OmegaConf, a null group set to a dict (data={a:1})
        line = _one_line(command, err, overrides)
        if line.startswith("'"):  # the group's one line; anything else is ours: a traceback
            raise ConfigError(line) from None
        raise
    except AssertionError as err:  # OmegaConf: a key set under a null node (e.g. data=null)
        if "Unexpected type" not in str(err):  # "for root", or ": None" one level deeper
            # Hydra asserts a group's interpolated choice is a string (optim=${oc.decode:'[1]'})
            line = _one_line(command, err, overrides)
            raise ConfigError(line if not line.startswith("AssertionError") else
                              "these overrides do not compose: " + " ".join(overrides)) from None
        nested = [o.split("=", 1)[0] for o in overrides if "." in o.split("=", 1)[0]]
        parents = sorted({k.split(".")[0] for k in nested})
        raise ConfigError(f"cannot set {', '.join(nested)}: '{'/'.join(parents)}' is null for "
                          f"`zfnet {command}` (it then comes from the checkpoint); choose one "
                          f"first, e.g. {parents[0] if parents else 'data'}=embedded") from None
    finally:
        GlobalHydra.instance().clear()
    # The bounds declared on the schema's fields (zfnet_cli.bounds): one check for the typed
    # --options, the YAML files and the key=value overrides alike.
    try:
        check_bounds(cfg)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def merge_overrides(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """``old`` then ``new``, a later override of the same key replacing an earlier one."""
    merged: dict[str, str] = {}
    for o in list(old) + list(new):
        merged[o.split("=", 1)[0].lstrip("+~")] = o
    return list(merged.values())


# ---------------------------------------------------------------- describing a run
# (the folders themselves: zfnet_cli.runs)

def _git_revision() -> str | None:
    try:
        repo = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from zfnet_cli import __version__

    return {"zfnet_cli": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "platform": platform.platform()}


def describe_run(path: Path, command: str, cfg: Any, argv: Sequence[str] | None = None) -> None:
    """Write a run folder's description: ``config.yaml``, ``command.txt`` (appended to when a
    run continues in its folder), ``run.json`` (git revision, versions, seed, torch threads) and
    ``figures/``. A folder that has
    them already gets ``config.<date_time>.yaml`` and ``run.<date_time>.json`` beside them."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    try:
        (path / "figures").mkdir(exist_ok=True)
    except OSError as err:
        raise WriteError(describe(err, path / "figures")) from None
    # A run that continues in its folder keeps the first description and adds its own beside it.
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    suffix = f".{stamp}" if (path / "config.yaml").exists() else ""
    write_atomic(path / f"config{suffix}.yaml", to_yaml(cfg))
    argv = list(sys.argv if argv is None else argv)
    append_text(path / "command.txt", " ".join(shlex.quote(a) for a in argv) + "\n")
    import torch

    # torch_threads: the intra-op thread count, which changes the digits of a CPU run (how the
    # convolutions and matrix products split their sums); OMP_NUM_THREADS sets it (make does)
    info = {"command": command, "argv": argv, "git_revision": _git_revision(),
            "versions": _versions(), "seed": getattr(cfg, "seed", None),
            "torch_threads": torch.get_num_threads(),
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "world_size": dist.get_world_size() if distributed else 1}
    write_atomic(path / f"run{suffix}.json", json.dumps(info, indent=2) + "\n")


def make_run_dir(command: str, cfg: Any, argv: Sequence[str] | None = None,
                 now: _dt.datetime | None = None, existing: Path | None = None) -> Path:
    """Create ``<output_root>/<command>/<YYYY-MM-DD_HH-MM-SS>[_N]`` and describe the run in it
    (:func:`describe_run`). With ``existing``, continue in that folder instead (``zfnet ablate
    resume=``): its description is refreshed and the command line appended.

    Under DDP (``torch.distributed`` initialised) rank 0 creates the folder and every rank gets
    its path, so all ranks share one run folder and only rank 0 writes the description.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    path = None
    if rank == 0:
        path = Path(existing) if existing is not None else new_run_dir(Path(cfg.output_root), command, now)
        describe_run(path, command, cfg, argv)
    if distributed:
        box = [str(path) if path else None]
        dist.broadcast_object_list(box, src=0)
        path = Path(box[0])
    return path
