"""The training loop, in the style of torchvision's references: ``train_one_epoch``,
``evaluate``, ``accuracy(output, target, topk=(1, 5))``, plus the DDP set-up and batching.

Randomness is derived, at each epoch start, from ``(seed, epoch, rank)``: the data order and the
augmentation draw from a ``torch.Generator`` seeded with ``(seed, epoch)`` and dropout from the
global RNG seeded with ``(seed, epoch, rank)``. A run resumed at an epoch boundary therefore
continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from zfnet_cli.model import renormalize_filters

Preprocess = Callable[..., torch.Tensor]  # (uint8 batch, generator) -> float batch


# ---------------------------------------------------------------- distributed set-up

@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec} asked for, but CUDA is not available here (use device=cpu)")
    return device


def setup_distributed(device: str = "auto") -> Dist:
    """Initialise DDP when launched by ``torchrun`` (WORLD_SIZE > 1): NCCL on GPUs, gloo on
    the CPU; each process takes GPU ``LOCAL_RANK``. A plain launch returns a 1-process Dist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return Dist(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The data-order/augmentation generator of one epoch; identical on every rank."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


# ---------------------------------------------------------------- batching

class InMemoryBatches:
    """Global batches over in-memory uint8 tensors, with no DataLoader.

    Every rank draws the same permutation and the same augmentation for the whole global batch
    and keeps its slice ``[rank::world]``, so N processes see exactly what one process with the
    same global batch sees (what makes the 2-rank test equal a 1-process run). Preprocessing the
    whole global batch on every rank costs little for the small images this path serves.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 preprocess: Preprocess, *, shuffle: bool, generator: torch.Generator | None = None,
                 rank: int = 0, world: int = 1, drop_last: bool = False, device=None,
                 max_steps: int | None = None):
        self.images, self.labels = images, labels
        self.batch_size, self.preprocess, self.shuffle = batch_size, preprocess, shuffle
        self.generator, self.rank, self.world = generator, rank, world
        self.drop_last, self.device, self.max_steps = drop_last, device, max_steps

    def __len__(self) -> int:
        n = len(self.labels)
        steps = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return min(steps, self.max_steps) if self.max_steps else steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for step in range(len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            x = self.images[idx].to(self.device, non_blocking=True)
            x = self.preprocess(x, generator=self.generator)  # (B, 3, crop, crop) float
            y = self.labels[idx].to(self.device, non_blocking=True)
            yield x[self.rank::self.world], y[self.rank::self.world]


class ShardSampler(torch.utils.data.Sampler):
    """Indices for one rank: a (seed, epoch) permutation (or the identity), rank-strided.
    For training every rank gets the same count (DDP needs equal step counts); for evaluation
    (``even=False``) nothing is padded or dropped, so summed metrics are exact."""

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, rank: int = 0,
                 world: int = 1, even: bool = True):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, epoch
        self.rank, self.world, self.even = rank, world, even

    def _indices(self) -> list[int]:
        order = torch.randperm(self.n, generator=epoch_generator(self.seed, self.epoch)) \
            if self.shuffle else torch.arange(self.n)
        if self.even:
            order = order[: self.n // self.world * self.world]
        return order[self.rank::self.world].tolist()

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


class LoaderBatches:
    """Per-rank batches from a file-backed dataset via a DataLoader (uint8 tensors decoded in
    workers), preprocessed on the device with a per-(seed, epoch, rank) generator."""

    def __init__(self, dataset, batch_size: int, preprocess: Preprocess, *, shuffle: bool,
                 seed: int = 0, epoch: int = 0, rank: int = 0, world: int = 1, workers: int = 2,
                 device=None, max_steps: int | None = None):
        self.sampler = ShardSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch,
                                    rank=rank, world=world, even=shuffle)
        local = max(1, batch_size // world)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=local, sampler=self.sampler, num_workers=workers,
            pin_memory=device is not None and torch.device(device).type == "cuda",
            drop_last=shuffle, persistent_workers=False)
        self.generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1009 + rank)
        self.preprocess, self.device, self.max_steps = preprocess, device, max_steps

    def __len__(self) -> int:
        return min(len(self.loader), self.max_steps) if self.max_steps else len(self.loader)

    def __iter__(self):
        for step, (x, y) in enumerate(self.loader):
            if step >= len(self):
                break
            x = x.to(self.device, non_blocking=True)
            yield self.preprocess(x, generator=self.generator), y.to(self.device, non_blocking=True)


# ---------------------------------------------------------------- one epoch

def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k outputs, for each k (k capped at the
    number of classes)."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices  # (B, maxk)
    hit = pred.eq(target[:, None])
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in topk]


def _all_reduce(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def train_one_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, *,
                    renorm_rms: Optional[float] = 0.1, device=None, progress: bool = False,
                    desc: str = "train") -> dict[str, float]:
    """One pass of SGD over ``batches`` (already preprocessed float batches).

    After every optimiser step, conv filters with RMS above ``renorm_rms`` are renormalised
    (paper §3); ``None`` switches that off. Returns the mean loss, top-1 accuracy (%), the number
    of images (all ranks) and images/s.
    """
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for x, y in bar:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if renorm_rms is not None:
            renormalize_filters(model, renorm_rms)
        loss_sum += loss.item() * len(y)
        correct += accuracy(logits.detach(), y, (1,))[0]
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", top1=f"{100 * correct / seen:.1f}")
    loss_sum, correct, seen = _all_reduce([loss_sum, correct, seen], device)
    seconds = time.perf_counter() - start
    return {"train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1),
            "train_images": int(seen), "images_per_s": seen / seconds if seconds > 0 else 0.0}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, device=None, progress: bool = False,
             desc: str = "val") -> dict[str, float]:
    """Mean loss and top-1 / top-5 accuracy (%) over ``batches``, summed over all ranks."""
    model.eval()
    loss_sum, c1, c5, seen = 0.0, 0, 0, 0
    for x, y in tqdm(batches, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        a1, a5 = accuracy(logits, y, (1, 5))
        c1, c5, seen = c1 + a1, c5 + a5, seen + len(y)
    loss_sum, c1, c5, seen = _all_reduce([loss_sum, c1, c5, seen], device)
    seen = max(seen, 1)
    return {"loss": loss_sum / seen, "top1": 100 * c1 / seen, "top5": 100 * c5 / seen}
