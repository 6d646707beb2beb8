"""``zfnet train``: the paper's training recipe (§3) on any data config, on one CPU, one GPU, or
many under ``torchrun`` (DDP), and the evaluation of a trained model (``eval_only=true``).

Evaluation. Validation scores 1 view per image (the centre crop) or, with ``eval_crops=10``, the
four corner and the centre crops and their mirror images, averaging the ten softmax outputs
(how the paper tested is UNSTATED; this is AlexNet's convention and matches the ten sub-crops
the paper trains on). Metrics report top-1 / top-5 accuracy and error (the paper's tables give
error). ``eval_only=true checkpoint=RUN`` evaluates a trained model on the val split with 1 crop
(and 10 with ``eval_crops=10``) and writes ``metrics.json``, without training or checkpoints.

Test split. Every choice is tuned on the val split; ``eval_test=true`` scores the final model
once more, after the last epoch, on the test split (the same evaluation and crops as the last
val pass), into ``metrics.json``'s ``final`` as ``test_loss``, ``test_top1``, ``test_top5`` and
their errors: the numbers the claims are read from (choices are tuned on val). A data set without a test split
(the ImageNet layout) is refused before training starts.

Speed options, all off by default because on a CPU none of them helps (see the README and
``scripts/bench_gpu.py`` for measurements):

- ``amp=bf16``: the forward pass runs under ``torch.autocast(dtype=bfloat16)``, so convs and
  matmuls use bf16 tensor cores on a GPU (on an H100 twice the TF32 peak: 989 against 495 dense
  TFLOP/s). Weights, gradients, optimiser state and the loss stay float32; bf16 has float32's
  exponent range, so no loss scaling is needed. On CPUs without native bf16 (like the 2-core
  AMD EPYC this was written on) it is several times slower than fp32.
- ``channels_last=true``: activations and conv weights in NHWC, the layout cuDNN's tensor-core
  convolutions work in; with bf16 on a GPU it saves the layout transposes around each conv. It
  changes no value, only the memory layout; on a CPU expect no gain.
- ``compile=true``: ``torch.compile`` of the training forward/backward (``compile_backend``,
  ``compile_mode``, static shapes). Inductor fuses the elementwise work (ReLU, LRN, dropout)
  into few kernels; the first step pays the compilation (minutes on a small CPU), so it is for
  long GPU runs. Under DDP the DDP-wrapped module is compiled (``torch.compile(DDP(model))``,
  the order PyTorch's DDPOptimizer needs to keep overlapping gradient all-reduce with
  backward). Checkpoints store the unwrapped module's state dict (no ``_orig_mod.`` /
  ``module.`` prefixes), the filter renormalisation rescales the unwrapped module's conv
  weights, and validation runs the uncompiled module (its batch shapes vary; recompiling for
  them costs more than one validation pass saves).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from zfnet_cli import checkpoint, loading, runs
from zfnet_cli.schemas import TrainConfig
from zfnet_cli.data.images import UnreadableFiles
from zfnet_cli.data.sources import DataConfig, load_split, mean_image
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.engine import (AMP_MODES, Dist, compile_model, dataset_batches, evaluate,
                              pick_device, sum_unreadable, train_one_epoch)
from zfnet_cli.files import append_text, remove_stale_temporaries, write_atomic
from zfnet_cli.model import ZFNet, count_parameters


def _check_options(cfg: TrainConfig) -> None:
    if cfg.eval_crops not in (1, 10):
        raise ValueError(f"eval_crops must be 1 (centre crop) or 10 (corners + centre, mirrored), "
                         f"got {cfg.eval_crops}")
    if cfg.amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got '{cfg.amp}'")
    if cfg.checkpoint and not cfg.eval_only:
        raise ValueError("checkpoint= names the model that eval_only=true evaluates; to continue "
                         "training from it use resume=")
    if cfg.eval_only and cfg.eval_test:
        raise ValueError("eval_test=true scores the test split after training; eval_only=true "
                         "scores the val split only: drop one of them")
    if cfg.eval_only and cfg.resume:
        raise ValueError("eval_only=true evaluates checkpoint=, it does not resume: use "
                         "checkpoint= instead of resume=")
    source = [k for k, given in (("arch", cfg.arch), ("weights", cfg.weights),
                                 ("trust_pickle", cfg.trust_pickle),
                                 ("preprocess", cfg.preprocess != loading.Preprocess())) if given]
    if source and not cfg.eval_only:
        raise ValueError(f"{', '.join(source)} say(s) how eval_only=true reads checkpoint=; "
                         f"training builds cfg.model and reads cfg.data")


def _batches(dataset, cfg: TrainConfig, preprocess, *, train: bool, epoch: int, d: Dist,
             workers: Optional[int], unreadable: Optional[UnreadableFiles] = None):
    # Evaluation batches are sized in crops, so ten-crop evaluation holds 10x fewer images.
    batch = cfg.batch_size if train else max(1, cfg.eval_batch_size // preprocess.crops)
    return dataset_batches(dataset, batch, preprocess, shuffle=train, seed=cfg.seed, epoch=epoch,
                           rank=d.rank, world=d.world_size, workers=workers, device=d.device,
                           max_steps=cfg.max_steps if train else None, unreadable=unreadable)


def weights_sha1(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _state_dict(model: torch.nn.Module) -> dict:
    """The unwrapped model's weights, in the default (contiguous) layout even when training
    with ``channels_last``, so checkpoints load and ``view`` the same either way."""
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _resolve(spec: str, cfg: TrainConfig, run_dir: Path, *, resume: bool = False) -> Path:
    """:func:`runs.resolve`; ``latest`` passes over this run's own, new folder, which
    ``<output_root>/train/latest`` already points at when ``run`` starts. For ``resume``
    ``latest`` is the newest run with a checkpoint, interrupted ones included; for a model to
    evaluate it is the newest finished run."""
    return runs.resolve(spec, cfg.output_root, "train", exclude=run_dir, finished=not resume,
                              key="resume" if resume else "checkpoint")


def _check_resume(state: dict, cfg: TrainConfig, num_classes: int) -> None:
    saved, now = state["model_cfg"], asdict(cfg.model)
    diff = [k for k in now if k != "num_classes" and saved.get(k) != now[k]]
    if diff or state["num_classes"] != num_classes:
        what = ", ".join(f"model.{k}: {saved.get(k)} in the checkpoint, {now[k]} now" for k in diff)
        if state["num_classes"] != num_classes:
            what += f"{'; ' if what else ''}classes: {state['num_classes']} in the checkpoint, {num_classes} now"
        raise checkpoint.CheckpointError(f"cannot resume: architecture differs ({what})")


def run(cfg: TrainConfig, run_dir: str | Path, *, dist_info: Dist | None = None,
        overrides: Sequence[str] = ()) -> dict:
    """Train ``cfg.model`` on ``cfg.data`` and write metrics, checkpoints and curves into ``run_dir``.

    Returns the final metrics (also ``run_dir/metrics.json``); every epoch's row goes to
    ``run_dir/metrics.jsonl``. ``overrides`` are recorded in checkpoints so ``resume=`` can
    rebuild the same config.
    """
    _check_options(cfg)
    d = dist_info or Dist(device=pick_device(cfg.device))
    run_dir = Path(run_dir)
    if cfg.eval_only:
        return evaluate_only(cfg, run_dir, dist_info=d, overrides=overrides)
    show = cfg.progress and d.main
    state = None
    if cfg.resume:
        source = _resolve(cfg.resume, cfg, run_dir, resume=True)
        state = checkpoint.load(source)
        if d.main:  # what a writer killed in that run left behind (.last.pt.tmp-PID)
            remove_stale_temporaries(source.parent)

    train_set = load_split(cfg.data, "train", progress=show)
    val_set = load_split(cfg.data, "val", progress=show)
    # Loaded now, not after training: a data set without a test split fails before any epoch.
    test_set = load_split(cfg.data, "test", progress=show) if cfg.eval_test else None
    classes = list(train_set.classes)
    num_classes = cfg.model.num_classes or len(classes)
    if num_classes < 2:
        raise ValueError(f"the {cfg.data.name} training data has {len(classes)} class "
                         f"({', '.join(classes)}): a classifier needs at least 2 (one class "
                         "folder per class under train/ and val/)")
    # DDP equals one process (README, Reliability): every rank takes its [rank::world] share of
    # the same global batch, and both drop an epoch's last partial batch, so the averaged
    # gradient is the one process's only when the batch splits evenly and is never partial.
    if d.enabled and cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size={cfg.batch_size} does not split evenly over {d.world_size} "
                         f"processes; use a multiple of {d.world_size}")
    if cfg.batch_size > len(train_set):
        raise ValueError(f"batch_size={cfg.batch_size} is larger than the {len(train_set)} "
                         "training images: every epoch would be empty (the last partial batch "
                         "is dropped); lower batch_size")
    if cfg.model.input_size != cfg.data.crop:
        raise ValueError(f"model.input_size={cfg.model.input_size} but data.crop={cfg.data.crop}: "
                         "the model must be built for the crop it is fed")
    # Unreadable files of each split: skipped, counted and named, fatal past data.max_broken.
    unreadable = {split: UnreadableFiles(len(ds), cfg.data.max_broken, split)
                  for split, ds in (("train", train_set), ("val", val_set), ("test", test_set))
                  if ds is not None}
    mean = state["mean"] if state else mean_image(cfg.data, train_set, progress=show,
                                                  unreadable=unreadable["train"])

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    model = ZFNet(cfg.model, num_classes).to(d.device)
    if state:
        _check_resume(state, cfg, num_classes)
        model.load_state_dict(state["model"])
    if cfg.channels_last:  # conv weights to NHWC; the same Parameter objects, so set before SGD
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.optim.milestones, cfg.optim.gamma)
    history: list[dict] = []
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
    start = state["epoch"] if state else 0
    # model: the real module (checkpoints, validation); net: what the training step calls,
    # DDP-wrapped under torchrun, then compiled (DDP first: see the module docstring).
    net = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda"
                                  else None) if d.enabled else model
    if cfg.compile:
        net = compile_model(net, cfg.compile_backend, cfg.compile_mode)

    pre_train = BatchPreprocess(mean.to(d.device), cfg.data.crop, train=True, flip=cfg.data.flip,
                                scale=cfg.data.scale)
    pre_eval = BatchPreprocess(mean.to(d.device), cfg.data.crop, train=False, scale=cfg.data.scale,
                               crops=cfg.eval_crops)
    ckpt_dir = run_dir / "checkpoints"
    best = max((h["val_top1"] for h in history), default=-1.0)
    if d.main:
        write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        print(f"zfnet train: {cfg.model.name} ({count_parameters(model) / 1e6:.2f}M parameters, "
              f"{num_classes} classes) on {cfg.data.name} ({len(train_set)} train / {len(val_set)} val"
              f" images), {d.world_size} process(es) on {d.device}; run folder {run_dir}")

    epochs = tqdm(range(start + 1, cfg.epochs + 1), desc="epochs", disable=not show,
                  initial=start, total=cfg.epochs, dynamic_ncols=True)
    for epoch in epochs:
        # Dropout's randomness for this epoch; data order and augmentation use epoch_generator.
        torch.manual_seed((cfg.seed * 1_000_003 + epoch) * 1009 + d.rank)
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        row = train_one_epoch(net, _batches(train_set, cfg, pre_train, train=True, epoch=epoch, d=d,
                                            workers=cfg.data.workers,
                                            unreadable=unreadable["train"]),
                              optimizer, renorm_rms=cfg.optim.renorm_rms if cfg.optim.renorm else None,
                              device=d.device, progress=show, desc=f"epoch {epoch}", amp=cfg.amp,
                              channels_last=cfg.channels_last)
        scheduler.step()
        val = evaluate(model, _batches(val_set, cfg, pre_eval, train=False, epoch=epoch, d=d,
                                       workers=cfg.data.workers, unreadable=unreadable["val"]),
                       device=d.device, progress=show, amp=cfg.amp, channels_last=cfg.channels_last)
        for split in ("train", "val"):  # the epoch's count and threshold over every rank's share
            sum_unreadable(unreadable[split], d)
        row = {"epoch": epoch, "lr": lr, **row, "val_loss": val["loss"], "val_top1": val["top1"],
               "val_top5": val["top5"], "val_top1_err": val["top1_err"],
               "val_top5_err": val["top5_err"], "val_crops": cfg.eval_crops,
               "seconds": time.perf_counter() - t0, "unreadable_train": len(unreadable["train"]),
               "unreadable_val": len(unreadable["val"])}
        history.append(row)
        epochs.set_postfix(val_top1=f"{val['top1']:.1f}")
        if d.main:
            ckpt = {"model": _state_dict(model), "model_cfg": asdict(cfg.model),
                    "num_classes": num_classes, "classes": classes,
                    "class_names": getattr(train_set, "class_names", None), "mean": mean.cpu(),
                    "epoch": epoch, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "history": history,
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                    "overrides": list(overrides), "config": asdict(cfg), "run_dir": str(run_dir)}
            checkpoint.save(ckpt, ckpt_dir / "last.pt")
            if epoch in cfg.keep_epochs:
                checkpoint.save(ckpt, ckpt_dir / f"epoch_{epoch:03d}.pt")
            if val["top1"] > best:
                best = val["top1"]
                checkpoint.save(ckpt, ckpt_dir / "best.pt")
            # The row only after the checkpoints: a kill in between leaves metrics.jsonl one
            # epoch behind last.pt (whose history has the row), never ahead of it.
            append_text(run_dir / "metrics.jsonl", json.dumps(row) + "\n")

    final = dict(history[-1]) if history else {}
    if test_set is not None:
        # The final model (not best.pt) with the final val pass's crops; every rank takes part.
        test = evaluate(model, _batches(test_set, cfg, pre_eval, train=False, epoch=cfg.epochs,
                                        d=d, workers=cfg.data.workers,
                                        unreadable=unreadable["test"]),
                        device=d.device, progress=show, desc="test", amp=cfg.amp,
                        channels_last=cfg.channels_last)
        final.update({"test_loss": test["loss"], "test_top1": test["top1"],
                      "test_top5": test["top5"], "test_top1_err": test["top1_err"],
                      "test_top5_err": test["top5_err"], "test_images": test["images"],
                      "test_crops": cfg.eval_crops})
        if d.main:
            print(f"zfnet train: final model on the {cfg.data.name} test split ({test['images']} "
                  f"images, {cfg.eval_crops} crop(s)): top-1 error {test['top1_err']:.2f}%, "
                  f"top-5 error {test['top5_err']:.2f}%")
    # A fingerprint of the weights on every rank: DDP keeps them identical, this shows it.
    mine = weights_sha1(model)
    fingerprints = [mine]
    if d.enabled:
        fingerprints = [None] * d.world_size
        torch.distributed.all_gather_object(fingerprints, mine)
        for bad in unreadable.values():  # each rank read (and skipped) its own share
            sum_unreadable(bad, d)
    best_top1 = max((h["val_top1"] for h in history), default=None)
    metrics = {"epochs": len(history), "final": final, "best_val_top1": best_top1,
               "best_val_top1_err": None if best_top1 is None else 100 - best_top1,
               "val_crops": cfg.eval_crops, "amp": cfg.amp, "channels_last": cfg.channels_last,
               "compile": cfg.compile,
               "parameters": count_parameters(model), "num_classes": num_classes,
               "world_size": d.world_size, "seed": cfg.seed, "rank_weights_sha1": fingerprints,
               "train_seconds": sum(h["seconds"] for h in history),
               "resumed_from": str(cfg.resume) if cfg.resume else None,
               "unreadable": {split: bad.summary() for split, bad in unreadable.items()}}
    if d.main:
        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        for bad in unreadable.values():
            for line in bad.lines("zfnet train: ", where=str(run_dir / "metrics.json")):
                print(line)
        if cfg.plot and history:
            from zfnet_cli.viz import plot_curves

            plot_curves(history, run_dir / "figures" / "curves.png", title=f"{cfg.model.name} on {cfg.data.name}")
    return metrics


def _trained_model(path: Path | str, cfg: TrainConfig, device: torch.device
                   ) -> tuple[dict, torch.nn.Module]:
    """A model's state and the model in eval mode on ``device``: the one place eval-only reads
    a model, from any source the other commands take (``arch``, ``weights``, ``trust_pickle``:
    :class:`~zfnet_cli.loading.ModelSource`). Ours, or a model brought (torchvision weights,
    pytorchcv zfnet, TorchScript, a factory: their state carries ``mean``, ``config`` and a
    per-channel ``input_scale``, which :func:`evaluate_only` honours)."""
    state, model = loading.read_model(path, arch=cfg.arch, weights=cfg.weights,
                                         trust_pickle=cfg.trust_pickle)
    return state, model.to(device).eval()


def _eval_data(cfg: TrainConfig, state: dict, overrides: Sequence[str]) -> DataConfig:
    """The data config an eval-only run uses: the checkpoint's own (``state["config"]["data"]``)
    with the user's ``data.KEY=VALUE`` overrides on top; ``data=NAME`` replaces it with the
    composed ``cfg.data``. Presets (``experiment=``) do not count as overriding the data."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    saved = (state.get("config") or {}).get("data")
    if saved is None or "data" in keys:
        return cfg.data
    known = {f.name for f in fields(DataConfig)}
    given = {k.split(".")[1] for k in keys if k.startswith("data.")} & known
    return DataConfig(**{k: getattr(cfg.data, k) if k in given else v
                         for k, v in saved.items() if k in known})


def evaluate_only(cfg: TrainConfig, run_dir: str | Path, *, dist_info: Dist | None = None,
                  overrides: Sequence[str] = ()) -> dict:
    """Evaluate a trained model on the val split; no training, no checkpoints.

    ``zfnet train eval_only=true checkpoint=RUN [eval_crops=10]`` lands here (``run`` hands
    over). The model, its mean image and its input scale come from ``cfg.checkpoint`` (a
    checkpoint file, a train run folder, or ``latest``: the newest train run that holds a
    checkpoint); ``cfg.model`` is not read. The data set is the checkpoint's own unless
    overridden (see :func:`_eval_data`). The val split is scored with the centre crop and, with
    ``eval_crops=10``, also with the ten crops, under ``cfg.amp`` / ``cfg.channels_last``
    (never compiled: one pass does not repay compilation).

    Returns the metrics, also written to ``run_dir/metrics.json``: per crop mode (``"1crop"``,
    ``"10crop"``) the val loss and top-1 / top-5 accuracy and error (%).
    """
    _check_options(cfg)
    d = dist_info or Dist(device=pick_device(cfg.device))
    run_dir = Path(run_dir)
    show = cfg.progress and d.main
    t0 = time.perf_counter()
    spec = cfg.checkpoint or "latest"
    path = spec if loading.is_factory(spec) else _resolve(spec, cfg, run_dir)
    state, model = _trained_model(path, cfg, d.device)
    data = _eval_data(cfg, state, overrides)
    loading.apply_preprocess(state, data, cfg.preprocess)  # preprocess.* overrides
    input_size, num_classes = state["model_cfg"]["input_size"], state["num_classes"]
    if data.crop != input_size:
        raise ValueError(f"data.crop={data.crop} but the checkpoint's model takes "
                         f"{input_size} px inputs")
    val_set = load_split(data, "val", progress=show)
    # Our checkpoints list their class ids; foreign weights (state["format"]) only names, so
    # for them the val data must have as many classes, in ImageNet's standard order.
    saved, foreign = list(state.get("classes") or []), state.get("format") is not None
    if (foreign and len(val_set.classes) != num_classes) or (
            not foreign and saved and list(val_set.classes) != saved):
        raise ValueError(f"the val data's {len(val_set.classes)} classes are not the "
                         f"{num_classes} the checkpoint was trained on (in that order)")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean = state["mean"].to(d.device)
    # foreign weights: a per-channel (3, 1, 1) scale; ours: the data config's one number
    scale = state["input_scale"] if state.get("input_scale") is not None else data.scale
    results = {}
    unreadable = UnreadableFiles(len(val_set), data.max_broken, "val")  # the one policy
    for crops in sorted({1, cfg.eval_crops}):
        pre = BatchPreprocess(mean, data.crop, train=False, scale=scale, crops=crops)
        batches = _batches(val_set, cfg, pre, train=False, epoch=0, d=d, workers=data.workers,
                           unreadable=unreadable)
        results[f"{crops}crop"] = evaluate(model, batches, device=d.device, progress=show,
                                           desc=f"val, {crops} crop(s)", amp=cfg.amp,
                                           channels_last=cfg.channels_last)
    metrics = {"eval_only": True, "checkpoint": str(path), "checkpoint_epoch": state.get("epoch"),
               "model": state["model_cfg"].get("name"), "parameters": count_parameters(model),
               "num_classes": num_classes, "data": data.name, "split": "val",
               "val_images": len(val_set), "world_size": d.world_size, "amp": cfg.amp,
               "channels_last": cfg.channels_last, "val": results,
               "seconds": time.perf_counter() - t0, "unreadable": {"val": unreadable.summary()}}
    if d.main:
        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        for line in unreadable.lines("zfnet train: ", where=str(run_dir / "metrics.json")):
            print(line)
        for mode, r in results.items():
            print(f"zfnet train (eval only): {path}, {data.name} val ({r['images']} images), "
                  f"{mode}: top-1 error {r['top1_err']:.2f}%, top-5 error {r['top5_err']:.2f}%")
    return metrics
