"""The ``zfnet`` command: one short function per subcommand. Each turns its typed options into
Hydra overrides, composes the config, makes the run folder and calls one ``run(cfg, run_dir)``.

Bad input ends in a one-line ``zfnet <command>: error: ...`` on stderr and a non-zero exit
(2 for config errors); set ``ZFNET_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from zfnet_cli.config import ConfigError, compose, make_run_dir, merge_overrides

app = typer.Typer(
    name="zfnet",
    help="Reproduce Zeiler & Fergus 2014, 'Visualizing and Understanding Convolutional Networks' "
         "(ZFNet): train the model, look inside it with the switch deconvnet and occlusion.\n\n"
         "Every command takes typed options for the common knobs and Hydra KEY=VALUE overrides for "
         "everything else (see configs/), and writes a new folder outputs/<command>/<date_time>.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """Keeps `zfnet` a group of subcommands (Typer would collapse a single one)."""


OVERRIDES = typer.Argument(None, metavar="[KEY=VALUE]...",
                           help="Hydra overrides of any config value, e.g. optim.lr=0.05 "
                                "model.channels=[48,128,192,192,128] data=imagenet.")


def _fail(command: str, message: str, code: int) -> None:
    typer.echo(f"zfnet {command}: error: {message}", err=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from zfnet_cli.checkpoint import CheckpointError

    return (CheckpointError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def _execute(command: str, overrides: list[str], runner: Callable, *,
             resume_overrides: Callable[[object], list[str]] | None = None) -> dict:
    """Compose, set up DDP when under torchrun, make the run folder, run, report."""
    debug = bool(os.environ.get("ZFNET_DEBUG"))
    from zfnet_cli.engine import cleanup_distributed, setup_distributed

    try:
        cfg = compose(command, overrides)
        if resume_overrides is not None and getattr(cfg, "resume", None):
            overrides = merge_overrides(resume_overrides(cfg), overrides)
            cfg = compose(command, overrides)
        d = setup_distributed(getattr(cfg, "device", "auto"))
        run_dir = make_run_dir(command, cfg)
        metrics = runner(cfg, run_dir, dist_info=d, overrides=overrides)
    except ConfigError as err:
        if debug:
            raise
        _fail(command, str(err), 2)
    except _user_errors() as err:
        if debug:
            raise
        _fail(command, str(err), 1)
    finally:
        cleanup_distributed()
    if d.main:
        typer.echo(f"zfnet {command}: done, results in {run_dir}")
    return metrics


@app.command(epilog="Examples:\n\n"
             "  zfnet train                                  # small model, embedded data, CPU\n\n"
             "  zfnet train --epochs 3 optim.lr=0.02\n\n"
             "  zfnet train experiment=zfnet data.root=/data/imagenet     # the paper's recipe\n\n"
             "  torchrun --nproc_per_node=8 -m zfnet_cli train experiment=zfnet data.root=/data/imagenet\n\n"
             "  zfnet train resume=latest --epochs 20        # continue the newest run")
def train(
    overrides: Optional[List[str]] = OVERRIDES,
    experiment: Optional[str] = typer.Option(
        None, "--experiment", "-e", help="Preset: zfnet (paper recipe, ImageNet), alexnet, smoke "
        "(tiny, <1 min). Default: the small model on the embedded data."),
    model: Optional[str] = typer.Option(None, help="Model preset: small, zfnet, alexnet, tiny."),
    data: Optional[str] = typer.Option(None, help="Data set: embedded (generated here) or imagenet."),
    data_root: Optional[Path] = typer.Option(None, help="ImageNet root holding train/<wnid>/ and val/<wnid>/."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Number of epochs (paper: 70)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Global batch size (paper: 128)."),
    lr: Optional[float] = typer.Option(None, min=0.0, help="Initial learning rate (paper: 0.01)."),
    device: Optional[str] = typer.Option(None, help="auto (CUDA when present), cpu, cuda, cuda:1."),
    seed: Optional[int] = typer.Option(None, help="Seed of weights, data order, augmentation, dropout."),
    resume: Optional[str] = typer.Option(
        None, help="Continue from a checkpoint file, a run folder or 'latest'; the run's own "
        "overrides are reapplied, then the ones given now."),
) -> None:
    """Train ZFNet (paper §3): SGD with momentum, dropout, filter renormalisation.

    Per epoch it writes train loss/top-1, val loss/top-1/top-5 and images/s to metrics.jsonl,
    keeps checkpoints (Fig 4's epochs, last, best) and draws figures/curves.png at the end.
    """
    typed = {"experiment": experiment, "model": model, "data": data, "data.root": data_root,
             "epochs": epochs, "batch_size": batch_size, "optim.lr": lr, "device": device,
             "seed": seed, "resume": resume}
    ovr = [f"{k}={v}" for k, v in typed.items() if v is not None] + list(overrides or [])
    from zfnet_cli.experiments import train as experiment_train

    def saved_overrides(cfg) -> list[str]:
        from zfnet_cli import checkpoint

        state = checkpoint.load(checkpoint.resolve(cfg.resume, cfg.output_root))
        return [o for o in state.get("overrides", []) if not o.startswith("resume=")]

    _execute("train", merge_overrides([], ovr), experiment_train.run, resume_overrides=saved_overrides)


def main() -> None:
    app(prog_name="zfnet")


if __name__ == "__main__":
    sys.exit(main())
