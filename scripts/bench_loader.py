"""Benchmark: training-batch images/s of the packed loader (``zfnet prepare`` + ``data=packed``)
against torchvision's usual ImageNet pipeline, on a JPEG tree of ImageNet-like sizes.

    python scripts/bench_loader.py [--images 2560] [--workers 2] [--repeats 3]

The tree (``--images`` JPEGs around 500x375, both orientations, smooth content plus texture so
files are about ImageNet's size) is generated once and cached in ``outputs/cache/``. Both sides
produce the same thing, a float (128, 3, 224, 224) batch of random 224 crops with random
horizontal flips and labels, from the paper's 256x256 centre crops (§3):

* baseline: ``torchvision.datasets.ImageFolder`` + ``Resize(256), CenterCrop(256), RandomCrop(224),
  RandomHorizontalFlip(), ToTensor()`` through a ``DataLoader`` with ``--workers`` processes
  (persistent, so start-up is not timed; no ``Normalize``, which would only slow it);
* packed: the tree prepared once by :func:`zfnet_cli.data.packed.prepare` (with ``--workers``
  processes; timed separately), read through ``zfnet train``'s own batching
  (``InMemoryBatches`` + ``BatchPreprocess(train=True)``: gather, crop, flip, mean subtraction on
  the CPU here), in the main process: it needs no workers;
* packed, gather only: the same without ``BatchPreprocess``: the uint8 (128, 3, 256, 256) batches
  and labels, which is all the CPU does per batch when the crop, flip and mean run on a GPU.

One warm-up epoch each (files and shards then sit in the page cache for both), then full epochs
alternating (packed, baseline, ...); medians of ``--repeats`` are compared. Goal: >= 5x over
torchvision's pipeline.
Writes ``bench_loader.json`` and a row in ``bench_loader.md`` into ``--out`` (default: a new
``outputs/bench/<date_time>``) and prints a one-line summary.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

# torch and zfnet_cli are imported in main(): `--tree-only` (scripts/device_check.sh) needs
# neither, and starts in a fraction of the time.

# (width, height) of ImageNet-like photos: mostly 500 x 375 / 375 x 500 and their neighbours
SIZES = [(500, 375), (375, 500), (500, 333), (333, 500), (500, 400), (450, 338), (500, 281),
         (640, 480), (400, 300), (500, 500)]


def _write_jpegs(root: str, split: str, ks: range, classes: int, seed: int) -> int:
    """Images ``ks`` of one split; image k draws from its own generator (seed, split, k), so the
    tree is the same however the work is divided. Returns the bytes written."""
    total = 0
    for k in ks:
        rng = np.random.default_rng([seed, split == "val", k])
        wnid = f"n{k % classes:08d}"
        w, h = SIZES[rng.integers(len(SIZES))]
        # a smooth random scene (upsampled coarse colour field) plus fine texture
        coarse = rng.integers(0, 256, (rng.integers(3, 9), rng.integers(3, 9), 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32)
        texture = rng.normal(0, 12, (h, w, 1)).astype(np.float32)
        img = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
        path = Path(root) / split / wnid / f"{wnid}_{k:06d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
        total += path.stat().st_size
    return total


def make_tree(root: Path, images: int, classes: int = 20, seed: int = 0, workers: int = 1) -> dict:
    """An ImageFolder tree ``root/{train,val}/<wnid>/*.JPEG`` (val: a few images per class, the
    prepare step wants both), written by ``workers`` processes; cached: ``tree.json`` is
    written last."""
    stamp = root / "tree.json"
    if stamp.is_file():
        return json.loads(stamp.read_text())
    shutil.rmtree(root, ignore_errors=True)
    jobs = [(str(root), split, range(k, min(k + 256, n)), classes, seed)
            for split, n in (("train", images), ("val", 2 * classes)) for k in range(0, n, 256)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            total_bytes = sum(pool.map(_write_jpegs, *zip(*jobs)))
    else:
        total_bytes = sum(_write_jpegs(*job) for job in jobs)
    info = {"images": images, "classes": classes, "seed": seed,
            "mean_file_kb": total_bytes / (images + 2 * classes) / 1024}
    stamp.write_text(json.dumps(info) + "\n")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2560, help="train JPEGs in the generated tree")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers / prepare processes")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache-dir", default="outputs/cache")
    ap.add_argument("--output-root", default="outputs")
    ap.add_argument("--out", default=None, help="folder for the results (default: a new outputs/bench run)")
    ap.add_argument("--classes", type=int, default=20, help="class folders of the generated tree")
    ap.add_argument("--tree-only", action="store_true",
                    help="only write the JPEG tree (with --workers processes) into "
                         "CACHE_DIR/bench_jpeg_IMAGES, then stop (scripts/device_check.sh)")
    args = ap.parse_args()

    cache = Path(args.cache_dir)
    root = cache / f"bench_jpeg_{args.images}"
    t = time.perf_counter()
    tree = make_tree(root, args.images, classes=args.classes, workers=args.workers)
    print(f"JPEG tree: {args.images} images, mean {tree['mean_file_kb']:.0f} KB, in {root} "
          f"({time.perf_counter() - t:.1f} s)", flush=True)
    if args.tree_only:
        return
    import torch
    import torchvision
    from torchvision import transforms as T

    from _bench import run_folder, write_results
    from zfnet_cli.data.packed import PackedData, prepare
    from zfnet_cli.data.transforms import BatchPreprocess
    from zfnet_cli.engine import InMemoryBatches

    # ---- baseline: torchvision's usual pipeline
    tf = T.Compose([T.Resize(256), T.CenterCrop(256), T.RandomCrop(224), T.RandomHorizontalFlip(),
                    T.ToTensor()])
    folder = torchvision.datasets.ImageFolder(str(root / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(folder, batch_size=args.batch, shuffle=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         generator=torch.Generator().manual_seed(0))

    def baseline() -> float:
        n, t = 0, time.perf_counter()
        for x, y in loader:
            n += len(y)
        return n / (time.perf_counter() - t)

    # ---- packed: prepare once, then zfnet train's batching
    pack_dir = Path(tempfile.mkdtemp(prefix="bench_pack_", dir=cache))
    try:
        t = time.perf_counter()
        summary = prepare(root, pack_dir, image_size=256, splits=("train",), shard_size=1024,
                          workers=args.workers, progress=False)
        prep_s = time.perf_counter() - t
        print(f"prepare: {summary['images_written']} images in {prep_s:.1f} s "
              f"({summary['images_written'] / prep_s:.0f} images/s with {args.workers} workers, "
              "verification and mean image included)")
        data = PackedData(pack_dir, "train")
        pre = BatchPreprocess(data.mean_image, 224, train=True, flip=True)
        gen = torch.Generator().manual_seed(0)

        def packed(preprocess=pre) -> float:
            n, t = 0, time.perf_counter()
            for x, y in InMemoryBatches(data.images, data.labels, args.batch, preprocess,
                                        shuffle=True, generator=gen):
                n += len(y)
            return n / (time.perf_counter() - t)

        def gather_only() -> float:
            return packed(lambda x, generator=None: x)

        packed(), gather_only(), baseline()  # warm-up: page cache, worker start-up, allocator
        res = {"packed": [], "gather_only": [], "baseline": []}
        for _ in range(args.repeats):
            res["packed"].append(packed())
            res["gather_only"].append(gather_only())
            res["baseline"].append(baseline())
    finally:
        shutil.rmtree(pack_dir, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in res.items()}
    ratio = med["packed"] / med["baseline"]
    ratio_gather = med["gather_only"] / med["baseline"]
    out = {"benchmark": "packed loader vs torchvision ImageFolder pipeline",
           "images": args.images, "mean_jpeg_kb": tree["mean_file_kb"], "batch": args.batch,
           "workers": args.workers, "threads": torch.get_num_threads(), "repeats": args.repeats,
           "baseline": "ImageFolder + Resize(256) CenterCrop(256) RandomCrop(224) "
                       "RandomHorizontalFlip() ToTensor(), DataLoader",
           "packed": "PackedData + InMemoryBatches + BatchPreprocess(train=True), main process",
           "gather_only": "PackedData + InMemoryBatches, uint8 batches (preprocessing left to a GPU)",
           "images_per_s": res, "median_images_per_s": med, "ratio_packed_over_baseline": ratio,
           "ratio_gather_only_over_baseline": ratio_gather,
           "prepare_seconds": prep_s, "prepare_images_per_s": summary["images_written"] / prep_s,
           "goal": ">= 5"}
    row = (f"| `scripts/bench_loader.py`: training batches as images/s, {args.images} JPEGs "
           f"~500x375, batch {args.batch}, {args.workers} workers | packed {med['packed']:.0f} "
           f"img/s (gather only {med['gather_only']:.0f}) | torchvision ImageFolder "
           f"{med['baseline']:.0f} img/s | {ratio:.1f}x ({ratio_gather:.0f}x) | >= 5x |\n")
    path = write_results(run_folder(args.out, args.output_root), "bench_loader", out, row,
                         append=True)
    print(f"loader: packed {med['packed']:.0f} img/s (gather only {med['gather_only']:.0f}), "
          f"torchvision ImageFolder {med['baseline']:.0f} img/s ({args.workers} workers), ratio "
          f"{ratio:.1f}x ({ratio_gather:.0f}x gather only; goal >= 5x); prepare "
          f"{out['prepare_images_per_s']:.0f} img/s -> {path}")


if __name__ == "__main__":
    main()
