"""Put one `make paper-small` run's claims table and Table 3 into README.md.

The README's small-scale numbers come from one run, named with its date, commit, thread count
and library versions, never typed by hand: this script rewrites the block between
``<!-- paper-small:begin -->`` and ``<!-- paper-small:end -->`` from the run's files:

* ``ROOT/report/latest/claims.json`` (written by ``zfnet report``, the last step of the target):
  one row per claim with our mean ± std over seeds, n, the paper's value and the verdict;
* the newest ``ROOT/ablate/*/table3.md`` (mean ± std over seeds per variant) and its first
  variant's ``run.json`` (commit, start time, versions, torch threads).

Usage::

    python scripts/readme_claims.py outputs/paper-small --wall "2 h 5 min"
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from zfnet_cli.checkpoint import run_folders

BEGIN, END = "<!-- paper-small:begin -->", "<!-- paper-small:end -->"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def block(root: Path, wall: str | None = None, machine: str = "") -> str:
    """The markdown that goes between the markers, from the run under ``root``."""
    report = (root / "report" / "latest").resolve()
    claims = json.loads((report / "claims.json").read_text())
    ablations = [p for p in run_folders(root / "ablate") if (p / "table3.md").is_file()]
    if not ablations:
        raise FileNotFoundError(f"no finished ablation (table3.md) under {root / 'ablate'}")
    ablation = ablations[-1]
    first = sorted((ablation / "variants").glob("*/run.json"))[0]
    run = json.loads(first.read_text())
    v = run["versions"]
    lines = [f"From one `make paper-small` run: commit `{run['git_revision'][:7]}`, started "
             f"{run['started']} UTC, torch {v['torch']}, torchvision {v['torchvision']}, "
             f"numpy {v['numpy']}, {run['torch_threads']} torch threads, {v['platform']}"
             + (f", {machine}" if machine else "")
             + (f"; the whole target took {wall}" if wall else "") + ". Report: "
             f"`{report}`.", "",
             "| figure / table | claim | ours (mean ± std over seeds, n) | paper | verdict |",
             "|---|---|---|---|---|"]
    for c in claims:
        lines.append(f"| {_cell(c['where'])} | {_cell(c['claim'])} | {_cell(c['ours'])} | "
                     f"{_cell(c['paper'])} | **{_cell(c['verdict'])}** |")
    counts = Counter(c["verdict"] for c in claims)
    lines += ["", "Verdicts: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".", "",
              "Table 3 of that run (error in %, mean ± std over seeds, n):", "",
              (ablation / "table3.md").read_text().strip()]
    return "\n".join(lines)


def replace_block(readme: str, new: str) -> str:
    """``readme`` with the text between the markers replaced by ``new``."""
    if (readme.count(BEGIN) != 1 or readme.count(END) != 1
            or readme.index(BEGIN) > readme.index(END)):
        raise ValueError(f"README needs exactly one {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{new}\n{END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the make paper-small output root")
    ap.add_argument("--readme", type=Path,
                    default=Path(__file__).resolve().parents[1] / "README.md")
    ap.add_argument("--wall", help="how long the whole target took, as measured (e.g. '2 h 5 min')")
    ap.add_argument("--machine", default="", help="the machine, in words")
    args = ap.parse_args(argv)
    try:
        text = replace_block(args.readme.read_text(), block(args.root, args.wall, args.machine))
    except (OSError, ValueError, KeyError, IndexError) as err:
        print(f"readme_claims: {err}", file=sys.stderr)
        return 2
    args.readme.write_text(text)
    print(f"readme_claims: {args.readme} updated from {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
