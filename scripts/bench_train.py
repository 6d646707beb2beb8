"""Benchmark: training images/s of `zfnet train`'s loop against a bare PyTorch loop.

Same model (the small preset, or --model), batch, optimiser, filter renormalisation and
in-memory data; the runs alternate (ours, bare, ours, bare, ...) and the median of each is
compared, so machine noise hits both. Goal: ours >= 0.95x bare (the engine may cost at most 5%).

    python scripts/bench_train.py [--steps 30] [--repeats 3] [--batch 64] [--size 128]

Writes outputs/bench/<date_time>/bench_train.json and prints a one-line summary.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from _bench import run_folder, write_results
from zfnet_cli.config import compose
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.engine import InMemoryBatches, train_one_epoch
from zfnet_cli.model import ZFNet, renormalize_filters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=None, help="image side (default: the data config's crop)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--output-root", default="outputs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=None, help="folder for the JSON (default: a new outputs/bench run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = compose("train", [f"model={args.model}"] + ([f"data.crop={args.size}", f"data.image_size={args.size}"]
                                                       if args.size else []))
    size, n = cfg.data.crop, args.batch * args.steps
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, args.classes, (n,), generator=g)
    mean = images.double().mean(0).float()
    pre = BatchPreprocess(mean, size, train=True, flip=True)
    # the bare loop gets its float batches ready-made: no conversion, no flips, no metrics
    floats = [((images[i:i + args.batch].float() - mean), labels[i:i + args.batch])
              for i in range(0, n, args.batch)]

    def fresh():
        torch.manual_seed(0)
        model = ZFNet(cfg.model, args.classes)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                              weight_decay=cfg.optim.weight_decay)
        return model, opt

    def ours() -> float:
        model, opt = fresh()
        batches = InMemoryBatches(images, labels, args.batch, pre, shuffle=True,
                                  generator=torch.Generator().manual_seed(1))
        t = time.perf_counter()
        train_one_epoch(model, batches, opt, renorm_rms=cfg.optim.renorm_rms)
        return n / (time.perf_counter() - t)

    def bare() -> float:
        model, opt = fresh()
        model.train()
        t = time.perf_counter()
        for x, y in floats:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            renormalize_filters(model, cfg.optim.renorm_rms)
        return n / (time.perf_counter() - t)

    ours(), bare()  # warm-up (allocator, kernels)
    res = {"ours": [], "bare": []}
    for _ in range(args.repeats):
        res["ours"].append(ours())
        res["bare"].append(bare())
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {"benchmark": "train loop vs bare PyTorch loop", "model": args.model, "image_size": size,
           "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
           "threads": torch.get_num_threads(), "images_per_s": res, "median_images_per_s": med,
           "ratio_ours_over_bare": med["ours"] / med["bare"], "goal": ">= 0.95"}
    path = write_results(run_folder(args.out, args.output_root), "bench_train", out)
    print(f"train loop: ours {med['ours']:.1f} img/s, bare {med['bare']:.1f} img/s, "
          f"ratio {out['ratio_ours_over_bare']:.3f} (goal >= 0.95) -> {path}")


if __name__ == "__main__":
    main()
