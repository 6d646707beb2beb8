"""Benchmark: the GPU path of zfnet, each figure a ratio or a fraction measured in the same run.

Three parts (``--part``, a comma list; default ``train``), each written to ``--out DIR`` as JSON
and markdown and printed one line per measurement:

**train** (``bench_gpu.json`` / ``.md``): training images/s of the paper's ZFNet (224 px) per speed
option (fp32; bf16; bf16 + channels_last; bf16 + channels_last + torch.compile) and batch size
(``--batch 128,256``), through ``zfnet train``'s own step (:func:`zfnet_cli.engine.train_one_epoch`:
SGD with momentum and weight decay as in configs/optim/paper.yaml, float32 loss, filter
renormalisation after every step). cuDNN's autotuner stays off, as in ``zfnet train``. Work per
image is counted from the model (multiply-accumulates of every conv and linear layer, x2 for
FLOPs, x3 for forward + backward) and compared with the 7.0 GFLOP assumed when the GPU goal was set; with
``--peak-tflops`` (H100 / H200 SXM dense bf16: 989) each row reports its MFU. Data modes
(``--data``):

* ``device``: float batches already on the device, preprocessed once: the step alone.
* ``loader``: ``zfnet train``'s batching for in-memory and packed data (``InMemoryBatches`` +
  ``BatchPreprocess`` on the device: random 224 crop of the 256 px image, flip, mean
  subtraction), gathered in the main process into pinned memory per batch. With ``--packed DIR``
  the images are a pack written by ``zfnet prepare`` (memory-mapped shards: ``data=packed``);
  without it, synthetic uint8 images in host memory (the same code path, no disk).
* ``workers``: the pack (``--packed`` required) through a DataLoader with ``--workers``
  processes (``LoaderBatches``, which ``zfnet train`` uses for file-backed data), preprocessed
  on the device.

Each ``loader`` / ``workers`` row also gives its fraction of the ``device`` row of the same batch
and variant (the goal: >= 0.9). ``--loader-variants`` limits the loader modes to some variants.

**top9** (``bench_gpu_top9.json``): the top-9 scan over all five conv layers against plain
inference on ``--device`` (scripts/bench_top9.py's measurement); goal >= 0.9.

**occlusion** (``bench_gpu_occlusion.json``): occlusion positions/s of
:func:`zfnet_cli.occlusion.occlude` against Captum's ``Occlusion.attribute`` with the same model,
occluder (window) size, stride and batch (``perturbations_per_eval``), on ``--device``. Without
Captum the row says "not measured: captum missing".

Protocol: every (data, batch, variant) pair is warmed up once (``--warmup`` steps: allocator,
compilation; a loader pair whose batch and variant were warmed up on the device is not), then ``--repeats`` rounds go over all pairs in turn, so machine noise hits every
pair alike; the median counts. Each measurement starts a fresh stream, runs ``--settle`` untimed
steps (loader workers starting, prefetch queues filling) and then times ``--steps`` steps between
``torch.cuda.synchronize()`` calls. A pair that fails (a compile error, out of memory) is recorded
with its one-line error and the others go on; past ``--max-seconds`` only pairs not yet measured
are measured once more, and the JSON is rewritten after every measurement, so a run cut short
keeps what it measured.

    python scripts/bench_gpu.py                        # the paper's model, batch 128, on the GPU
    python scripts/bench_gpu.py --batch 128,256 --packed outputs/packed/imagenet_256 \\
        --data device,loader,workers --workers 16 --peak-tflops 989
    python scripts/bench_gpu.py --part top9,occlusion --out DIR
    python scripts/bench_gpu.py --quick                # tiny model, few steps: runs anywhere

On a machine without CUDA it runs on the CPU, where none of the options is expected to help.
``--out`` defaults to a new ``outputs/bench/<date_time>`` folder. scripts/device_check.sh runs
all three parts on a GPU box.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from torch import nn

from _bench import run_folder, write_results
from zfnet_cli.config import compose
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.engine import (InMemoryBatches, LoaderBatches, compile_model, pick_device,
                              train_one_epoch)
from zfnet_cli.model import ZFNet
from zfnet_cli.occlusion import occlude, occluder_positions

# name -> (amp, channels_last, compile)
VARIANTS = {"fp32": ("none", False, False),
            "bf16": ("bf16", False, False),
            "bf16+channels_last": ("bf16", True, False),
            "bf16+channels_last+compile": ("bf16", True, True)}
MODES = ("device", "loader", "workers")
PARTS = ("train", "top9", "occlusion")
GFLOP_ASSUMED = 7.0  # the goal's assumed work for one training image of ZFNet at 224 (forward + backward)
GOALS = {"train": "one H100 / H200: >= 40,000 images/s for zfnet at 224 in the best setting "
                  "(about 28% of the 989 TFLOP/s bf16 peak)",
         "loader": ">= 0.9 of the on-device figure, from a pack, with 16 loader workers",
         "top9": ">= 0.9 of plain inference", "occlusion": "faster than Captum's Occlusion"}


def macs_per_image(model: nn.Module, size: int) -> int:
    """Multiply-accumulates of one forward pass (convs and linear layers), counted with hooks."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():  # on the model's device: a model on "meta" is counted without any arithmetic
        model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total


class PinnedGather:
    """uint8 (N, 3, S, S) host images, gathered per batch into pinned memory when CUDA is used
    (as :class:`~zfnet_cli.data.packed.PackedImages` does), so the copy to the GPU overlaps."""

    def __init__(self, images: torch.Tensor, pin: bool):
        self.images, self.pin = images, pin

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        out = torch.empty((len(idx), *self.images.shape[1:]), dtype=torch.uint8, pin_memory=self.pin)
        return torch.index_select(self.images, 0, idx, out=out)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- part: train

def train_part(args, device: torch.device, ap: argparse.ArgumentParser, folder: Path, started: float) -> dict:
    cuda = device.type == "cuda"
    backend = args.compile_backend or ("eager" if args.quick and not cuda else "inductor")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    modes = [m.strip() for m in args.data.split(",") if m.strip()]
    loader_variants = ([v.strip() for v in args.loader_variants.split(",") if v.strip()]
                       if args.loader_variants else variants)
    unknown = [v for v in variants + loader_variants if v not in VARIANTS] + [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown variant or data mode: {', '.join(unknown)}")
    if "workers" in modes and not args.packed:
        ap.error("--data workers reads a pack: give --packed DIR (made by zfnet prepare)")
    batches = args.batch

    cfg = compose("train", [f"model={args.model}", "optim=paper", f"data.crop={args.size}",
                            f"data.image_size={args.image_size}"])
    macs = macs_per_image(ZFNet(cfg.model, args.classes), args.size)
    train_flops = 3 * 2 * macs  # forward 2 FLOPs per MAC, backward about twice the forward

    g = torch.Generator().manual_seed(0)
    # ---- data: host uint8 images (synthetic or a pack) and their mean image
    pack = None
    if args.packed:
        from zfnet_cli.data.packed import PackedData

        pack = PackedData(args.packed, "train", pin_memory=cuda)
        host_images, host_labels, mean = pack.images, pack.labels, pack.mean_image
        if pack.image_size != args.image_size:
            ap.error(f"--image-size {args.image_size} but the pack holds {pack.image_size} px images")
        data_source = f"pack {args.packed} ({len(pack)} train images)"
    else:
        n = max(batches) * 8  # 8 distinct batches, drawn in a new order each pass
        raw = torch.randint(0, 256, (n, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
        host_images, host_labels = PinnedGather(raw, cuda), torch.randint(0, args.classes, (n,), generator=g)
        mean = raw[: max(batches)].double().mean(0).float()
        data_source = f"synthetic uint8 {args.image_size} px, {n} images in host memory"
    pre = BatchPreprocess(mean.to(device), args.size, train=True, flip=True)
    # device mode: 4 preprocessed float batches per batch size resident on the device, cycled
    resident = {}
    for b in batches:
        idx = [torch.arange(i * b, (i + 1) * b) % len(host_labels) for i in range(4)]
        resident[b] = [(pre(host_images[i].to(device), g), host_labels[i].to(device)) for i in idx]

    epochs_started = itertools.count()  # every measurement draws its own data order

    def stream(mode: str, batch: int):
        if mode == "device":
            return itertools.cycle(resident[batch])

        def epochs():
            while True:
                epoch = next(epochs_started)
                if mode == "loader":
                    yield from InMemoryBatches(host_images, host_labels, batch, pre, shuffle=True,
                                               generator=torch.Generator().manual_seed(epoch),
                                               drop_last=True, device=device)
                else:
                    yield from LoaderBatches(pack, batch, pre, shuffle=True, seed=0, epoch=epoch,
                                             workers=args.workers, device=device)
        return epochs()

    # One model per variant, shared by every data mode and batch size (a compiled model compiles
    # once per batch shape, in its warm-up).
    setups, errors = {}, {}
    for name in dict.fromkeys(variants + loader_variants):
        amp, channels_last, compiled = VARIANTS[name]
        try:
            torch.manual_seed(0)
            model = ZFNet(cfg.model, args.classes).to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                  weight_decay=cfg.optim.weight_decay)
            setups[name] = (compile_model(model, backend, args.compile_mode) if compiled else model, opt)
        except Exception as err:  # noqa: BLE001: recorded, the other variants go on
            errors[name] = _one_line(err)

    def measure(mode: str, batch: int, name: str, settle: int, steps: int) -> float:
        amp, channels_last, _ = VARIANTS[name]
        net, opt = setups[name]
        it = stream(mode, batch)

        def run(n):
            train_one_epoch(net, itertools.islice(it, n), opt, renorm_rms=cfg.optim.renorm_rms,
                            device=device, amp=amp, channels_last=channels_last)
        try:
            if settle:
                run(settle)
            _sync(device)
            t = time.perf_counter()
            run(steps)
            _sync(device)
            return time.perf_counter() - t
        finally:
            if hasattr(it, "close"):
                it.close()  # stops this stream's DataLoader workers now, outside the timing

    def timed_steps(mode: str) -> tuple[int, int]:
        """(settle, steps) of one measurement. A DataLoader's workers each build a whole batch, so
        batches arrive in bursts of ``workers``, and up to 2 per worker wait in its queue: the
        first two bursts are settled, and at least two are timed, or a queue filled while the
        GPU was busy elsewhere would pass for loader speed."""
        if mode == "workers":
            return max(args.settle, 2 * args.workers), max(args.steps, 2 * args.workers)
        return args.settle, args.steps

    pairs = [(mode, b, name) for mode in modes for b in batches
             for name in (variants if mode == "device" else loader_variants)]
    if pack is not None:
        short = [b for b in batches if b > len(pack)]
        for pair in pairs:
            if pair[0] != "device" and pair[1] in short:
                errors[pair] = f"the pack holds {len(pack)} train images, fewer than batch {pair[1]}"
    warm: dict = {}
    times: dict = {pair: [] for pair in pairs}
    rounds_done = 0

    def build(final: bool) -> dict:
        rows = []
        for mode, b, name in pairs:
            amp, channels_last, compiled = VARIANTS[name]
            row = {"data": mode, "batch": b, "variant": name, "amp": amp, "channels_last": channels_last,
                   "compile": compiled, "warmup_seconds": warm.get((mode, b, name))}
            err = errors.get((mode, b, name)) or errors.get(name)
            if err:
                row["error"] = err
            settle, steps = timed_steps(mode)
            row.update(settle=settle, steps=steps)
            if mode != "device":
                row["epoch_steps"] = len(host_labels) // b
                if settle + steps > row["epoch_steps"]:
                    row["note"] = "a measurement spans epochs: it includes restarting the loader"
            ips = [steps * b / t for t in times[mode, b, name]]
            if ips:
                med = statistics.median(ips)
                row.update(images_per_s=ips, median_images_per_s=med, ms_per_step=1000 * b / med,
                           tflops=med * train_flops / 1e12)
                if args.peak_tflops:
                    row["mfu"] = row["tflops"] / args.peak_tflops
            rows.append(row)
        by = {(r["data"], r["batch"], r["variant"]): r.get("median_images_per_s") for r in rows}
        for r in rows:  # speed-up over fp32 with the same data and batch; loaders against the device
            ips = r.get("median_images_per_s")
            base = by.get((r["data"], r["batch"], "fp32"))
            r["x_fp32"] = ips / base if ips and base else None
            on_device = by.get(("device", r["batch"], r["variant"]))
            if r["data"] != "device":
                r["fraction_of_device"] = ips / on_device if ips and on_device else None
        command = "python " + " ".join(shlex.quote(a) for a in ["scripts/bench_gpu.py", *sys.argv[1:]])
        return {"benchmark": "training images/s per speed option", "command": command,
                "finished": final, "rounds_done": rounds_done,
                "model": args.model, "crop": args.size, "image_size": args.image_size,
                "batches": batches, "classes": args.classes, "warmup": args.warmup,
                "settle": args.settle, "steps": args.steps, "repeats": args.repeats,
                "workers": args.workers if "workers" in modes else None,
                "compile_backend": backend, "compile_mode": args.compile_mode,
                "data_source": data_source, "macs_per_image": macs,
                "train_flops_per_image": train_flops, "assumed_gflop_per_image": GFLOP_ASSUMED,
                "flops_over_assumed": train_flops / 1e9 / GFLOP_ASSUMED,
                "peak_tflops": args.peak_tflops, "hardware": hardware(device), "results": rows,
                "goal": GOALS["train"], "goal_loader": GOALS["loader"]}

    def save(final: bool) -> dict:
        out = build(final)
        write_results(folder, "bench_gpu", out, _train_markdown(out))
        return out

    def out_of_time() -> bool:
        return bool(args.max_seconds) and time.perf_counter() - started > args.max_seconds

    for pair in pairs:
        if pair in errors or pair[2] in errors:
            continue
        if out_of_time():
            errors[pair] = f"not warmed up: past --max-seconds {args.max_seconds:g}"
            continue
        if pair[0] != "device" and ("device", pair[1], pair[2]) in warm:
            continue  # compiled and allocated in its device warm-up; --settle starts its loader
        try:
            warm[pair] = measure(*pair, settle=0, steps=args.warmup)
        except Exception as err:  # noqa: BLE001
            errors[pair] = _one_line(err)
        print(f"warm-up {pair[0]:7s} batch {pair[1]:4d} {pair[2]:28s} "
              f"{errors.get(pair) or f'{warm[pair]:.1f} s'}", flush=True)
    save(False)
    for _ in range(args.repeats):
        if out_of_time():
            print(f"bench_gpu: past --max-seconds {args.max_seconds:g}, no further round", flush=True)
            break
        for pair in pairs:
            if pair in errors or pair[2] in errors or (times[pair] and out_of_time()):
                continue
            try:
                settle, steps = timed_steps(pair[0])
                times[pair].append(measure(*pair, settle=settle, steps=steps))
            except Exception as err:  # noqa: BLE001
                errors[pair] = _one_line(err)
            save(False)
        rounds_done += 1
    out = save(True)
    for r in out["results"]:
        if "median_images_per_s" in r:
            frac = r.get("fraction_of_device")
            print(f"{r['data']:7s} batch {r['batch']:4d} {r['variant']:28s} {r['median_images_per_s']:10.1f} img/s  "
                  f"{r['ms_per_step']:8.2f} ms/step  {r['tflops']:7.3g} TFLOP/s"
                  + (f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else "")
                  + (f"  {frac:.2f} of on-device" if frac else ""), flush=True)
        else:
            print(f"{r['data']:7s} batch {r['batch']:4d} {r['variant']:28s} not measured: "
                  f"{r.get('error', 'out of time')}", flush=True)
    print(f"bench_gpu train: {train_flops / 1e9:.2f} GFLOP per trained image "
          f"({out['flops_over_assumed']:.3f} x the assumed {GFLOP_ASSUMED}) -> {folder / 'bench_gpu.json'}")
    return out


# ---------------------------------------------------------------- part: top9

def top9_part(args, device: torch.device, folder: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_top9

    out = bench_top9.bench(args.model, args.top9_images, args.top9_batch, args.repeats,
                           size=args.size, device=str(device), classes=args.classes)
    out.update(command="python " + " ".join(shlex.quote(a) for a in ["scripts/bench_gpu.py", *sys.argv[1:]]),
               hardware=hardware(device), goal=GOALS["top9"])
    m = out["median_per_second"]
    write_results(folder, "bench_gpu_top9", out,
           "\n".join([f"# Top-9 scan against plain inference: {args.model} at {out['image_size']} px", "",
                      f"`{out['command']}`", "", f"Hardware: {_where(out['hardware'])}.", "",
                      "| scan, all 5 layers (img/s) | plain inference (img/s) | ratio | projections/s | goal |",
                      "|---:|---:|---:|---:|---|",
                      f"| {m['scan']:.0f} | {m['inference']:.0f} | {out['ratio_scan_over_inference']:.3f} | "
                      f"{m['project']:.0f} | {GOALS['top9']} |", ""]))
    print(f"bench_gpu top9 ({args.model}, {device}): scan {m['scan']:.0f} img/s, inference "
          f"{m['inference']:.0f} img/s, ratio {out['ratio_scan_over_inference']:.3f} (goal >= 0.9)")
    return out


# ---------------------------------------------------------------- part: occlusion

def occlusion_part(args, device: torch.device, folder: Path) -> dict:
    cfg = compose("train", [f"model={args.model}", f"data.crop={args.size}",
                            f"data.image_size={max(args.size, args.image_size)}"])
    size = cfg.model.input_size
    torch.manual_seed(0)
    model = ZFNet(cfg.model, args.classes).to(device).eval()
    g = torch.Generator().manual_seed(0)
    images = (torch.randn(args.occlusion_images, 3, size, size, generator=g) * 60).to(device)
    occ = args.occluder or max(1, size // 4)  # zfnet occlude's default: a quarter of the side ...
    stride = args.occluder_stride or max(1, occ // 4)  # ... moved a quarter of itself
    with torch.no_grad():
        targets = model(images).argmax(1).tolist()  # occlude's default: the clean prediction
    ours_n = occluder_positions(size, size, occ, stride).shape[0]
    # Captum slides the window over (C, H, W): one position over the channels, floor steps over
    # H and W (ours adds a last row / column flush with the edge where the stride falls short)
    captum_n = ((size - occ) // stride + 1) ** 2
    batch = args.occlusion_batch

    def ours() -> float:
        t = time.perf_counter()
        for image, target in zip(images, targets):
            occlude(model, image, size=occ, stride=stride, target=target, batch_size=batch)
        return len(targets) * ours_n / (time.perf_counter() - t)  # occlude returns CPU maps: synced

    try:
        from captum.attr import Occlusion
        captum_error = None
    except ImportError:
        Occlusion, captum_error = None, "not measured: captum missing"

    def captum() -> float:
        method = Occlusion(model)
        _sync(device)
        t = time.perf_counter()
        for image, target in zip(images, targets):
            method.attribute(image[None], sliding_window_shapes=(3, occ, occ), strides=(3, stride, stride),
                             baselines=0.0, target=target, perturbations_per_eval=batch)
        _sync(device)
        return len(targets) * captum_n / (time.perf_counter() - t)

    runs = {"ours": ours} | ({"captum": captum} if Occlusion else {})
    for f in runs.values():  # warm-up
        f()
    res: dict = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, f in runs.items():  # alternating
            res[k].append(f())
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {"benchmark": "occlusion positions/s: zfnet_cli.occlusion.occlude vs captum Occlusion",
           "command": "python " + " ".join(shlex.quote(a) for a in ["scripts/bench_gpu.py", *sys.argv[1:]]),
           "model": args.model, "image_size": size, "classes": args.classes,
           "images": len(targets), "occluder": occ, "stride": stride, "batch": batch,
           "positions_per_image": {"ours": ours_n, "captum": captum_n}, "repeats": args.repeats,
           "positions_per_second": res, "median_positions_per_second": med,
           "ratio_ours_over_captum": med["ours"] / med["captum"] if "captum" in med else None,
           "captum": captum_error or "measured", "hardware": hardware(device), "goal": GOALS["occlusion"]}
    ratio = f"{out['ratio_ours_over_captum']:.2f}" if out["ratio_ours_over_captum"] else "-"
    cap = f"{med['captum']:.0f}" if "captum" in med else captum_error
    write_results(folder, "bench_gpu_occlusion", out,
           "\n".join([f"# Occlusion positions/s: {args.model} at {size} px, occluder {occ} stride {stride}", "",
                      f"`{out['command']}`", "", f"Hardware: {_where(out['hardware'])}.", "",
                      "| ours (positions/s) | Captum Occlusion (positions/s) | ratio | batch |",
                      "|---:|---:|---:|---:|", f"| {med['ours']:.0f} | {cap} | {ratio} | {batch} |", ""]))
    print(f"bench_gpu occlusion ({args.model}, {device}, occluder {occ} stride {stride}): ours "
          f"{med['ours']:.0f} positions/s, captum {cap}, ratio {ratio}")
    return out


# ---------------------------------------------------------------- main

def main() -> None:
    started = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="train", help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--model", default="zfnet", help="model preset (configs/model/)")
    ap.add_argument("--size", type=int, default=224, help="crop fed to the model (paper: 224)")
    ap.add_argument("--image-size", type=int, default=256, help="stored image side for the loader modes")
    ap.add_argument("--batch", default="128", help="batch size(s), a comma list (paper: 128)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps of each pair's warm-up")
    ap.add_argument("--settle", type=int, default=5,
                    help="untimed steps at the start of every measurement (loader workers, queues)")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per pair (median)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--loader-variants", default=None,
                    help="variants measured in the loader / workers modes (default: --variants)")
    ap.add_argument("--data", default="device,loader", help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--packed", default=None, help="a pack folder (zfnet prepare) for the loader modes")
    ap.add_argument("--workers", type=int, default=16, help="DataLoader processes of --data workers")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default: inductor; eager, which only traces, with --quick on a CPU)")
    ap.add_argument("--compile-mode", default=None, help="inductor mode, e.g. max-autotune")
    ap.add_argument("--top9-images", type=int, default=4096, help="images of the top9 part")
    ap.add_argument("--top9-batch", type=int, default=256)
    ap.add_argument("--occlusion-images", type=int, default=8, help="images of the occlusion part")
    ap.add_argument("--occlusion-batch", type=int, default=128, help="occluded images per forward pass")
    ap.add_argument("--occluder", type=int, default=None, help="occluder side (default: a quarter of the input)")
    ap.add_argument("--occluder-stride", type=int, default=None, help="default: a quarter of the occluder")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 peak TFLOP/s (H100 / H200 SXM: 989), for the MFU")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="past this many seconds, measure only pairs not yet measured, then stop")
    ap.add_argument("--quick", action="store_true",
                    help="defaults for a run anywhere: tiny model at 64 px, batch 16, 2 warm-up + "
                         "5 timed steps, 1 repeat, 1 CPU thread")
    ap.add_argument("--output-root", default="outputs")
    ap.add_argument("--out", default=None, help="folder for the results (default: a new outputs/bench run)")
    if ap.parse_known_args()[0].quick:  # smaller defaults; options given explicitly still win
        ap.set_defaults(model="tiny", size=64, image_size=72, batch="16", classes=10, warmup=2,
                        settle=1, steps=5, repeats=1, threads=1, workers=2, top9_images=64,
                        top9_batch=16, occlusion_images=1, occlusion_batch=64)
    args = ap.parse_args()
    try:
        args.batch = [int(b) for b in str(args.batch).split(",") if b.strip()]
    except ValueError:
        ap.error(f"--batch takes whole numbers separated by commas, got {args.batch!r}")
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        ap.error(f"--part takes a comma list of {', '.join(PARTS)}, got {args.part!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    folder = run_folder(args.out, args.output_root)
    failed = []
    for part in parts:
        try:
            if part == "train":
                train_part(args, device, ap, folder, started)
            elif part == "top9":
                top9_part(args, device, folder)
            else:
                occlusion_part(args, device, folder)
        except Exception as err:  # noqa: BLE001: recorded in the part's JSON; the next part runs
            failed.append(part)
            stem = "bench_gpu" if part == "train" else f"bench_gpu_{part}"
            out = {"part": part, "error": _one_line(err), "hardware": hardware(device)}
            write_results(folder, stem, out, f"# bench_gpu {part}: failed\n\n{out['error']}\n")
            print(f"bench_gpu {part}: failed: {out['error']}", flush=True)
            traceback.print_exc()
    if failed:
        sys.exit(f"bench_gpu: part(s) {', '.join(failed)} failed (recorded in {folder})")


def hardware(device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return {"device": str(device),
            "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
            # PyTorch's defaults, which the fp32 rows keep: cuDNN convs in TF32, matmuls in fp32
            "tf32_convs": torch.backends.cudnn.allow_tf32 if cuda else None,
            "tf32_matmuls": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
            "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _where(hw: dict) -> str:
    return (f"{hw['gpu']} (sm {hw['capability']}), CUDA {hw['cuda']}, cuDNN {hw['cudnn']}, TF32 convs "
            f"{'on' if hw.get('tf32_convs') else 'off'}, TF32 matmuls {'on' if hw.get('tf32_matmuls') else 'off'}; "
            f"torch {hw['torch']}"
            if hw["gpu"] else f"CPU only: {hw['cpu']}, {hw['threads']} torch threads; torch {hw['torch']}")


def _train_markdown(out: dict) -> str:
    peak = out["peak_tflops"] is not None
    lines = [f"# Training images/s: {out['model']} at {out['crop']} px, batch "
             f"{', '.join(map(str, out['batches']))}", "",
             f"`{out['command']}`", "",
             f"Hardware: {_where(out['hardware'])}, {out['hardware']['platform']}.  ",
             f"Step: zfnet train's `train_one_epoch` (SGD, float32 loss, filter renormalisation); "
             f"{out['warmup']} warm-up steps per pair, then {out['settle']} untimed + {out['steps']} timed "
             f"steps per measurement"
             + (f" (`workers`: {max(out['settle'], 2 * out['workers'])} + {max(out['steps'], 2 * out['workers'])},"
                f" two bursts of batches each)" if out["workers"] else "")
             + f", median of {out['rounds_done']} round(s); compile backend "
             f"{out['compile_backend']}{', mode ' + out['compile_mode'] if out['compile_mode'] else ''}.  ",
             f"Data `device`: float batches already on the device; `loader`: InMemoryBatches + "
             f"BatchPreprocess over {out['data_source']}, gathered in the main process"
             + (f"; `workers`: the pack through a DataLoader with {out['workers']} workers"
                if out["workers"] else "") + ".  ",
             f"Work: {out['macs_per_image'] / 1e9:.3f} GMACs forward, "
             f"{out['train_flops_per_image'] / 1e9:.2f} GFLOP per trained image "
             f"({out['flops_over_assumed']:.3f} x the assumed {out['assumed_gflop_per_image']})."
             + (f" MFU: against {out['peak_tflops']:g} TFLOP/s." if peak else ""), "",
             "| data | batch | variant | images/s | x fp32 | of on-device | ms/step | TFLOP/s |"
             + (" MFU |" if peak else ""),
             "|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if peak else "")]
    for r in out["results"]:
        if "median_images_per_s" not in r:
            lines.append(f"| {r['data']} | {r['batch']} | {r['variant']} | not measured: "
                         f"{r.get('error', 'out of time')} |")
            continue
        x = f"{r['x_fp32']:.2f}" if r["x_fp32"] is not None else "-"
        frac = f"{r['fraction_of_device']:.2f}" if r.get("fraction_of_device") is not None else "-"
        lines.append(f"| {r['data']} | {r['batch']} | {r['variant']} | {r['median_images_per_s']:.0f} | {x} | "
                     f"{frac} | {r['ms_per_step']:.1f} | {r['tflops']:.3g} |"
                     + (f" {100 * r['mfu']:.1f}% |" if peak else ""))
    lines += ["", f"Goal: {out['goal']}; loaders {out['goal_loader']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
