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
from zfnet_cli.schemas import AMP_MODES

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
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"device={spec} is not a device: expected auto, cpu, cuda, cuda:N or "
                         "mps") from None
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


def sum_unreadable(unreadable, d: Dist) -> None:
    """Under DDP each rank reads (and skips) its own share of a split's files, so its
    :class:`~zfnet_cli.data.images.UnreadableFiles` holds its share only: gather every rank's,
    so that each holds the same list over all of them (in rank order), and apply the threshold
    to that. Every rank calls this at the same point, so all of them stop alike (one line each,
    the same) or go on. Nothing to do in one process."""
    if not d.enabled:
        return
    shares = [None] * d.world_size
    dist.all_gather_object(shares, unreadable.files)
    unreadable.files = {}
    for files in shares:
        unreadable.merge(files)
    unreadable.check()


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
    same global batch sees (what makes the 2-rank test equal a 1-process run). A rank reads and
    preprocesses only its own images, so over a memory-mapped pack each machine pages in only
    its share.
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
        for x, y, _ in self.batches_with_indices():
            yield x, y

    def batches_with_indices(self):
        """``(x, y, indices)``: preprocessed inputs, labels, and the data-set index of each."""
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for step in range(len(self)):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            mine = idx[self.rank::self.world]
            y = self.labels[mine].to(self.device, non_blocking=True)
            if self.preprocess is None:  # the stored uint8 images
                yield self.images[mine].to(self.device, non_blocking=True), y, mine
                continue
            if not hasattr(self.preprocess, "draw"):  # any callable: the whole batch, then slice
                x = self.preprocess(self.images[idx].to(self.device, non_blocking=True),
                                    generator=self.generator)
                yield x[self.rank::self.world], y, mine
                continue
            # Only this rank's images are read (from a memory-mapped pack, each machine touches
            # its own part); the global batch's draws are made as one process would make them.
            x = self.images[mine].to(self.device, non_blocking=True)
            draws = None
            if getattr(self.preprocess, "train", False):
                full = self.preprocess.draw(len(idx), x.shape[-2], x.shape[-1], self.generator)
                draws = tuple(d[self.rank::self.world] for d in full)
            yield self.preprocess(x, draws=draws), y, mine  # (B / world, 3, crop, crop) float


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
    workers), preprocessed on the device with a per-(seed, epoch, rank) generator. Unreadable
    files are skipped and recorded in ``unreadable`` (see
    :func:`zfnet_cli.data.images.read_batches`; ``None``: strict). ``workers=None``: what the
    machine has. After iterating, ``indices`` holds each yielded batch's data-set indices."""

    def __init__(self, dataset, batch_size: int, preprocess: Preprocess, *, shuffle: bool,
                 seed: int = 0, epoch: int = 0, rank: int = 0, world: int = 1,
                 workers: Optional[int] = 2, device=None, max_steps: int | None = None,
                 unreadable=None, first: Optional[int] = None):
        self.dataset, self.unreadable, self.workers, self.world = dataset, unreadable, workers, world
        n = len(dataset) if first is None else min(first, len(dataset))
        self.sampler = ShardSampler(n, shuffle=shuffle, seed=seed, epoch=epoch,
                                    rank=rank, world=world, even=shuffle)
        self.local, self.drop_last = max(1, batch_size // world), shuffle
        self.pin = device is not None and torch.device(device).type == "cuda"
        self.generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1009 + rank)
        self.preprocess, self.device, self.max_steps = preprocess, device, max_steps

    def __len__(self) -> int:
        n = len(self.sampler)
        steps = n // self.local if self.drop_last else math.ceil(n / self.local)
        return min(steps, self.max_steps) if self.max_steps else steps

    def batches_with_indices(self):
        """``(x, y, indices)``: preprocessed inputs, labels, and the data-set index of each."""
        from zfnet_cli.data.images import read_batches

        raw = read_batches(self.dataset, self.local, self.unreadable, sampler=self.sampler,
                           workers=self.workers, drop_last=self.drop_last, pin_memory=self.pin,
                           # ranks must take the same number of training steps only
                           skip_empty=self.world == 1 or not self.drop_last)
        for step, (x, y, idx) in enumerate(raw):
            if step >= len(self):
                break
            x = x.to(self.device, non_blocking=True)
            if self.preprocess is not None:
                x = self.preprocess(x, generator=self.generator)
            yield x, y.to(self.device, non_blocking=True), idx

    def __iter__(self):
        for x, y, _ in self.batches_with_indices():
            yield x, y


def dataset_batches(dataset, batch_size: int, preprocess: Optional[Preprocess], *,
                    shuffle: bool = False, seed: int = 0, epoch: int = 0, rank: int = 0,
                    world: int = 1, workers: Optional[int] = 2, device=None,
                    max_steps: Optional[int] = None, first: Optional[int] = None,
                    unreadable=None) -> InMemoryBatches | LoaderBatches:
    """The batches of ``dataset``, whichever kind it is: one held in memory (``images`` and
    ``labels`` tensors: :class:`InMemoryBatches`, sliced with no DataLoader) or one read from
    files (:class:`LoaderBatches`: DataLoader workers, unreadable files skipped and recorded in
    ``unreadable``, ``None``: strict).

    Iterating yields ``(x, y)``; ``batches_with_indices()`` yields ``(x, y, indices)`` with the
    data-set index of each image (carried, not counted: skipped files leave gaps).

    Args:
        dataset: an in-memory data set or one that reads files (see :mod:`zfnet_cli.data`).
        batch_size (int): the global batch; each of ``world`` ranks gets its share.
        preprocess (callable, optional): uint8 batch -> model input on ``device``; ``None``:
            the stored uint8 images.
        shuffle (bool, optional): a (``seed``, ``epoch``) permutation, incomplete last batch
            dropped (training); else in order, every image once. Default: ``False``.
        seed, epoch, rank, world (int, optional): the order's seed and epoch, this rank and
            the number of ranks. Default: 0, 0, 0, 1.
        workers (int, optional): DataLoader worker processes for file-backed data (``None``:
            what the machine has). Default: 2.
        device (optional): where the batches go. Default: the CPU.
        max_steps (int, optional): stop after this many batches.
        first (int, optional): only the first ``first`` images of ``dataset``.
        unreadable (UnreadableFiles, optional): where skipped files are recorded.

    Returns:
        InMemoryBatches or LoaderBatches.
    """
    if hasattr(dataset, "images"):
        images, labels = dataset.images, dataset.labels
        if first is not None:
            images, labels = images[:first], labels[:first]  # views, not copies
        return InMemoryBatches(images, labels, batch_size, preprocess, shuffle=shuffle,
                               generator=epoch_generator(seed, epoch), rank=rank, world=world,
                               drop_last=shuffle, device=device, max_steps=max_steps)
    return LoaderBatches(dataset, batch_size, preprocess, shuffle=shuffle, seed=seed, epoch=epoch,
                         rank=rank, world=world, workers=workers, device=device,
                         max_steps=max_steps, unreadable=unreadable, first=first)


# ---------------------------------------------------------------- speed options


def autocast(device: torch.device | str, amp: str = "none"):
    """The mixed-precision context of ``amp``: ``"bf16"`` runs convs and matmuls in bfloat16
    under ``torch.autocast`` (CUDA or CPU), ``"none"`` changes nothing.

    bfloat16 keeps float32's exponent range, so no loss scaling is needed (fp16 would need a
    GradScaler, which is why it is not offered). Weights, optimiser state and the loss stay
    float32 (callers compute the loss on ``logits.float()``).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got '{amp}'")
    device_type = torch.device(device).type if device is not None else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp == "bf16")


def compile_model(model: nn.Module, backend: str = "inductor", mode: Optional[str] = None) -> nn.Module:
    """``torch.compile(model)`` with static shapes.

    Every training step has the batch's shape except an epoch's last, partial batch, which then
    compiles once more (cached from the next epoch on) instead of the whole step recompiling for
    symbolic shapes. The returned wrapper shares ``model``'s parameters; its own state dict
    prefixes them with ``_orig_mod.``, so save the unwrapped module's. Wrap DDP first and compile
    the DDP module (``compile_model(DDP(model))``): PyTorch's DDPOptimizer then splits the graph
    at the gradient buckets so all-reduce still overlaps the backward pass.

    Args:
        model: the module (or DDP module) to compile.
        backend: ``"inductor"`` (generated kernels; the first steps pay tens of seconds of
            compilation), or ``"aot_eager"`` / ``"eager"``, which only trace (tests).
        mode: inductor's mode: ``None`` (default), ``"reduce-overhead"`` (CUDA graphs),
            ``"max-autotune"``.
    """
    return torch.compile(model, backend=backend, mode=mode, dynamic=False)


def _to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


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
                    desc: str = "train", amp: str = "none", channels_last: bool = False,
                    postfix_every: int = 20) -> dict[str, float]:
    """One pass of SGD over ``batches`` (already preprocessed float batches).

    After every optimiser step, conv filters with RMS above ``renorm_rms`` are renormalised
    (paper §3); ``None`` switches that off. ``model`` may be wrapped (DDP, ``torch.compile``):
    the renormalisation walks ``model.modules()``, which reaches the real ``Conv2d``s inside the
    wrappers, so it rescales the parameters the optimiser updates.

    ``amp="bf16"`` runs the forward pass under :func:`autocast` (the loss is computed in
    float32); ``channels_last`` hands the batches over in NHWC layout (the model should have
    been converted with ``model.to(memory_format=torch.channels_last)``). The running loss and
    top-1 stay on the device, so a GPU is not made to wait for the host each step; the progress
    bar reads them every ``postfix_every`` steps. Returns the mean loss, top-1 accuracy (%), the
    number of images (all ranks) and images/s.
    """
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    start = time.perf_counter()
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for step, (x, y) in enumerate(bar):
        x = _to_memory_format(x, channels_last)
        with autocast(x.device, amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)  # float32 loss, also under bf16 autocast
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if renorm_rms is not None:
            renormalize_filters(model, renorm_rms)
        loss_sum = loss_sum.to(loss.device) + loss.detach() * len(y)
        correct = correct.to(y.device) + logits.detach().argmax(dim=1).eq(y).sum()
        seen += len(y)
        if progress and step % postfix_every == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}",
                            top1=f"{100 * correct.item() / seen:.1f}")
    loss_sum, correct, seen = _all_reduce([loss_sum.item(), correct.item(), seen], device)
    seconds = time.perf_counter() - start  # after .item(): the device has finished the epoch
    return {"train_loss": loss_sum / max(seen, 1), "train_top1": 100 * correct / max(seen, 1),
            "train_images": int(seen), "images_per_s": seen / seconds if seconds > 0 else 0.0}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, *, device=None, progress: bool = False,
             desc: str = "val", amp: str = "none", channels_last: bool = False) -> dict[str, float]:
    """Mean loss and top-1 / top-5 accuracy and error (%) over ``batches``, summed over all ranks.

    Batches of (B, 3, h, w) are scored one view per image. Batches of (B, V, 3, h, w), e.g.
    :func:`~zfnet_cli.data.transforms.ten_crop`'s ten views, are scored by the mean of the V
    views' softmax probabilities (the AlexNet convention; the paper's test-time crops are
    UNSTATED); top-k ranks that mean and the loss is its negative log-likelihood, so with V = 1
    both reduce to plain cross-entropy and top-k. The V views of a batch go through the model
    as one (B * V, 3, h, w) forward pass: size batches in images // V.

    Args:
        model: the network, put in eval mode here.
        batches: iterable of ``(x, y)``: float inputs as above, int64 (B,) labels.
        device: where the cross-rank sums are made (DDP).
        amp, channels_last: as in :func:`train_one_epoch`.

    Returns:
        ``{"loss", "top1", "top5", "top1_err", "top5_err", "images"}``, accuracies and errors in %.
    """
    model.eval()
    loss_sum, c1, c5, seen = 0.0, 0, 0, 0
    for x, y in tqdm(batches, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        views = x.shape[1] if x.dim() == 5 else 1
        flat = _to_memory_format(x.flatten(0, 1) if x.dim() == 5 else x, channels_last)
        with autocast(flat.device, amp):
            logits = model(flat)
        logits = logits.float().view(len(y), views, -1)  # (B, V, classes)
        if views == 1:
            scores = logits[:, 0]
            loss_sum += F.cross_entropy(scores, y, reduction="sum").item()
        else:
            scores = logits.softmax(dim=-1).mean(dim=1)  # (B, classes) mean probability
            loss_sum += F.nll_loss(scores.clamp_min(1e-30).log(), y, reduction="sum").item()
        a1, a5 = accuracy(scores, y, (1, 5))
        c1, c5, seen = c1 + a1, c5 + a5, seen + len(y)
    loss_sum, c1, c5, seen = _all_reduce([loss_sum, c1, c5, seen], device)
    n = max(seen, 1)
    top1, top5 = 100 * c1 / n, 100 * c5 / n
    return {"loss": loss_sum / n, "top1": top1, "top5": top5, "top1_err": 100 - top1,
            "top5_err": 100 - top5, "images": int(seen)}
