"""``zfnet train``: the paper's training recipe (§3) on any data config, on one CPU, one GPU, or
many under ``torchrun`` (DDP)."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from zfnet_cli import checkpoint
from zfnet_cli.data.sources import DataConfig, load_split, mean_image
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.engine import (Dist, InMemoryBatches, LoaderBatches, epoch_generator, evaluate,
                              pick_device, train_one_epoch)
from zfnet_cli.model import ModelConfig, ZFNet, count_parameters


@dataclass
class OptimConfig:
    """Paper §3: SGD, lr 1e-2, momentum 0.9; the lr was annealed by hand (UNSTATED), here a step
    schedule; weight decay is UNSTATED (AlexNet's 5e-4 by default)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [30, 50])  # epochs after which lr *= gamma
    gamma: float = 0.1
    renorm: bool = True  # paper §3: conv filters with RMS above renorm_rms are rescaled to it
    renorm_rms: float = 0.1


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 70  # paper §3: 70 epochs
    batch_size: int = 128  # global batch, split across DDP processes; paper §3: 128
    seed: int = 0
    device: str = "auto"  # auto: cuda when present, else cpu
    keep_epochs: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 30, 40, 64])  # Fig 4's
    resume: Optional[str] = None  # a checkpoint file, a run folder, or "latest"
    max_steps: Optional[int] = None  # cap on steps per epoch (smoke tests, benchmarks)
    eval_batch_size: int = 256
    output_root: str = "outputs"
    progress: bool = True  # tqdm bars (rank 0 only)
    plot: bool = True  # figures/curves.png at the end


def _batches(dataset, cfg: TrainConfig, preprocess, *, train: bool, epoch: int, d: Dist):
    batch = cfg.batch_size if train else cfg.eval_batch_size
    if hasattr(dataset, "images"):
        return InMemoryBatches(dataset.images, dataset.labels, batch, preprocess, shuffle=train,
                               generator=epoch_generator(cfg.seed, epoch), rank=d.rank,
                               world=d.world_size, drop_last=train and d.enabled, device=d.device,
                               max_steps=cfg.max_steps if train else None)
    return LoaderBatches(dataset, batch, preprocess, shuffle=train, seed=cfg.seed, epoch=epoch,
                         rank=d.rank, world=d.world_size, workers=cfg.data.workers,
                         device=d.device, max_steps=cfg.max_steps if train else None)


def weights_sha1(model: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
    d = dist_info or Dist(device=pick_device(cfg.device))
    run_dir = Path(run_dir)
    show = cfg.progress and d.main
    state = None
    if cfg.resume:
        state = checkpoint.load(checkpoint.resolve(cfg.resume, cfg.output_root))

    train_set = load_split(cfg.data, "train", progress=show)
    val_set = load_split(cfg.data, "val", progress=show)
    classes = list(train_set.classes)
    num_classes = cfg.model.num_classes or len(classes)
    if cfg.model.input_size != cfg.data.crop:
        raise ValueError(f"model.input_size={cfg.model.input_size} but data.crop={cfg.data.crop}: "
                         "the model must be built for the crop it is fed")
    mean = state["mean"] if state else mean_image(cfg.data, train_set, progress=show)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
    model = ZFNet(cfg.model, num_classes).to(d.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.optim.milestones, cfg.optim.gamma)
    history: list[dict] = []
    if state:
        _check_resume(state, cfg, num_classes)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
    start = state["epoch"] if state else 0
    net = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda"
                                  else None) if d.enabled else model

    pre_train = BatchPreprocess(mean.to(d.device), cfg.data.crop, train=True, flip=cfg.data.flip,
                                scale=cfg.data.scale)
    pre_eval = BatchPreprocess(mean.to(d.device), cfg.data.crop, train=False, scale=cfg.data.scale)
    ckpt_dir = run_dir / "checkpoints"
    best = max((h["val_top1"] for h in history), default=-1.0)
    if d.main:
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
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
        row = train_one_epoch(net, _batches(train_set, cfg, pre_train, train=True, epoch=epoch, d=d),
                              optimizer, renorm_rms=cfg.optim.renorm_rms if cfg.optim.renorm else None,
                              device=d.device, progress=show, desc=f"epoch {epoch}")
        scheduler.step()
        val = evaluate(model, _batches(val_set, cfg, pre_eval, train=False, epoch=epoch, d=d),
                       device=d.device, progress=show)
        row = {"epoch": epoch, "lr": lr, **row, "val_loss": val["loss"], "val_top1": val["top1"],
               "val_top5": val["top5"], "seconds": time.perf_counter() - t0}
        history.append(row)
        epochs.set_postfix(val_top1=f"{val['top1']:.1f}")
        if d.main:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            ckpt = {"model": model.state_dict(), "model_cfg": asdict(cfg.model),
                    "num_classes": num_classes, "classes": classes, "mean": mean.cpu(),
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

    # A fingerprint of the weights on every rank: DDP keeps them identical, this shows it.
    mine = weights_sha1(model)
    fingerprints = [mine]
    if d.enabled:
        fingerprints = [None] * d.world_size
        torch.distributed.all_gather_object(fingerprints, mine)
    final = dict(history[-1]) if history else {}
    metrics = {"epochs": len(history), "final": final,
               "best_val_top1": max((h["val_top1"] for h in history), default=None),
               "parameters": count_parameters(model), "num_classes": num_classes,
               "world_size": d.world_size, "seed": cfg.seed, "rank_weights_sha1": fingerprints,
               "train_seconds": sum(h["seconds"] for h in history),
               "resumed_from": str(cfg.resume) if cfg.resume else None}
    if d.main:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if cfg.plot and history:
            from zfnet_cli.viz import plot_curves

            plot_curves(history, run_dir / "figures" / "curves.png", title=f"{cfg.model.name} on {cfg.data.name}")
    return metrics
