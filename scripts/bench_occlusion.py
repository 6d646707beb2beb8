"""Benchmark: occlusion positions/s, batched (zfnet_cli.occlusion.occlude) against a
one-position-at-a-time loop, for the paper-size ZFNet at 224x224 and the small model.

    python scripts/bench_occlusion.py [--positions 64] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from _bench import run_folder, write_results
from zfnet_cli.config import compose
from zfnet_cli.model import ZFNet
from zfnet_cli.occlusion import occlude, occluder_positions


def bench(model_name: str, positions: int = 64, batch: int = 64, repeats: int = 3) -> dict:
    cfg = compose("train", [f"model={model_name}"] + (["data.image_size=224", "data.crop=224"] if model_name == "zfnet" else []))
    size = cfg.model.input_size
    torch.manual_seed(0)
    model = ZFNet(cfg.model, 10).eval()
    image = torch.randn(3, size, size) * 60
    occ = max(1, size // 4)
    # a stride that gives about `positions` positions
    stride = max(1, (size - occ) // max(1, round(positions ** 0.5) - 1))
    n = occluder_positions(size, size, occ, stride).shape[0]

    def batched() -> float:
        t = time.perf_counter()
        # method="full": this benchmark is about batching the full forward pass; the
        # incremental path is measured against Captum by scripts/bench_incremental.py
        occlude(model, image, size=occ, stride=stride, batch_size=batch, method="full")
        return n / (time.perf_counter() - t)

    @torch.no_grad()
    def one_at_a_time() -> float:
        t = time.perf_counter()
        for y, x in occluder_positions(size, size, occ, stride).tolist():
            z = image.clone()
            z[:, y:y + occ, x:x + occ] = 0
            F.softmax(model(z[None]), dim=1)
        return n / (time.perf_counter() - t)

    batched(), one_at_a_time()
    res = {"batched": [], "one_at_a_time": []}
    for _ in range(repeats):
        res["batched"].append(batched())
        res["one_at_a_time"].append(one_at_a_time())
    med = {k: statistics.median(v) for k, v in res.items()}
    return {"model": model_name, "image_size": size, "positions": n, "occluder": occ,
            "stride": stride, "batch": batch, "threads": torch.get_num_threads(),
            "positions_per_second": res, "median_positions_per_second": med,
            "speedup_batched": med["batched"] / med["one_at_a_time"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["small", "zfnet"])
    ap.add_argument("--positions", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="folder for the JSON (default: a new outputs/bench run)")
    args = ap.parse_args()
    run = run_folder(args.out)
    for name in args.models:
        out = bench(name, args.positions, args.batch, args.repeats)
        write_results(run, f"bench_occlusion_{name}", out)
        m = out["median_positions_per_second"]
        print(f"occlusion ({name}, {out['image_size']}px, {out['positions']} positions): batched "
              f"{m['batched']:.1f} pos/s, one at a time {m['one_at_a_time']:.1f} pos/s, "
              f"speedup {out['speedup_batched']:.2f}x")


if __name__ == "__main__":
    main()
