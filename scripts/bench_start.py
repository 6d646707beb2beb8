"""Benchmark: how long the command takes to answer, in fresh processes: ``zfnet --help``, and
the one-line error of a bad override (``zfnet train optim.lrr=1``), against ``python -c pass``
(the interpreter alone) and against the starts the command had before: ``--help`` with every
command's experiment (and so torch) imported up front, and the error with the train experiment
imported before the config composed (the schemas lived in the experiment modules then).

    python scripts/bench_start.py [--repeats 7] [--out DIR]

Each side is a fresh process (``sys.executable``), run ``--repeats`` times alternating, after one
warm-up each (the files then sit in the page cache for all of them); medians are compared. Goal:
``zfnet --help`` and the error under 0.5 s. Writes ``bench_start.json``, a row in
``bench_start.md`` and ``figures/bench_start.png`` into ``--out`` (default: a new
``outputs/bench/<date_time>``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _bench import run_folder, write_results
from zfnet_cli.config import COMMANDS

_MAIN = ("from zfnet_cli.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
         "    assert e.code in {codes}, e.code\n")
_HELP = "import sys\nsys.argv = ['zfnet', '--help']\n" + _MAIN.format(codes="(0, None)")
_BAD = "import sys\nsys.argv = ['zfnet', 'train', 'optim.lrr=1']\n" + _MAIN.format(codes="(2,)")
_EAGER = ("import importlib\nfor c in {commands!r}:\n"
          "    importlib.import_module('zfnet_cli.experiments.' + c)\n")
SIDES = {
    "python -c pass": "pass",
    "zfnet --help": _HELP,
    "zfnet train optim.lrr=1 (error)": _BAD,
    # the starts before: every experiment (and so torch) imported up front for --help; the train
    # experiment imported before its config composed, for the error
    "eager --help (before)": _EAGER.format(commands=COMMANDS) + _HELP,
    "error with train imported (before)": _EAGER.format(commands=("train",)) + _BAD,
}


def _once(code: str) -> float:
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t0
    if run.returncode != 0:  # a side that did not answer as expected measures nothing
        sys.exit(f"bench_start: {code!r} failed:\n{run.stderr}")
    return took


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
    help_, error = med["zfnet --help"], med["zfnet train optim.lrr=1 (error)"]
    out = {"benchmark": "zfnet start time: --help and a bad override's error",
           "python": sys.executable, "repeats": args.repeats, "seconds": times,
           "median_seconds": med, "load_average": os.getloadavg(),
           "speedup_over_eager": med["eager --help (before)"] / help_,
           "error_speedup_over_before": med["error with train imported (before)"] / error,
           "goal": "< 0.5 s"}

    run = run_folder(args.out, args.output_root)
    write_results(run, "bench_start", out, append=True, markdown=(
        f"| `scripts/bench_start.py`: `zfnet --help` and `zfnet train optim.lrr=1` (its error), "
        f"median of {args.repeats} fresh processes | {help_:.2f} s, error {error:.2f} s | eager "
        f"start {med['eager --help (before)']:.2f} s, error with train imported "
        f"{med['error with train imported (before)']:.2f} s, `python -c pass` "
        f"{med['python -c pass']:.2f} s | {out['speedup_over_eager']:.0f}x, "
        f"{out['error_speedup_over_before']:.0f}x | < 0.5 s |\n"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.8))
    names = list(SIDES)
    ax.barh(names, [med[n] for n in names], color=["#999", "#2a7", "#2a7", "#c44", "#c44"])
    for i, n in enumerate(names):
        ax.text(med[n], i, f" {med[n]:.2f} s", va="center")
    ax.axvline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"seconds to answer (median of {args.repeats}); dashed: the 0.5 s goal")
    ax.invert_yaxis()
    ax.set_xlim(0, max(med.values()) * 1.25)
    fig.tight_layout()
    (run / "figures").mkdir(exist_ok=True)
    fig.savefig(run / "figures" / "bench_start.png", dpi=120)
    before = med["eager --help (before)"], med["error with train imported (before)"]
    print(f"start: zfnet --help {help_:.2f} s, its error {error:.2f} s; before: eager --help "
          f"{before[0]:.2f} s, error {before[1]:.2f} s; python -c pass "
          f"{med['python -c pass']:.2f} s (goal < 0.5 s) -> {run / 'bench_start.json'}")


if __name__ == "__main__":
    main()
