"""The Python half of scripts/device_check.sh: the environment record, the check for missing
packages, and the summary (``device_check.json`` and ``device_check.md``) of all stages.

    python scripts/device_check.py env WORK/env.json
    python scripts/device_check.py missing [--verify]
    python scripts/device_check.py summary --work WORK --out OUT [--meta key=value ...]

``missing`` and ``summary`` use the standard library only (no torch import), so they work, and
the summary is written, even where torch or the project's packages are broken.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# import name -> distribution name; REQUIRED stops the check, OPTIONAL only loses a figure
REQUIRED = {"torch": "torch", "torchvision": "torchvision", "hydra": "hydra-core",
            "omegaconf": "omegaconf", "typer": "typer", "numpy": "numpy", "PIL": "pillow",
            "tqdm": "tqdm", "matplotlib": "matplotlib", "pytest": "pytest"}
OPTIONAL = {"captum": "captum"}
GOAL_IMAGES_PER_S = 40_000
GOAL_LOADER = 0.9
GOAL_TOP9 = 0.9
LOG_TAIL_LINES = 30


# ---------------------------------------------------------------- missing

def missing(verify: bool) -> int:
    """Print the distributions that are not importable, one line: ``required: a b; optional: c``
    (empty when nothing is missing). With ``verify``, import the required ones for real and
    return 1 if any fails."""
    absent = {kind: [dist for mod, dist in names.items() if importlib.util.find_spec(mod) is None]
              for kind, names in (("required", REQUIRED), ("optional", OPTIONAL))}
    if verify:
        for mod, dist in REQUIRED.items():
            if dist in absent["required"]:
                continue
            try:
                importlib.import_module(mod)
            except Exception as err:  # noqa: BLE001: any failure to import is reported
                absent["required"].append(f"{dist} ({type(err).__name__}: {err})")
    text = "; ".join(f"{kind}: {' '.join(names)}" for kind, names in absent.items() if names)
    print(text)
    return 1 if verify and absent["required"] else 0


# ---------------------------------------------------------------- env

def env(path: Path) -> None:
    """What the check ran on: Python, torch, the GPU, NCCL, cores, memory and package versions."""
    info: dict = {"python": platform.python_version(), "executable": sys.executable,
                  "platform": platform.platform(), "cores": os.cpu_count(),
                  "memory_gib": _memory_gib(), "packages": {}}
    for dist in list(REQUIRED.values()) + list(OPTIONAL.values()) + ["triton"]:
        try:
            info["packages"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][dist] = None
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                    capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    cudnn=torch.backends.cudnn.version())
        try:
            v = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old ones
            info["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as err:  # noqa: BLE001: recorded; the tests stage says more
            info["nccl"] = f"unavailable ({type(err).__name__}: {err})"

    info["bf16_supported"] = bool(info["cuda_available"] and torch.cuda.is_bf16_supported())
    path.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


def _memory_gib():
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- summary

def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])[-4000:]


def _stages(work: Path) -> list[dict]:
    rows = []
    try:
        lines = (work / "stages.tsv").read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        name, status, rc, seconds, limit, note = (line.split("\t") + [""] * 6)[:6]
        row = {"name": name, "status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None,
               "seconds": float(seconds) if seconds else None,
               "limit_s": int(limit) if limit.isdigit() else None}
        if note:
            row["note"] = note
        if status != "ok":
            row["log_tail"] = _tail(work / "logs" / f"{name}.log")
        rows.append(row)
    return rows


def _tests(work: Path):
    """Counts and the failing tests from pytest's JUnit XML."""
    path = work / "pytest_cuda.xml"
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skip_reasons": {}}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag: child for child in case}
        if "failure" in kinds or "error" in kinds:
            tag = "failure" if "failure" in kinds else "error"
            out["failed" if tag == "failure" else "errors"] += 1
            msg = (kinds[tag].get("message") or kinds[tag].text or "").strip().splitlines()
            out["failures"].append({"test": name, "kind": tag, "message": (msg[0] if msg else "")[:300]})
        elif "skipped" in kinds:
            out["skipped"] += 1
            reason = (kinds["skipped"].get("message") or "").strip()[:200]
            out["skip_reasons"][reason] = out["skip_reasons"].get(reason, 0) + 1
        else:
            out["passed"] += 1
    return out


def _data(work: Path):
    trees = sorted(work.glob("bench_jpeg_*/tree.json"))
    prepare = _read_json(work / "outputs" / "prepare" / "latest" / "metrics.json")
    if not trees and not prepare:
        return None
    out = {"jpegs": _read_json(trees[-1]) if trees else None}
    if prepare:
        out["prepare"] = {k: prepare.get(k) for k in ("images_written", "images_per_s", "workers",
                                                      "image_size", "verified", "seconds")}
    return out


def _fmt(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _headline(tests, train, top9, occlusion, dry_run: bool) -> list[dict]:
    """One row per figure the GPU check reports: what, value, goal, and whether it is met (None:
    not measured, or a dry run, whose tiny CPU figures say nothing about a GPU)."""
    rows = []

    def add(what, value, goal, met):
        rows.append({"what": what, "value": value, "goal": goal, "met": None if dry_run else met})

    if tests is None:
        add("CUDA tests (`pytest -m cuda`)", "not run", "all pass", None)
    else:
        ran = tests["passed"] + tests["failed"] + tests["errors"]
        add("CUDA tests (`pytest -m cuda`)",
            f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped", "all pass",
            (tests["failed"] + tests["errors"] == 0) if ran else None)
    failed = {name: part["error"] for name, part in (("train", train), ("top9", top9), ("occlusion", occlusion))
              if part and "error" in part}
    train, top9, occlusion = (p if p and "error" not in p else None for p in (train, top9, occlusion))
    if train:
        add("work per training image (counted from the model)",
            f"{train['train_flops_per_image'] / 1e9:.3f} GFLOP ({train['flops_over_assumed']:.3f} x the "
            f"assumed {train['assumed_gflop_per_image']})", "about 7.0 GFLOP for zfnet at 224", None)
        rows_ok = [r for r in train["results"] if r.get("median_images_per_s")]
        device = [r for r in rows_ok if r["data"] == "device"]
        if device:
            best = max(device, key=lambda r: r["median_images_per_s"])
            mfu = f", MFU {100 * best['mfu']:.1f}%" if best.get("mfu") is not None else ""
            add("training images/s, data on the device, best setting",
                f"{_fmt(best['median_images_per_s'])} img/s ({best['variant']}, batch {best['batch']}){mfu}",
                f">= {GOAL_IMAGES_PER_S:,} img/s (about 28% MFU)",
                best["median_images_per_s"] >= GOAL_IMAGES_PER_S)
        for mode, what in (("loader", "end to end from the pack, gathered in the main process "
                                      "(zfnet train data=packed)"),
                           ("workers", f"end to end from the pack, {train.get('workers')} DataLoader workers")):
            rows_mode = [r for r in rows_ok if r["data"] == mode and r.get("fraction_of_device")]
            if rows_mode:
                best = max(rows_mode, key=lambda r: r["median_images_per_s"])
                add(what, f"{best['fraction_of_device']:.2f} of on-device ({_fmt(best['median_images_per_s'])} "
                    f"img/s, {best['variant']}, batch {best['batch']})", f">= {GOAL_LOADER}",
                    best["fraction_of_device"] >= GOAL_LOADER)
    else:
        add("training images/s", f"failed: {failed['train']}" if "train" in failed else "not measured",
            f">= {GOAL_IMAGES_PER_S:,} img/s", False if "train" in failed else None)
    if top9:
        m = top9["median_per_second"]
        add("top-9 scan, all five layers, against plain inference",
            f"{top9['ratio_scan_over_inference']:.3f} ({_fmt(m['scan'])} vs {_fmt(m['inference'])} img/s)",
            f">= {GOAL_TOP9}", top9["ratio_scan_over_inference"] >= GOAL_TOP9)
    else:
        add("top-9 scan against plain inference", f"failed: {failed['top9']}" if "top9" in failed
            else "not measured", f">= {GOAL_TOP9}", False if "top9" in failed else None)
    if occlusion:
        m = occlusion["median_positions_per_second"]
        ratio = occlusion.get("ratio_ours_over_captum")
        value = (f"{ratio:.2f} x Captum ({_fmt(m['ours'])} vs {_fmt(m['captum'])} positions/s)" if ratio
                 else f"ours {_fmt(m['ours'])} positions/s; Captum {occlusion['captum']}")
        add(f"occlusion positions/s against Captum's Occlusion (occluder {occlusion['occluder']}, "
            f"stride {occlusion['stride']}, batch {occlusion['batch']})", value, "> 1", ratio > 1 if ratio else None)
    else:
        add("occlusion against Captum", f"failed: {failed['occlusion']}" if "occlusion" in failed
            else "not measured", "> 1", False if "occlusion" in failed else None)
    return rows


def summary(work: Path, out: Path, meta: dict) -> dict:
    dry_run = meta.get("dry_run") == "1"
    bench = work / "bench"
    result = {"check": "scripts/device_check.sh", **{k: v for k, v in meta.items() if k != "dry_run"},
              "dry_run": dry_run, "env": _read_json(work / "env.json"), "stages": _stages(work),
              "tests": _tests(work), "data": _data(work),
              "train": _read_json(bench / "bench_gpu.json"), "top9": _read_json(bench / "bench_gpu_top9.json"),
              "occlusion": _read_json(bench / "bench_gpu_occlusion.json")}
    result["ok"] = bool(result["stages"]) and all(s["status"] == "ok" for s in result["stages"])
    try:
        result["headline"] = _headline(result["tests"], result["train"], result["top9"],
                                       result["occlusion"], dry_run)
    except Exception as err:  # noqa: BLE001: a malformed part file must not cost the summary
        result["headline"] = [{"what": "summary", "value": f"could not read the results: "
                               f"{type(err).__name__}: {err}", "goal": "", "met": False}]
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "device_check.md").write_text(_markdown(result, bench))
    return result


def _markdown(r: dict, bench: Path) -> str:
    e = r["env"]
    if not e:
        where = "not recorded (the env stage did not finish)"
    else:
        gpu = (f"{e.get('gpu')} (sm {e.get('capability')}, {e.get('gpu_memory_gib')} GiB), CUDA "
               f"{e.get('torch_cuda')}, cuDNN {e.get('cudnn')}, NCCL {e.get('nccl')}"
               if e.get("cuda_available") else "no CUDA device")
        where = (f"{gpu}; {e.get('cores')} cores, {e.get('memory_gib')} GiB; torch {e.get('torch')}, "
                 f"Python {e.get('python')}")
    lines = ["# GPU check: `scripts/device_check.sh`", "",
             f"`{r.get('command', '')}`, {r.get('date', '')}, git {r.get('git', 'unknown')}; "
             f"{_fmt(r.get('seconds'))} s of a {_fmt(r.get('budget_s'))} s budget.  ",
             f"Hardware: {where}.", ""]
    if r["dry_run"]:
        lines += ["**Dry run**: tiny sizes on the CPU. These figures check that the script works; "
                  "they say nothing about a GPU.", ""]
    lines += ["| measurement | value | goal | met |", "|---|---|---|---|"]
    for h in r["headline"]:
        met = {True: "yes", False: "**no**", None: "-"}[h["met"]]
        lines.append(f"| {h['what']} | {h['value']} | {h['goal']} | {met} |")
    lines += ["", "| stage | status | seconds | limit (s) |", "|---|---|---:|---:|"]
    for s in r["stages"]:
        status = s["status"] + (f" ({s['note']})" if s.get("note") else "")
        lines.append(f"| {s['name']} | {status} | {_fmt(s['seconds'], 1)} | {_fmt(s['limit_s'])} |")
    t = r["tests"]
    if t and t["failures"]:
        lines += ["", "Failing tests:", ""] + [f"- `{f['test']}` ({f['kind']}): {f['message']}" for f in t["failures"]]
    d = r["data"]
    if d and d.get("prepare"):
        p, j = d["prepare"], d.get("jpegs") or {}
        lines += ["", f"Pack: {p['images_written']} images ({j.get('images')} generated JPEGs of about "
                      f"{_fmt(j.get('mean_file_kb'))} KB) by `zfnet prepare` at {_fmt(p['images_per_s'])} "
                      f"images/s with {p['workers']} workers, {p['image_size']} px."]
    for name in ("bench_gpu.md", "bench_gpu_top9.md", "bench_gpu_occlusion.md"):
        try:
            body = (bench / name).read_text().strip()
        except OSError:
            continue
        lines += ["", "#" + body]  # each part's own table, one heading level down
    failed = [s for s in r["stages"] if s["status"] != "ok"]
    for s in failed:
        if s.get("log_tail"):
            lines += ["", f"### Log tail of stage {s['name']} ({s['status']})", "", "```",
                      s["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("env", help="write the environment record")
    p.add_argument("path", type=Path)
    p = sub.add_parser("missing", help="print the packages that are not importable")
    p.add_argument("--verify", action="store_true", help="import the required ones; exit 1 if one fails")
    p = sub.add_parser("summary", help="write device_check.json and device_check.md")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--meta", nargs="*", default=[], help="key=value pairs recorded at the top")
    args = ap.parse_args()
    if args.cmd == "env":
        env(args.path)
        return 0
    if args.cmd == "missing":
        return missing(args.verify)
    meta = dict(kv.split("=", 1) for kv in args.meta)
    for key in ("seconds", "budget_s"):
        if key in meta:
            meta[key] = float(meta[key])
    r = summary(args.work, args.out, meta)
    for h in r["headline"]:
        print(f"{h['what']}: {h['value']} (goal {h['goal']})")
    print(f"device_check: {'all stages ok' if r['ok'] else 'some stages failed'} -> "
          f"{args.out / 'device_check.json'}, {args.out / 'device_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
