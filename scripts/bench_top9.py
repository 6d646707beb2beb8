"""Benchmark: images/s of Fig 2's top-9 scan over all five conv layers against
plain inference (the model's forward) over the same images, and projections/s of the deconvnet;
then the same on a torchvision resnet18 at 224 px (random weights): the scan over its eight
blocks through forward taps against plain inference, and projections/s of the graph
deconvnet (zfnet_cli.deconv_graph) beside the plain-stack figure.

Same model, batch and in-memory images; the runs alternate and medians are compared.
Goal: scan >= 0.8x plain inference (both models).

    python scripts/bench_top9.py [--model small] [--images 512] [--batch 64] [--repeats 3]
                                 [--any-arch resnet18] [--any-images 128] [--any-batch 32]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from _bench import run_folder, write_results
from zfnet_cli.config import compose
from zfnet_cli.deconv import Deconvnet, Request
from zfnet_cli.deconv_graph import GraphDeconvnet
from zfnet_cli.model import ZFNet
from zfnet_cli.top9 import scan_top9


def _alternate(runs: dict, repeats: int) -> tuple[dict, dict]:
    """Each run's rate in ``repeats`` rounds that alternate them (inference and scan warmed up
    once first), so a change of machine load touches them all alike; and the medians."""
    runs["inference"](), runs["scan"]()  # warm-up
    rates: dict = {k: [] for k in runs}
    for _ in range(repeats):
        for k, run in runs.items():
            rates[k].append(run())
    return rates, {k: statistics.median(v) for k, v in rates.items()}


def bench(model_name: str = "small", n_images: int = 512, batch: int = 64, repeats: int = 3,
          projections: int = 64, size: int | None = None, device: str = "cpu",
          classes: int = 10) -> dict:
    """Medians of ``repeats`` alternating runs on ``device``; the images sit on it already
    (a GPU run times the scan, not the copy to the GPU)."""
    cfg = compose("train", [f"model={model_name}"] + ([f"data.crop={size}", f"data.image_size={size}"]
                                                     if size else []))
    size = cfg.model.input_size
    device = torch.device(device)
    torch.manual_seed(0)
    model = ZFNet(cfg.model, classes).eval().to(device)
    images = torch.randn(n_images, 3, size, size) * 60  # roughly the paper's input range
    batches = list(images.to(device).split(batch))
    deconv = Deconvnet(model)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    @torch.no_grad()
    def inference() -> float:
        sync()
        t = time.perf_counter()
        for x in batches:
            model(x)
        sync()
        return n_images / (time.perf_counter() - t)

    def scan() -> float:
        sync()
        t = time.perf_counter()
        scan_top9(deconv, batches, deconv.layers, k=9)  # returns CPU tensors: synchronised
        return n_images / (time.perf_counter() - t)

    def project() -> float:
        reqs = [Request(i % len(batches[0]), deconv.layers[i % 5], i % 8, (0, 0))
                for i in range(projections)]
        sync()
        t = time.perf_counter()
        deconv.project(batches[0], reqs, batch_size=batch)
        sync()
        return projections / (time.perf_counter() - t)

    res, med = _alternate({"inference": inference, "scan": scan, "project": project}, repeats)
    return {"benchmark": "top-9 scan (all 5 layers) vs plain inference; deconv projections",
            "model": model_name, "image_size": size, "images": n_images, "batch": batch,
            "device": str(device), "classes": classes,
            "threads": torch.get_num_threads(), "per_second": res, "median_per_second": med,
            "ratio_scan_over_inference": med["scan"] / med["inference"], "goal": ">= 0.8"}


def bench_any(arch: str = "resnet18", n_images: int = 128, batch: int = 32, repeats: int = 3,
              projections: int = 32, size: int = 224) -> dict:
    """The top-9 scan over every block of a torchvision ``arch`` (random weights) against plain
    inference, and projections/s of the graph deconvnet (one activation each, mixed blocks)."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().eval()
    deconv = GraphDeconvnet(model)
    images = torch.randn(n_images, 3, size, size)
    batches = list(images.split(batch))

    @torch.no_grad()
    def inference() -> float:
        t = time.perf_counter()
        for x in batches:
            model(x)
        return n_images / (time.perf_counter() - t)

    def scan() -> float:
        t = time.perf_counter()
        scan_top9(deconv, batches, deconv.layers, k=9)
        return n_images / (time.perf_counter() - t)

    def project() -> float:
        reqs = [Request(i % batch, deconv.layers[i % len(deconv.layers)], i % 64, (0, 0))
                for i in range(projections)]
        t = time.perf_counter()
        deconv.project(batches[0], reqs, batch_size=batch)
        return projections / (time.perf_counter() - t)

    res, med = _alternate({"inference": inference, "scan": scan, "project": project}, repeats)
    return {"benchmark": f"top-9 scan over the {len(deconv.layers)} blocks of {arch} vs plain "
                         f"inference; graph-deconvnet projections",
            "model": arch, "layers": deconv.layers, "image_size": size, "images": n_images,
            "batch": batch, "threads": torch.get_num_threads(), "per_second": res,
            "median_per_second": med, "ratio_scan_over_inference": med["scan"] / med["inference"],
            "goal": ">= 0.8"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--any-arch", default="resnet18", help="torchvision model for the any-network "
                    "part ('none' to skip)")
    ap.add_argument("--any-images", type=int, default=128)
    ap.add_argument("--any-batch", type=int, default=32)
    ap.add_argument("--any-size", type=int, default=224)
    ap.add_argument("--out", default=None, help="folder for the JSON (default: a new outputs/bench run)")
    args = ap.parse_args()
    out = bench(args.model, args.images, args.batch, args.repeats)
    run = run_folder(args.out)
    write_results(run, f"bench_top9_{args.model}", out)
    m = out["median_per_second"]
    print(f"top-9 ({args.model}): scan {m['scan']:.0f} img/s, inference {m['inference']:.0f} img/s, "
          f"ratio {out['ratio_scan_over_inference']:.2f} (goal >= 0.8); {m['project']:.0f} projections/s")
    if args.any_arch != "none":
        other = bench_any(args.any_arch, args.any_images, args.any_batch, args.repeats,
                          size=args.any_size)
        write_results(run, f"bench_top9_{args.any_arch}", other)
        a = other["median_per_second"]
        print(f"top-9 ({args.any_arch} at {args.any_size}, {len(other['layers'])} blocks): scan "
              f"{a['scan']:.1f} img/s, inference {a['inference']:.1f} img/s, ratio "
              f"{other['ratio_scan_over_inference']:.2f} (goal >= 0.8); {a['project']:.1f} "
              f"projections/s (graph deconvnet) vs {m['project']:.0f} (plain stack, {args.model})")


if __name__ == "__main__":
    main()
