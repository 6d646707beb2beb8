"""Benchmark: how long ``zfnet --help`` takes to answer, against ``python -c pass`` (the
interpreter alone) and against the eager start the command had before its imports were made
lazy (the config layer importing every command's experiment, and so torch, before typer parses
the command line).

    python scripts/bench_start.py [--repeats 7] [--out DIR]

Each side is a fresh process (``sys.executable``), run ``--repeats`` times alternating, after one
warm-up each (the files then sit in the page cache for all three); medians are compared. Goal:
``zfnet --help`` under 0.5 s. Writes ``bench_start.json``, a row in ``bench_start.md`` and
``figures/bench_start.png`` into ``--out`` (default: a new ``outputs/bench/<date_time>``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

_HELP = "import sys\nsys.argv = ['zfnet', '--help']\n"
SIDES = {
    "python -c pass": "pass",
    "zfnet --help": _HELP + "from zfnet_cli.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n",
    # the start before: every schema (and so every experiment and torch) imported up front
    "eager start (before)": _HELP + "import zfnet_cli.config as c\n[c.schema(n) for n in c.COMMANDS]\n"
                            "from zfnet_cli.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n",
}


def _once(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    parser.add_argument("--output-root", default="outputs")
    args = parser.parse_args()

    for code in SIDES.values():  # warm-up: the page cache holds every file afterwards
        _once(code)
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    for _ in range(args.repeats):
        for name, code in SIDES.items():
            times[name].append(_once(code))
    med = {name: statistics.median(t) for name, t in times.items()}
    out = {"benchmark": "zfnet --help start time", "python": sys.executable,
           "repeats": args.repeats, "seconds": times, "median_seconds": med,
           "speedup_over_eager": med["eager start (before)"] / med["zfnet --help"], "goal": "< 0.5 s"}

    from zfnet_cli.runs import new_run_dir

    run = Path(args.out) if args.out else new_run_dir(Path(args.output_root), "bench")
    run.mkdir(parents=True, exist_ok=True)
    (run / "bench_start.json").write_text(json.dumps(out, indent=2) + "\n")
    with open(run / "bench_start.md", "a") as f:
        f.write(f"| `scripts/bench_start.py`: `zfnet --help`, median of {args.repeats} fresh "
                f"processes | {med['zfnet --help']:.2f} s | eager start {med['eager start (before)']:.2f} s, "
                f"`python -c pass` {med['python -c pass']:.2f} s | "
                f"{out['speedup_over_eager']:.0f}x | < 0.5 s |\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.2))
    names = list(SIDES)
    ax.barh(names, [med[n] for n in names], color=["#999", "#2a7", "#c44"])
    for i, n in enumerate(names):
        ax.text(med[n], i, f" {med[n]:.2f} s", va="center")
    ax.axvline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"seconds to answer (median of {args.repeats}); dashed: the 0.5 s goal")
    ax.invert_yaxis()
    ax.set_xlim(0, max(med.values()) * 1.25)
    fig.tight_layout()
    (run / "figures").mkdir(exist_ok=True)
    fig.savefig(run / "figures" / "bench_start.png", dpi=120)
    print(f"start: zfnet --help {med['zfnet --help']:.2f} s, eager start "
          f"{med['eager start (before)']:.2f} s, python -c pass {med['python -c pass']:.2f} s "
          f"(goal < 0.5 s) -> {run / 'bench_start.json'}")


if __name__ == "__main__":
    main()
