"""Benchmark: training images/s of the paper's ZFNet (224 px) on one GPU, per speed option.

Each variant (fp32; bf16; bf16 + channels_last; bf16 + channels_last + torch.compile) runs
``zfnet train``'s own training step (:func:`zfnet_cli.engine.train_one_epoch`: SGD with momentum
and weight decay as in configs/optim/paper.yaml, float32 loss, filter renormalisation after
every step): ``--warmup`` steps (allocator, compilation), then ``--steps`` timed steps between
``torch.cuda.synchronize()`` calls, ``--repeats`` rounds over all variants in turn; the median
counts. cuDNN's autotuner stays off, as in ``zfnet train``.

Two ways of feeding it (``--data``):

* ``device``: float batches already on the device, preprocessed once: the step alone.
* ``loader``: ``zfnet train``'s batching for in-memory and packed data (``InMemoryBatches`` +
  ``BatchPreprocess`` on the device: random 224 crop of the 256 px image, flip, mean
  subtraction) over uint8 images in host memory, gathered into pinned memory per batch. With
  ``--packed DIR`` the images are a pack written by ``zfnet prepare`` (memory-mapped shards, the
  ``data=packed`` path); without it, synthetic uint8 images (the same code path, no disk).

    python scripts/bench_gpu.py                        # the paper's model, batch 128, on the GPU
    python scripts/bench_gpu.py --packed outputs/packed/imagenet_256 --peak-tflops 989
    python scripts/bench_gpu.py --quick                # tiny model, few steps: runs anywhere

On a machine without CUDA it runs on the CPU, where none of the options is expected to help.
Writes ``DIR/bench_gpu.json`` and ``DIR/bench_gpu.md`` (``--out DIR``, default a new
``outputs/bench/<date_time>`` folder) and prints one line per measurement.
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from zfnet_cli.config import compose, new_run_dir
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.engine import InMemoryBatches, compile_model, pick_device, train_one_epoch
from zfnet_cli.model import ZFNet

# name -> (amp, channels_last, compile)
VARIANTS = {"fp32": ("none", False, False),
            "bf16": ("bf16", False, False),
            "bf16+channels_last": ("bf16", True, False),
            "bf16+channels_last+compile": ("bf16", True, True)}


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
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zfnet", help="model preset (configs/model/)")
    ap.add_argument("--size", type=int, default=224, help="crop fed to the model (paper: 224)")
    ap.add_argument("--image-size", type=int, default=256, help="stored image side for --data loader")
    ap.add_argument("--batch", type=int, default=128, help="batch size (paper: 128)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before each measurement")
    ap.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per variant (median)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--data", default="device,loader", help="comma list of device, loader")
    ap.add_argument("--packed", default=None, help="a pack folder (zfnet prepare) for --data loader")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default: inductor; eager, which only traces, with --quick on a CPU)")
    ap.add_argument("--compile-mode", default=None, help="inductor mode, e.g. max-autotune")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak TFLOP/s for the bf16 rows (H100 SXM: 989), to "
                         "report the fraction reached")
    ap.add_argument("--quick", action="store_true",
                    help="defaults for a run anywhere: tiny model at 64 px, batch 16, 2 warm-up + "
                         "5 timed steps, 1 repeat, 1 CPU thread")
    ap.add_argument("--output-root", default="outputs")
    ap.add_argument("--out", default=None, help="folder for the results (default: a new outputs/bench run)")
    if ap.parse_known_args()[0].quick:  # smaller defaults; options given explicitly still win
        ap.set_defaults(model="tiny", size=64, image_size=72, batch=16, classes=10, warmup=2,
                        steps=5, repeats=1, threads=1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    backend = args.compile_backend or ("eager" if args.quick and not cuda else "inductor")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    modes = [m.strip() for m in args.data.split(",") if m.strip()]
    unknown = [v for v in variants if v not in VARIANTS] + [m for m in modes if m not in ("device", "loader")]
    if unknown:
        ap.error(f"unknown variant or data mode: {', '.join(unknown)}")

    cfg = compose("train", [f"model={args.model}", "optim=paper", f"data.crop={args.size}",
                            f"data.image_size={args.image_size}"])
    macs = macs_per_image(ZFNet(cfg.model, args.classes), args.size)
    train_flops = 3 * 2 * macs  # forward 2 FLOPs per MAC, backward about twice the forward

    g = torch.Generator().manual_seed(0)
    # ---- data: host uint8 images (synthetic or a pack) and their mean image
    if args.packed:
        from zfnet_cli.data.packed import PackedData

        pack = PackedData(args.packed, "train", pin_memory=cuda)
        host_images, host_labels, mean = pack.images, pack.labels, pack.mean_image
        if pack.image_size != args.image_size:
            ap.error(f"--image-size {args.image_size} but the pack holds {pack.image_size} px images")
        data_source = f"pack {args.packed} ({len(pack)} train images)"
    else:
        n = args.batch * 8  # 8 distinct batches, drawn in a new order each pass
        raw = torch.randint(0, 256, (n, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=g)
        host_images, host_labels = PinnedGather(raw, cuda), torch.randint(0, args.classes, (n,), generator=g)
        mean = raw[: args.batch].double().mean(0).float()
        data_source = f"synthetic uint8 {args.image_size} px, {n} images in host memory"
    pre = BatchPreprocess(mean.to(device), args.size, train=True, flip=True)
    # device mode: 4 preprocessed float batches resident on the device, cycled
    resident = [(pre(host_images[torch.arange(i * args.batch, (i + 1) * args.batch) % len(host_labels)]
                     .to(device), g), host_labels[:args.batch].to(device)) for i in range(4)]

    def stream(mode: str, steps: int):
        if mode == "device":
            return itertools.islice(itertools.cycle(resident), steps)

        def epochs():
            for epoch in itertools.count():
                yield from InMemoryBatches(host_images, host_labels, args.batch, pre, shuffle=True,
                                           generator=torch.Generator().manual_seed(epoch),
                                           drop_last=True, device=device)
        return itertools.islice(epochs(), steps)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    # One model per variant, shared by both data modes; every (data, variant) pair is warmed up,
    # then the repeats go round all pairs in turn, so machine noise hits every pair alike.
    setups = {}
    for name in variants:
        amp, channels_last, compiled = VARIANTS[name]
        torch.manual_seed(0)
        model = ZFNet(cfg.model, args.classes).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                              weight_decay=cfg.optim.weight_decay)
        setups[name] = (compile_model(model, backend, args.compile_mode) if compiled else model, opt)

    def run(mode: str, name: str, steps: int) -> float:
        amp, channels_last, _ = VARIANTS[name]
        net, opt = setups[name]
        sync()
        t = time.perf_counter()
        train_one_epoch(net, stream(mode, steps), opt, renorm_rms=cfg.optim.renorm_rms,
                        device=device, amp=amp, channels_last=channels_last)
        sync()
        return time.perf_counter() - t

    pairs = [(mode, name) for mode in modes for name in variants]
    warm = {pair: run(*pair, args.warmup) for pair in pairs}
    times: dict = {pair: [] for pair in pairs}
    for _ in range(args.repeats):
        for pair in pairs:
            times[pair].append(run(*pair, args.steps))
    rows = []
    for mode, name in pairs:
        amp, channels_last, compiled = VARIANTS[name]
        ips = [args.steps * args.batch / t for t in times[mode, name]]
        med = statistics.median(ips)
        row = {"data": mode, "variant": name, "amp": amp, "channels_last": channels_last,
               "compile": compiled, "warmup_seconds": warm[mode, name], "images_per_s": ips,
               "median_images_per_s": med, "ms_per_step": 1000 * args.batch / med,
               "tflops": med * train_flops / 1e12}
        if args.peak_tflops:
            row["fraction_of_peak"] = row["tflops"] / args.peak_tflops
        rows.append(row)
        print(f"{mode:6s} {name:28s} {med:10.1f} img/s  {row['ms_per_step']:8.2f} ms/step  "
              f"{row['tflops']:7.3g} TFLOP/s  (warm-up {warm[mode, name]:.1f} s)", flush=True)

    for row in rows:  # speed-up over fp32 with the same data mode
        base = next((r for r in rows if r["data"] == row["data"] and r["variant"] == "fp32"), None)
        row["x_fp32"] = row["median_images_per_s"] / base["median_images_per_s"] if base else None

    hardware = {"device": str(device),
                "gpu": torch.cuda.get_device_name(device) if cuda else None,
                "capability": ".".join(map(str, torch.cuda.get_device_capability(device))) if cuda else None,
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
                "cpu": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                "python": platform.python_version(), "platform": platform.platform()}
    command = "python " + " ".join(shlex.quote(a) for a in ["scripts/bench_gpu.py", *sys.argv[1:]])
    out = {"benchmark": "training images/s per speed option", "command": command,
           "model": args.model, "crop": args.size, "image_size": args.image_size,
           "batch": args.batch, "classes": args.classes, "warmup": args.warmup, "steps": args.steps,
           "repeats": args.repeats, "compile_backend": backend, "compile_mode": args.compile_mode,
           "data_source": data_source, "macs_per_image": macs, "train_flops_per_image": train_flops,
           "peak_tflops": args.peak_tflops, "hardware": hardware, "results": rows,
           "goal": "one H100: 40k images/s for zfnet at 224 (about 30% of bf16 peak)"}
    folder = Path(args.out) if args.out else new_run_dir(Path(args.output_root), "bench")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_gpu.json").write_text(json.dumps(out, indent=2) + "\n")
    (folder / "bench_gpu.md").write_text(_markdown(out))
    print(f"bench_gpu: {len(rows)} measurements -> {folder / 'bench_gpu.json'}, {folder / 'bench_gpu.md'}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _markdown(out: dict) -> str:
    hw = out["hardware"]
    where = (f"{hw['gpu']} (sm {hw['capability']}), CUDA {hw['cuda']}, cuDNN {hw['cudnn']}"
             if hw["gpu"] else f"CPU only: {hw['cpu']}, {hw['threads']} torch threads")
    peak = out["peak_tflops"] is not None
    lines = [f"# Training images/s: {out['model']} at {out['crop']} px, batch {out['batch']}", "",
             f"`{out['command']}`", "",
             f"Hardware: {where}; torch {hw['torch']}, {hw['platform']}.  ",
             f"Step: zfnet train's `train_one_epoch` (SGD, float32 loss, filter renormalisation); "
             f"{out['warmup']} warm-up + {out['steps']} timed steps, median of {out['repeats']}; "
             f"compile backend {out['compile_backend']}"
             f"{', mode ' + out['compile_mode'] if out['compile_mode'] else ''}.  ",
             f"Data `device`: float batches already on the device; `loader`: InMemoryBatches + "
             f"BatchPreprocess over {out['data_source']}.  ",
             f"Work: {out['macs_per_image'] / 1e9:.3f} GMACs forward, "
             f"{out['train_flops_per_image'] / 1e9:.2f} GFLOPs per trained image.", "",
             "| data | variant | images/s | x fp32 | ms/step | TFLOP/s |" + (" % of peak |" if peak else ""),
             "|---|---|---:|---:|---:|---:|" + ("---:|" if peak else "")]
    for r in out["results"]:
        x = f"{r['x_fp32']:.2f}" if r["x_fp32"] is not None else "-"
        lines.append(f"| {r['data']} | {r['variant']} | {r['median_images_per_s']:.0f} | {x} | "
                     f"{r['ms_per_step']:.1f} | {r['tflops']:.3g} |"
                     + (f" {100 * r['fraction_of_peak']:.1f} |" if peak else ""))
    lines += ["", f"Goal: {out['goal']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
