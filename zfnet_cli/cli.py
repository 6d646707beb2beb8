"""The ``zfnet`` command: one short function per subcommand. Each turns its typed options into
Hydra overrides, composes the config, makes the run folder and calls one ``run(cfg, run_dir)``.

Bad input ends in a one-line ``zfnet <command>: error: ...`` on stderr and a non-zero exit
(2 for config errors); set ``ZFNET_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, List, Optional

import typer

# Nothing here imports torch, hydra or an experiment at module level: `zfnet --help` and each
# command's --help answer at once, and a command imports what it needs when it runs.

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
    _one_line_warnings()


def _one_line_warnings() -> None:
    """A damaged image file that still decoded is one ``zfnet: warning:`` line on stderr (the
    file and what is wrong), not Python's two-line warning format; other warnings are shown as
    before. DataLoader workers and prepare's decoding processes fork from here and inherit it."""
    import warnings

    shown = warnings.showwarning
    if getattr(shown, "zfnet_one_line", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        # Looked up when a warning is shown, not imported here: the images module loads torch,
        # which a command's --help must not wait for; until it is loaded nothing can warn of it.
        images = sys.modules.get("zfnet_cli.data.images")
        if images is not None and issubclass(category, images.DamagedImageWarning):
            print(f"zfnet: warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.zfnet_one_line = True
    warnings.showwarning = show


def _overrides_argument(example: str) -> typer.models.ArgumentInfo:
    """The KEY=VALUE argument of a command, with an example that fits that command."""
    return typer.Argument(None, metavar="[KEY=VALUE]...",
                          help=f"Hydra overrides of any config value (see configs/), e.g. {example}.")


OVERRIDES = _overrides_argument("optim.lr=0.05 model.channels=[48,128,192,192,128] data=imagenet")


CHECKPOINT = typer.Option(None, help="The model: a checkpoint file, a train run folder or 'latest' "
                          "(default: the newest `zfnet train` run); a torchvision state dict file "
                          "(resnet18.pth, also {'model': ...}-wrapped); a TorchScript file; a "
                          "pickled model (with --trust-pickle); or package.module:factory "
                          "(with --weights FILE).")
ARCH = typer.Option(None, help="The torchvision architecture of a state dict (resnet18, "
                    "vgg16_bn, ...); default: recognised from its keys and shapes.")
TRUST_PICKLE = typer.Option(None, "--trust-pickle", help="Load a whole pickled model "
                            "(torch.save(model)); unpickling runs code from the file.")
WEIGHTS = typer.Option(None, help="A state dict file loaded into the model of "
                       "--checkpoint package.module:factory.")


def _source(checkpoint: Optional[str], arch: Optional[str], trust_pickle: Optional[bool],
            weights: Optional[str]) -> dict:
    """The model-source options as overrides (see zfnet_cli.loading.ModelSource)."""
    return {"checkpoint": _quote(checkpoint) if checkpoint else None, "arch": arch,
            "trust_pickle": trust_pickle, "weights": _quote(weights) if weights else None}
DEVICE = typer.Option(None, help="auto (CUDA when present), cpu, cuda, cuda:1.")
RULE = typer.Option(None, help="Projection rule: deconvnet (the paper: switches, ReLU on the "
                    "signal), guided (guided backpropagation: also the forward ReLU masks) or "
                    "gradient (the plain gradient, the reference). Default: deconvnet on the "
                    "paper's ZFNet / AlexNet models, guided on any other network.")
SPLIT = typer.Option(None, help="The split of the model's data its images come from: val "
                     "(default; for tuning) or test (where the claims are read).")


def _fail(command: str, message: str, code: int) -> None:
    typer.echo(f"zfnet {command}: error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _notes(command: str):
    """Print what the loaders say a user could not know (``SourceNote``: a factory's own
    weights used) as one ``zfnet <command>: note:`` line each, while the context is open."""
    from zfnet_cli.loading import SourceNote

    with warnings.catch_warnings():
        warnings.simplefilter("always", SourceNote)
        show = warnings.showwarning

        def note(message, category, *args, **kwargs):
            if issubclass(category, SourceNote):
                typer.echo(f"zfnet {command}: note: {message}", err=True)
            else:
                show(message, category, *args, **kwargs)
        warnings.showwarning = note
        yield


def _user_errors() -> tuple[type[BaseException], ...]:
    from zfnet_cli.checkpoint import CheckpointError
    from zfnet_cli.files import WriteError

    return (CheckpointError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
            WriteError)


def _execute(command: str, overrides: list[str], runner: Callable | None = None, *,
             resume_overrides: Callable[[object], list[str]] | None = None,
             existing_dir: Callable[[object], Optional[Path]] | None = None) -> dict:
    """Compose, set up DDP when under torchrun, make the run folder (or continue in the one
    ``existing_dir(cfg)`` names), run (``runner``, default the command's experiment's ``run``),
    report. torch and the experiment load only once the config has composed, so a bad override
    answers at once."""
    debug = bool(os.environ.get("ZFNET_DEBUG"))
    from zfnet_cli.config import ConfigError, compose, make_run_dir, merge_overrides
    from zfnet_cli.runs import discard_run_dir

    run_dir = None
    try:
        cfg = compose(command, overrides)
        if resume_overrides is not None and getattr(cfg, "resume", None):
            overrides = merge_overrides(resume_overrides(cfg), overrides)
            cfg = compose(command, overrides)
        from zfnet_cli.engine import setup_distributed

        if runner is None:
            runner = importlib.import_module(f"zfnet_cli.experiments.{command}").run
        d = setup_distributed(getattr(cfg, "device", "auto"))
        run_dir = make_run_dir(command, cfg, existing=existing_dir(cfg) if existing_dir else None)
        with _notes(command):
            metrics = runner(cfg, run_dir, dist_info=d, overrides=overrides)
    except ConfigError as err:
        if debug:
            raise
        _fail(command, str(err), 2)
    except _user_errors() as err:
        if debug:
            raise
        if run_dir is not None and d.main and not (existing_dir and existing_dir(cfg)):
            discard_run_dir(run_dir, str(err))
        _fail(command, str(err), 1)
    except OSError as err:  # a full or read-only disk met outside the atomic writer (figures)
        import errno as _errno

        from zfnet_cli.files import describe

        if debug or err.errno not in (_errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EACCES):
            raise
        message = describe(err, err.filename or (run_dir or "the output folder"))
        if run_dir is not None and d.main and not (existing_dir and existing_dir(cfg)):
            discard_run_dir(run_dir, message)
        _fail(command, message, 1)
    finally:
        engine = sys.modules.get("zfnet_cli.engine")  # not imported: nothing was set up
        if engine is not None:
            engine.cleanup_distributed()
    if d.main:
        typer.echo(f"zfnet {command}: done, results in {run_dir}")
    return metrics


@app.command(epilog="Examples:\n\n"
             "  zfnet train                                  # small model, embedded data, CPU\n\n"
             "  zfnet train --epochs 3 optim.lr=0.02\n\n"
             "  zfnet train experiment=zfnet data.root=/data/imagenet     # the paper's recipe\n\n"
             "  torchrun --nproc_per_node=8 -m zfnet_cli train experiment=zfnet data.root=/data/imagenet\n\n"
             "  zfnet train resume=latest --epochs 20        # continue the newest run\n\n"
             "  zfnet train --eval-only --checkpoint outputs/train/RUN --eval-crops 10   # Table 2\n\n"
             "  zfnet train experiment=zfnet data=packed data.root=outputs/packed/imagenet_256 --amp bf16 --channels-last --compile")
def train(
    overrides: Optional[List[str]] = OVERRIDES,
    experiment: Optional[str] = typer.Option(
        None, "--experiment", "-e", help="Preset: zfnet (paper recipe, ImageNet), alexnet, smoke "
        "(tiny, <1 min). Default: the small model on the embedded data."),
    model: Optional[str] = typer.Option(None, help="Model preset: small, zfnet, alexnet, tiny."),
    data: Optional[str] = typer.Option(None, help="Data set: embedded (generated here), imagenet "
                                       "(JPEG folders) or packed (made by `zfnet prepare`)."),
    data_root: Optional[Path] = typer.Option(None, help="imagenet: the root holding train/<wnid>/ "
                                             "and val/<wnid>/ (ImageFolder, or torchvision's root "
                                             "with meta.bin / the devkit for class names); packed: "
                                             "the pack folder."),
    epochs: Optional[int] = typer.Option(None, help="Number of epochs (paper: 70)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (paper: 128)."),
    lr: Optional[float] = typer.Option(None, help="Initial learning rate (paper: 0.01)."),
    device: Optional[str] = typer.Option(None, help="auto (CUDA when present), cpu, cuda, cuda:1."),
    seed: Optional[int] = typer.Option(None, help="Seed of weights, data order, augmentation, dropout."),
    resume: Optional[str] = typer.Option(
        None, help="Continue from a checkpoint file, a run folder or 'latest'; the run's own "
        "overrides are reapplied, then the ones given now."),
    eval_only: Optional[bool] = typer.Option(None, "--eval-only", help="Only evaluate --checkpoint "
                                             "on the val split (top-1/top-5 error), no training."),
    checkpoint: Optional[str] = typer.Option(None, help="With --eval-only: the model, from any "
                                             "source the other commands take (a checkpoint file "
                                             "or train run folder, 'latest', a torchvision state "
                                             "dict, TorchScript, package.module:factory, ...; "
                                             "with --arch, --weights, --trust-pickle, "
                                             "preprocess.KEY=VALUE)."),
    eval_crops: Optional[int] = typer.Option(None, help="Validation views: 1 (centre crop) or 10 "
                                             "(4 corners + centre, each mirrored, softmax averaged)."),
    eval_test: Optional[bool] = typer.Option(None, "--eval-test", help="After the last epoch "
                                             "also score the final model on the test split."),
    amp: Optional[str] = typer.Option(None, help="none or bf16 (autocast; helps on GPUs with bf16 "
                                      "tensor cores, not on CPUs)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last", help="NHWC memory "
                                                 "layout for the convs (GPU)."),
    compile_model: Optional[bool] = typer.Option(None, "--compile", help="torch.compile the "
                                                 "model (pays off on long GPU runs)."),
    arch: Optional[str] = typer.Option(None, help="With --eval-only: the torchvision "
                                       "architecture of a state dict --checkpoint (resnet18, ...); "
                                       "default: recognised from its keys and shapes."),
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
) -> None:
    """Train ZFNet (paper §3): SGD with momentum, dropout, filter renormalisation.

    Per epoch it writes train loss/top-1, val loss/top-1/top-5 and images/s to metrics.jsonl, keeps checkpoints (Fig 4's epochs, last, best) and draws figures/curves.png at the end.
    """
    typed = {"experiment": experiment, "model": model, "data": data, "data.root": data_root,
             "epochs": epochs, "batch_size": batch_size, "optim.lr": lr, "device": device,
             "seed": seed, "resume": resume, "eval_only": eval_only,
             "eval_crops": eval_crops,
             "eval_test": eval_test, "amp": amp, "channels_last": channels_last,
             "compile": compile_model, **_source(checkpoint, arch, trust_pickle, weights)}
    ovr = _overrides(typed, overrides)

    def saved_overrides(cfg) -> list[str]:
        from zfnet_cli import checkpoint, runs

        state = checkpoint.load(runs.resolve(cfg.resume, cfg.output_root, finished=False,
                                                   key="resume"))
        return [o for o in state.get("overrides", []) if not o.startswith("resume=")]

    _execute("train", ovr, resume_overrides=saved_overrides)


def _overrides(typed: dict, extra: Optional[List[str]]) -> list[str]:
    """Typed options (``None``: not given) as ``key=value`` overrides, then the user's own
    KEY=VALUE arguments, a later one of the same key winning."""
    from zfnet_cli.config import merge_overrides

    return merge_overrides([], [f"{k}={v}" for k, v in typed.items() if v is not None]
                           + list(extra or []))


def _hydra_list(values, quote: bool = True) -> Optional[str]:
    """A Hydra list override value, or ``None`` for an empty / absent list."""
    if not values:
        return None
    return "[" + ",".join(_quote(v) if quote else str(v) for v in values) + "]"


def _quote(value: str) -> str:
    """A string as a Hydra override value (paths may hold characters its grammar reserves)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _files_and_overrides(args: Optional[List[str]]) -> tuple[list[str], list[str]]:
    """Positional arguments: paths (no '=') and Hydra overrides (KEY=VALUE)."""
    args = list(args or [])
    return [a for a in args if "=" not in a], [a for a in args if "=" in a]


@app.command(epilog="Examples:\n\n"
             "  zfnet visualize --layer 3 --fmap 42       # Fig 2 for one map, newest trained model\n\n"
             "  zfnet visualize --layer layer3.1 --fmap 42 checkpoint=resnet18.pth data=folder data.root=photos/\n\n"
             "  zfnet visualize --all                     # Fig 2, a random subset of maps in layers 1-5\n\n"
             "  zfnet visualize --evolution               # Fig 4 from the kept epochs of the newest run\n\n"
             "  zfnet visualize --filters                 # Fig 6: conv1 filters, layer-2 projections\n\n"
             "  zfnet visualize --all data=folder data.root=photos/   # Fig 2 over a folder of your photos\n\n"
             "  zfnet visualize --filters --compare outputs/train/RUN_A outputs/train/RUN_B\n\n"
             "  zfnet visualize checkpoint=outputs/train/2026-11-22_10-30-00 split=train max_images=2000")
def visualize(
    args: Optional[List[str]] = typer.Argument(
        None, metavar="[RUN]... [KEY=VALUE]...",
        help="With --compare: the training runs (folders or checkpoint files) to put side by "
             "side. Then Hydra overrides, e.g. maps_per_layer=16 k=9, or data=folder "
             "data.root=DIR to scan a folder of your photos (flat or one sub-folder per class)."),
    layer: Optional[List[str]] = typer.Option(None, help="Layer(s) to show: a paper name or "
                                              "number (conv3 or 3) or any module name (layer3.1, "
                                              "features.6; `zfnet layers` lists them); repeat for "
                                              "several. Default: all conv layers of a plain stack, "
                                              "the blocks of any other network."),
    fmap: Optional[List[int]] = typer.Option(None, help="Feature map(s) of those layers; repeat for "
                                             "several. Default: a seeded random subset (Fig 2)."),
    all_layers: bool = typer.Option(False, "--all", help="Fig 2 for every default layer (conv1-5 "
                                    "for ZFNet, the blocks of a ResNet ...)."),
    evolution: bool = typer.Option(False, "--evolution", help="Fig 4: projections at each kept "
                                   "epoch of a training run."),
    filters: bool = typer.Option(False, "--filters", help="Fig 6: first-layer filters and layer-2 "
                                 "projections, with dead-filter and frequency numbers."),
    compare: bool = typer.Option(False, "--compare", help="With --filters: compare the training "
                                 "runs given as arguments (e.g. AlexNet 11x11/4 vs ZFNet 7x7/2)."),
    cascade: bool = typer.Option(False, "--cascade", help="Sanity check: re-initialise the "
                                 "weights block by block from the layer down and draw, per rule, "
                                 "how similar each map's projection stays (Adebayo et al. 2018)."),
    rule: Optional[str] = RULE,
    checkpoint: Optional[str] = CHECKPOINT,
    arch: Optional[str] = ARCH,
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
    split: Optional[str] = typer.Option(None, help="Data split scanned for Fig 2 (default: val)."),
    max_images: Optional[int] = typer.Option(None, help="Scan at most this many images."),
    device: Optional[str] = DEVICE,
    seed: Optional[int] = typer.Option(None, help="Seed of the random subset of maps."),
) -> None:
    """Look inside a trained model with the switch deconvnet (paper §2.1, Figs 2, 4, 6).

    Fig 2: the 9 strongest activations of each shown feature map over a data split, each projected to pixels beside its image patch; a JSON index says which images they came from.
    """
    runs, overrides = _files_and_overrides(args)
    if runs and not compare:
        _fail("visualize", f"unexpected argument '{runs[0]}' (overrides are KEY=VALUE; runs to "
              "compare need --filters --compare)", 2)
    if compare and len(runs) < 2:
        _fail("visualize", "--compare needs two or more training runs", 2)
    if sum([evolution, filters or compare, cascade]) > 1:
        _fail("visualize", "choose one of --evolution, --filters, --cascade", 2)
    mode = ("evolution" if evolution else "filters" if (filters or compare)
            else "cascade" if cascade else None)
    typed = {"mode": mode, "rule": rule, **_source(checkpoint, arch, trust_pickle, weights),
             "split": split, "max_images": max_images, "device": device, "seed": seed,
             "layers": None if all_layers else _hydra_list(layer),
             "fmaps": _hydra_list(fmap, quote=False), "compare": _hydra_list(runs)}
    _execute("visualize", _overrides(typed, overrides))


@app.command(epilog="Examples:\n\n"
             "  zfnet explore                              # every unit of layers 1-5, newest model\n\n"
             "  zfnet explore --layer 1 --layer 2 max_images=2000\n\n"
             "  zfnet explore --checkpoint resnet18.pth data=folder data.root=photos/   # any model\n\n"
             "  zfnet explore --layer layer4 max_units=64 --checkpoint resnet18.pth data=folder data.root=photos/   # a first look\n\n"
             "  zfnet explore checkpoint=outputs/train/RUN data=imagenet data.root=DIR split=val")
def explore(
    overrides: Optional[List[str]] = _overrides_argument(
        "max_units=64 (the first 64 units of each layer, for a first look) max_images=2000 "
        "data=folder data.root=photos/"),
    layer: Optional[List[str]] = typer.Option(None, help="Layer(s) to explore: a paper name or "
                                              "number (conv3 or 3) or any module name (layer3.1, "
                                              "features.6; `zfnet layers` lists them); repeat for "
                                              "several. Default: all conv layers of a plain stack, "
                                              "the blocks of any other network."),
    checkpoint: Optional[str] = CHECKPOINT,
    arch: Optional[str] = ARCH,
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
    split: Optional[str] = typer.Option(None, help="Data split scanned (default: val)."),
    max_images: Optional[int] = typer.Option(None, help="Scan at most this many images."),
    evolution: Optional[bool] = typer.Option(None, "--evolution/--no-evolution", help="Show each "
                                             "unit at the run's kept epochs (Fig 4; default: yes)."),
    rule: Optional[str] = RULE,
    device: Optional[str] = DEVICE,
) -> None:
    """Browse Fig 2 for every unit: a static site (open site/index.html in a browser, no server).

    The top-9 of every unit of the chosen layers over an image set, each projection beside its image patch, with the images' names, classes, activation values and positions; navigation by layer and unit, sorting by strongest activation or by distinct classes.
    """
    typed = {**_source(checkpoint, arch, trust_pickle, weights), "split": split,
             "max_images": max_images, "evolution": evolution, "device": device,
             "rule": rule, "layers": _hydra_list(layer)}
    metrics = _execute("explore", _overrides(typed, overrides))
    typer.echo(f"zfnet explore: open {metrics['index']} in a browser")


@app.command(epilog="Examples:\n\n"
             "  zfnet occlude                              # a few embedded validation images\n\n"
             "  zfnet occlude dog.jpg cat.png --label 3    # your files, class 3 as the correct one\n\n"
             "  zfnet occlude photos/ --checkpoint resnet18.pth   # a folder of photos, any model\n\n"
             "  zfnet occlude a.jpg b.jpg --label cat --label dog --layer layer3\n\n"
             "  zfnet occlude photo.jpg --label face --size 32 --stride 4\n\n"
             "  zfnet occlude localise=true                # + the localisation check (embedded data)\n\n"
             "  zfnet occlude --split test localise=true   # the same on the test split (the claims)")
def occlude(
    args: Optional[List[str]] = typer.Argument(
        None, metavar="[IMAGE|DIR]... [KEY=VALUE]...",
        help="Image files (JPEG, PNG, GIF, WebP, BMP, TIFF; any mode) and folders of photos "
             "(flat, or one sub-folder per class). None: a few images of the model's data "
             "(--split). Then Hydra overrides, e.g. localise=true."),
    label: Optional[List[str]] = typer.Option(
        None, help="The correct class, as an index or a class name: once for every image, or "
        "repeated, one per image in order. Default: the class predicted on the whole image (in "
        "a class-per-folder tree: the folder's name where it names a class of the model)."),
    layer: Optional[str] = typer.Option(None, help="Layer of panel (b): a module name "
                                        "(layer3.1, features.28) or the paper's conv1..conv5 "
                                        "where they apply. Default: the paper's layer 5, else "
                                        "the last feature map before global pooling."),
    size: Optional[int] = typer.Option(None, help="Occluder side in pixels (default: "
                                       "input side / 4; the paper does not say)."),
    stride: Optional[int] = typer.Option(None, help="Occluder step in pixels (default: size / 4)."),
    rule: Optional[str] = RULE,
    split: Optional[str] = SPLIT,
    checkpoint: Optional[str] = CHECKPOINT,
    arch: Optional[str] = ARCH,
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
    device: Optional[str] = DEVICE,
) -> None:
    """Occlusion sensitivity (paper §4.2, Fig 7): slide a grey square over each image.

    Per occluder position: (b) the total activation of the strongest feature map of --layer, (d) p(correct class), (e) the most probable label; with (c) the deconv projection of that map where the model has a deconvnet, and (f) the fall in p(correct class) over the photo. A photo is occluded over the region the model sees (short side resized, centre crop). Maps (per position and per pixel) go to the run folder as .npz, numbers to occlusion.json, figures to figures/.
    """
    images, overrides = _files_and_overrides(args)
    typed = {"labels": _hydra_list(label), "layer": _quote(layer) if layer else None,
             "size": size, "stride": stride, "split": split, "rule": rule,
             **_source(checkpoint, arch, trust_pickle, weights), "device": device,
             "images": _hydra_list(images)}
    metrics = _execute("occlude", _overrides(typed, overrides))
    for line in metrics.get("notes", []):
        typer.echo(f"zfnet occlude: note: {line}", err=True)
    for line in metrics.get("failed", []):
        typer.echo(f"zfnet occlude: error: {line}", err=True)
    if metrics.get("failed"):
        raise typer.Exit(1)


@app.command(epilog="Examples:\n\n"
             "  zfnet invariance                           # 5 embedded validation images\n\n"
             "  zfnet invariance method=render             # re-draw the object, background fixed\n\n"
             "  zfnet invariance --split test              # test-split images (the claims)\n\n"
             "  zfnet invariance a.jpg b.jpg --label 3 --label 7")
def invariance(
    args: Optional[List[str]] = typer.Argument(
        None, metavar="[IMAGE]... [KEY=VALUE]...",
        help="Image files (default: images of the model's data, --split), then overrides."),
    label: Optional[List[str]] = typer.Option(None, help="True class of each file (index or "
                                              "name), in order; repeat. Default: the prediction."),
    n_images: Optional[int] = typer.Option(None, help="Validation images used (paper: 5)."),
    method: Optional[str] = typer.Option(None, help="image: transform the whole image (paper); "
                                         "render: re-draw the embedded object."),
    split: Optional[str] = SPLIT,
    checkpoint: Optional[str] = CHECKPOINT,
    arch: Optional[str] = ARCH,
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
    device: Optional[str] = DEVICE,
) -> None:
    """Feature invariance (paper §4.4, Fig 5): vertical translation, scale and rotation.

    Per transform and amount: the relative distance ||f(x) - f(x')|| / ||f(x)|| of layer-1 and layer-7 features, and P(true class); one line per image.
    """
    files, overrides = _files_and_overrides(args)
    typed = {"images": _hydra_list(files), "labels": _hydra_list(label),
             "n_images": n_images, "method": method, "split": split,
             **_source(checkpoint, arch, trust_pickle, weights), "device": device}
    _execute("invariance", _overrides(typed, overrides))


@app.command(epilog="Examples:\n\n"
             "  zfnet correspond                           # embedded faces: eyes, nose, random\n\n"
             "  zfnet correspond draws=50 mask_size=24\n\n"
             "  zfnet correspond --split test              # test-split faces (the claims)\n\n"
             "  zfnet correspond d1.jpg d2.jpg d3.jpg --parts-file parts.json")
def correspond(
    args: Optional[List[str]] = typer.Argument(
        None, metavar="[IMAGE]... [KEY=VALUE]...",
        help="Images of one class (need --parts-file; default: embedded faces), then overrides."),
    parts_file: Optional[Path] = typer.Option(None, help="JSON {image: {part: [x0,y0,x1,y1]}} or "
                                              "CSV image,part,x0,y0,x1,y1."),
    draws: Optional[int] = typer.Option(None, help="Draws per Table 1 row (mean ± std)."),
    mask_size: Optional[int] = typer.Option(None, help="Side of the occluding square (px)."),
    split: Optional[str] = SPLIT,
    checkpoint: Optional[str] = CHECKPOINT,
    arch: Optional[str] = ARCH,
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
    device: Optional[str] = DEVICE,
) -> None:
    """Correspondence of parts across images (paper §4.3, Fig 8, Table 1).

    Occlude the same part in every image (or a random spot); Delta = how often the signs of the feature changes disagree between images, at layers 5 and 7 (lower = more consistent). Writes table1.md, table1.json and figures/fig8_masks.png.
    """
    files, overrides = _files_and_overrides(args)
    typed = {"images": _hydra_list(files),
             "parts_file": _quote(str(parts_file)) if parts_file else None, "draws": draws,
             "mask_size": mask_size, "split": split,
             **_source(checkpoint, arch, trust_pickle, weights), "device": device}
    _execute("correspond", _overrides(typed, overrides))


@app.command(epilog="Examples:\n\n"
             "  zfnet ablate                                # all of Table 3, small presets, embedded data\n\n"
             "  zfnet ablate -v zfnet -v zfnet_conv512 -t epochs=3\n\n"
             "  zfnet ablate experiment=paper -t data.root=/data/imagenet   # the paper's scale\n\n"
             "  zfnet ablate --resume latest                # continue an interrupted ablation\n\n"
             "  zfnet ablate --list")
def ablate(
    overrides: Optional[List[str]] = _overrides_argument("seeds=3 presets.zfnet=zfnet (training overrides go to -t)"),
    variant: Optional[List[str]] = typer.Option(None, "--variant", "-v", help="A Table 3 variant "
                                                "to train; repeat for several. Default: all."),
    train_override: Optional[List[str]] = typer.Option(
        None, "--train", "-t", metavar="KEY=VALUE", help="A `zfnet train` override given to every "
        "variant (data, epochs, recipe); repeat for several."),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Preset: paper "
                                             "(ImageNet widths and recipe), demo, smoke."),
    resume: Optional[str] = typer.Option(None, help="An ablation folder or 'latest': continue "
                                         "there, skipping finished variants, resuming a cut one."),
    device: Optional[str] = DEVICE,
    list_variants: bool = typer.Option(False, "--list", help="List the variants and exit."),
) -> None:
    """Architecture ablation (paper §5.1, Table 3): train each variant from scratch, same budget.

    Each variant is a normal `zfnet train` run in <ablation>/variants/<name>/; the table (train top-1, val top-1, val top-5 error, parameters, beside the paper's) goes to table3.md, .csv, .json and figures/table3.png. Also runs under torchrun (every variant on all ranks).
    """
    if list_variants:
        from zfnet_cli.experiments import ablate as experiment_ablate

        for name, v in experiment_ablate.VARIANTS.items():
            typer.echo(f"{name:24s} {v.label}")
        return
    typed = {"experiment": experiment, "variants": _hydra_list(variant, quote=False),
             "resume": _quote(resume) if resume else None, "device": device,
             "train_extra": _hydra_list(train_override)}
    ovr = _overrides(typed, overrides)

    def existing(cfg) -> Optional[Path]:
        if not cfg.resume:
            return None
        from zfnet_cli.checkpoint import CheckpointError

        path = Path(cfg.output_root) / "ablate" / "latest" if cfg.resume == "latest" else Path(cfg.resume)
        if not (path / "run.json").is_file():
            raise CheckpointError(f"no ablation folder at {path} (expected a folder made by "
                                  "`zfnet ablate`, or 'latest')")
        return path.resolve()

    def runner(cfg, run_dir, **kw):
        from zfnet_cli.config import compose, describe_run
        from zfnet_cli.experiments import ablate as experiment_ablate

        return experiment_ablate.run(cfg, run_dir, compose_train=lambda o: compose("train", o),
                                     describe_run=lambda c, p: describe_run(p, "train", c), **kw)

    _execute("ablate", ovr, runner, existing_dir=existing)


@app.command(epilog="Examples:\n\n"
             "  zfnet transfer                              # embedded held-out classes, 1-20 per class\n\n"
             "  zfnet transfer -e caltech101 --root /data   # Table 4 (+ Table 7 at 30 per class)\n\n"
             "  zfnet transfer -e caltech256 --root /data   # Table 5, Fig 9 (+ Table 7 at 60)\n\n"
             "  zfnet transfer -e voc --root /data          # Table 6\n\n"
             "  zfnet transfer --shots 5 --shots 10 --no-scratch checkpoint=outputs/train/RUN")
def transfer(
    overrides: Optional[List[str]] = _overrides_argument("folds=2 shots=[5,10] scratch_epochs=10"),
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Preset: caltech101 "
                                             "(Table 4), caltech256 (Table 5, Fig 9), voc (Table 6), smoke."),
    target: Optional[str] = typer.Option(None, help="embedded (held-out classes), caltech101, "
                                         "caltech256 or voc."),
    root: Optional[Path] = typer.Option(None, help="The target data set's folder (torchvision's "
                                        "layouts: ROOT/caltech101/101_ObjectCategories, "
                                        "ROOT/caltech256/256_ObjectCategories, ROOT/VOCdevkit/VOC2012)."),
    shots: Optional[List[int]] = typer.Option(None, help="Training images per class; "
                                              "repeat for several (paper: 15, 30 / 15-60)."),
    folds: Optional[int] = typer.Option(None, help="Random folds (paper: 5)."),
    scratch: Optional[bool] = typer.Option(None, "--scratch/--no-scratch", help="Also train the "
                                           "architecture from scratch on each fold (default: yes)."),
    per_layer: Optional[bool] = typer.Option(None, "--per-layer/--no-per-layer", help="Table 7: "
                                             "an SVM and a softmax on each layer (default: yes)."),
    checkpoint: Optional[str] = CHECKPOINT,
    arch: Optional[str] = ARCH,
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
    device: Optional[str] = DEVICE,
) -> None:
    """Transfer of the frozen features (paper §5.2, Tables 4-7, Fig 9).

    Few-shot targets: a new softmax on frozen fc7 against the same net trained from scratch, at each number of training images per class, mean per-class accuracy ± std over folds (transfer.md, figures/fig9.png), and a classifier per layer (table7.md). VOC: per-class average precision (table6.md).
    """
    typed = {"experiment": experiment, "target": target,
             "root": _quote(str(root)) if root else None, "shots": _hydra_list(shots, quote=False),
             "folds": folds, "scratch": scratch, "per_layer": per_layer,
             **_source(checkpoint, arch, trust_pickle, weights), "device": device}
    _execute("transfer", _overrides(typed, overrides))


@app.command(epilog="Examples:\n\n"
             "  zfnet prepare imagenet /data/imagenet      # -> outputs/packed/imagenet_256\n\n"
             "  zfnet prepare imagenet /data/imagenet --out /fast/imagenet_256 --workers 32\n\n"
             "  zfnet train experiment=zfnet data=packed data.root=/fast/imagenet_256")
def prepare(
    dataset: str = typer.Argument(..., help="The source layout; imagenet: ROOT/{train,val}/<wnid>/*.JPEG."),
    root: Path = typer.Argument(..., help="The data set's folder."),
    overrides: Optional[List[str]] = _overrides_argument("workers=8 shard_size=2048"),
    out: Optional[Path] = typer.Option(None, help="The pack folder (default: "
                                       "outputs/packed/<dataset>_<image-size>)."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (0: every core)."),
    image_size: Optional[int] = typer.Option(None, help="Side of the stored images (paper: "
                                             "short side 256, centre crop)."),
    shard_size: Optional[int] = typer.Option(None, help="Images per shard file."),
) -> None:
    """Decode a data set once into memory-mappable uint8 shards, for fast training (data=packed).

    In parallel on all cores with a progress bar; running it again resumes an interrupted preparation (finished shards are kept) or re-verifies a finished pack. Every shard's sha256 and the counts are checked at the end; unreadable images are listed with a reason and left out, never fatal.
    """
    if "=" in dataset or "=" in str(root):
        _fail("prepare", "the first two arguments are DATASET ROOT (e.g. imagenet /data/imagenet); "
              "KEY=VALUE overrides come after them", 2)
    typed = {"dataset": dataset, "root": _quote(str(root)), "out": _quote(str(out)) if out else None,
             "workers": workers, "image_size": image_size, "shard_size": shard_size}
    _execute("prepare", _overrides(typed, overrides))


@app.command(epilog="Examples:\n\n"
             "  zfnet report                     # the newest runs under outputs/\n\n"
             "  zfnet report outputs/paper       # what `make paper` wrote")
def report(
    root: Optional[Path] = typer.Argument(None, help="The output root whose runs are reported "
                                          "(default: outputs)."),
    overrides: Optional[List[str]] = _overrides_argument("output_root=outputs/paper"),
) -> None:
    """One markdown report (report.md, figures copied beside it) of a whole reproduction: the newest finished run of each figure and table, the paper's numbers beside ours."""
    typed = {"root": _quote(str(root)) if root else None}
    if root and "=" in str(root):  # a KEY=VALUE given without a root
        overrides, typed = [str(root), *(overrides or [])], {}
    _execute("report", _overrides(typed, overrides))


@app.command(epilog="Examples:\n\n"
             "  zfnet layers                                # the newest trained run\n\n"
             "  zfnet layers --checkpoint resnet18-f37072fd.pth\n\n"
             "  zfnet layers --checkpoint weights.pth --arch vgg16_bn\n\n"
             "  zfnet layers --checkpoint mynets.small:build --weights small.pth\n\n"
             "  zfnet layers --checkpoint model.ts preprocess.input_size=160")
def layers(
    overrides: Optional[List[str]] = _overrides_argument(
        "preprocess.input_size=160 (the input side of a model that does not say it) "
        "device=cpu"),
    checkpoint: Optional[str] = CHECKPOINT,
    arch: Optional[str] = ARCH,
    trust_pickle: Optional[bool] = TRUST_PICKLE,
    weights: Optional[str] = WEIGHTS,
) -> None:
    """List a model's selectable layers: paper name (conv1..conv5, fc6, fc7 on plain stacks), module name, type, what reads it by default and output shape for one image at the model's input size.

    Any name in the first two columns is what --layer and layer= take in the other commands (a number N means convN). "default of": --all marks the layers `visualize --all` and `explore` show when no --layer is given (the blocks the forward pass calls), "occlude (b)" the layer of occlusion's panel (b). Prints to stdout; writes no run folder.
    """
    typed = _source(checkpoint, arch, trust_pickle, weights)
    debug = bool(os.environ.get("ZFNET_DEBUG"))
    from zfnet_cli.config import ConfigError, compose

    try:
        cfg = compose("layers", _overrides(typed, overrides))
        from zfnet_cli.experiments import layers as experiment_layers

        with _notes("layers"):
            loaded, rows, uses = experiment_layers.run(cfg)
    except ConfigError as err:
        if debug:
            raise
        _fail("layers", str(err), 2)
    except _user_errors() as err:
        if debug:
            raise
        _fail("layers", str(err), 1)
    typer.echo(experiment_layers.table(loaded, rows, uses))


@app.command("config", epilog="Examples:\n\n"
             "  zfnet config train                          # the defaults of `zfnet train`\n\n"
             "  zfnet config train experiment=zfnet         # the paper's recipe, composed\n\n"
             "  zfnet config occlude size=32 stride=8")
def config_(
    command: str = typer.Argument(..., help="The command whose config to print (train, "
                                  "visualize, occlude, ...)."),
    overrides: Optional[List[str]] = _overrides_argument("experiment=zfnet optim.lr=0.02"),
) -> None:
    """Print the config a command composes (configs/<command>.yaml over its typed schema, then the overrides), as YAML; runs nothing.

    The YAML files under configs/ hold only what differs from each schema's defaults; this shows every key with its value.
    """
    debug = bool(os.environ.get("ZFNET_DEBUG"))
    from zfnet_cli.config import COMMANDS, ConfigError, compose, to_yaml

    if command not in COMMANDS:
        _fail("config", f"unknown command {command!r}; commands with a config: "
              f"{', '.join(COMMANDS)}", 2)
    try:
        cfg = compose(command, _overrides({}, overrides))
    except ConfigError as err:
        if debug:
            raise
        _fail("config", str(err), 2)
    typer.echo(to_yaml(cfg).rstrip())


def main() -> None:
    app(prog_name="zfnet")


if __name__ == "__main__":
    sys.exit(main())
