"""Put one `make paper-small` run's numbers into README.md: the claims table, Table 3 and the
"ours" column of the figure-by-figure table.

The README's small-scale numbers come from one run, named with its date, commit, thread count
and library versions, never typed by hand. This script rewrites two marked blocks from the
run's files:

* ``<!-- paper-small:begin -->`` ... ``<!-- paper-small:end -->``: the run's provenance (the
  first ablation variant's ``run.json``: commit, start time, versions, torch threads), the claims
  table of ``ROOT/report/latest/claims.json`` (written by ``zfnet report``, the last step of the
  target) and Table 3, rendered from the newest ablation's variants by ``zfnet ablate``'s own
  table code (mean ± std over seeds, with the test columns where the variants were scored on
  test);
* ``<!-- paper-small-figures:begin -->`` ... ``<!-- paper-small-figures:end -->``: the table
  that maps every figure and table of the paper to its command, with the paper's number and
  ours. The commands and the paper's numbers are fixed text (:data:`FIGURES`); each "ours" cell
  is read from the run (the claims rows, the ablation, the transfer and visualize runs), except
  the rows that ``make paper-small`` does not run, whose cell says where its number comes from.

With ``--real ROOT`` it also rewrites ``<!-- claims-real:begin -->`` ... ``<!-- claims-real:end
-->`` from one ``make claims-real`` run: the rows of its report measured on a network other than
ours (the real ImageNet network), with the run's commit, date, thread count and versions (the
first command's ``run.json``). Either root may be given alone.

Usage::

    python scripts/readme_claims.py outputs/paper-small --wall "2 h 5 min"
    python scripts/readme_claims.py --real outputs/claims-real --real-wall "25 min"
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, NamedTuple

from zfnet_cli import claims as claims_mod
from zfnet_cli import paper
from zfnet_cli.runs import run_folders
from zfnet_cli.experiments import ablate
from zfnet_cli.experiments.report import eval_only_rows
from zfnet_cli.tables import md_cell, mean_std
from zfnet_cli.transfer import fold_summary

BEGIN, END = "<!-- paper-small:begin -->", "<!-- paper-small:end -->"
FIG_BEGIN, FIG_END = "<!-- paper-small-figures:begin -->", "<!-- paper-small-figures:end -->"
REAL_BEGIN, REAL_END = "<!-- claims-real:begin -->", "<!-- claims-real:end -->"
REAL_COMMANDS = ("invariance", "occlude", "transfer")  # what make claims-real runs, in order


def _latest_report(root: Path) -> Path:
    """The newest report folder under ``root``, named as the README shows it: under ``root`` as
    given (the dated folder, not ``latest``, and not made absolute: a README shows no home path)."""
    return root / "report" / (root / "report" / "latest").resolve().name


def _ms(values: list[float]) -> str:
    """``"mean ± std"`` (sample std) of ``values``; the value alone when there is one."""
    s = fold_summary(values)
    return mean_std(s["mean"], s["std"] if len(values) > 1 else None)


class Run(NamedTuple):
    """The files of one ``make paper-small`` output root that the README reads."""

    root: Path
    report: Path  # ROOT/report/latest, resolved
    claims: dict[str, dict]  # claims.json rows by key
    ablation: Path  # the newest finished ablation folder
    rows: dict[str, dict]  # Table 3 rows by variant name (ablate.table_rows)
    variants: dict[str, list[dict]]  # each variant's metrics.json per seed


def load(root: Path) -> Run:
    report = _latest_report(root)
    # the small-scale rows only (a root may also hold runs of the real network)
    claims = {c["key"]: c for c in json.loads((report / "claims.json").read_text())
              if c.get("network", claims_mod.OURS) == claims_mod.OURS}
    ablations = [p for p in run_folders(root / "ablate") if (p / "table3.md").is_file()]
    if not ablations:
        raise FileNotFoundError(f"no finished ablation (table3.md) under {root / 'ablate'}")
    ablation = ablations[-1]
    rows = {r["variant"]: r for r in ablate.table_rows(ablation)}
    return Run(root, report, claims, ablation, rows, ablate.finished_variants(ablation))


def table3_markdown(run: Run) -> str:
    """Table 3 of the run, as ``zfnet ablate`` renders it (title line dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        ablate.write_table(list(run.rows.values()), Path(tmp), plot=False)
        lines = (Path(tmp) / "table3.md").read_text().strip().splitlines()
    return "\n".join(lines[2:] if lines and lines[0].startswith("# ") else lines)


def block(root: Path, wall: str | None = None, machine: str = "", run: Run | None = None) -> str:
    """The markdown that goes between the claims markers, from the run under ``root``."""
    run = run or load(root)
    first = sorted((run.ablation / "variants").glob("*/run.json"))[0]
    meta = json.loads(first.read_text())
    v = meta["versions"]
    rev = meta["git_revision"][:7]
    # the report (and so the claims' verdicts) may be rebuilt from the run's files by a later
    # commit; say so when it was
    rep = json.loads((run.report / "run.json").read_text()) if (run.report / "run.json").is_file() else {}
    rep_rev = str(rep.get("git_revision", ""))[:7]
    lines = [f"From one `make paper-small` run: commit `{rev}`, started "
             f"{meta['started']} UTC, torch {v['torch']}, torchvision {v['torchvision']}, "
             f"numpy {v['numpy']}, {meta['torch_threads']} torch threads, {v['platform']}"
             + (f", {machine}" if machine else "")
             + (f"; the whole target took {wall}" if wall else "") + ". Report: "
             f"`{run.report}`"
             + (f", rebuilt from the run's files by `zfnet report` at commit `{rep_rev}`"
                if rep_rev and rep_rev != rev else "") + ".", "",
             "| figure / table | claim | ours (mean ± std over seeds, n) | paper | verdict |",
             "|---|---|---|---|---|"]
    for c in run.claims.values():
        lines.append(f"| {md_cell(c['where'])} | {md_cell(c['claim'])} | {md_cell(c['ours'])} | "
                     f"{md_cell(c['paper'])} | **{md_cell(c['verdict'])}** |")
    counts = Counter(c["verdict"] for c in run.claims.values())
    lines += ["", "Verdicts: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".", "",
              "Table 3 of that run (error in %, mean ± std over seeds; the paper's in brackets):",
              "", table3_markdown(run)]
    return "\n".join(lines)


# ---------------------------------------------------------------- the figure table

def _claim(run: Run, prefix: str) -> str:
    """A claim row (the first whose key starts with ``prefix``) as "ours: verdict"."""
    c = next((c for k, c in run.claims.items() if k.startswith(prefix)), None)
    if c is None or not c.get("n"):
        return "not measured"
    split = f", {c['split']} split" if c.get("split") else ""
    return f"{c['ours'].removesuffix(')')}{split}): {c['verdict']}"


def _error(run: Run, name: str, key: str) -> str:
    r = run.rows.get(name)
    if r is None or key not in r:
        return "-"
    return _ms(r[f"{key}_values"])


def _seeds(run: Run, name: str) -> int:
    return len(run.variants.get(name, []))


def _newest(run: Run, command: str, keep: Callable[[dict], bool]) -> list[dict]:
    """The metrics of the runs of ``command`` that ``keep`` accepts, one per checkpoint."""
    return [m for _, m in claims_mod.replicates(run.root, command, keep=keep)]


def ours_recipe(run: Run) -> str:
    zf = run.variants.get("zfnet", [])
    if not zf:
        return "not measured"
    # no training time here: a run's own timings vary with whatever shares the machine (the
    # target's whole time heads the claims block; speeds come from make bench)
    return (f"small ZFNet, {zf[0]['num_classes']} classes, {zf[0]['epochs']} epochs: test "
            f"top-1 error {_error(run, 'zfnet', 'test_top1_err')}% (n={len(zf)})")


def ours_table2(run: Run) -> str:
    parts = [f"{label} {_error(run, name, 'val_top1_err')} / {_error(run, name, 'val_top5_err')}"
             f" (n={_seeds(run, name)})"
             for name, label in (("zfnet", "ZFNet"), ("alexnet", "AlexNet replica"))
             if name in run.rows]
    # the newest 10-crop evaluation of each of the two
    crops = {name: (t1, t5) for name, n, t1, t5 in eval_only_rows(run.root)
             if n == "10crop" and name in ("zfnet", "alexnet")}
    crops_text = "; ".join(f"{label} {crops[name][0]:.1f} / {crops[name][1]:.1f}"
                           for name, label in (("zfnet", "ZFNet"), ("alexnet", "AlexNet replica"))
                           if name in crops)
    if not parts:
        return "not measured"
    return ("rich embedded set, val top-1 / top-5 error, centre crop: " + "; ".join(parts)
            + (f"; 10 crops, seed 0 only: {crops_text}" if crops_text else ""))


def ours_fig4(run: Run) -> str:
    runs = _newest(run, "visualize", lambda m: m.get("mode") == "evolution")
    return (f"kept epochs {', '.join(map(str, runs[-1]['epochs']))} of seed 0's ZFNet"
            if runs else "not measured")


def ours_table1(run: Run) -> str:
    return f"layer 5: {_claim(run, 'table1_layer5')}; layer 7: {_claim(run, 'table1_layer7')}"


def ours_fig5(run: Run) -> str:
    return (f"small translations: {_claim(run, 'fig5_translate')}; small scalings: "
            f"{_claim(run, 'fig5_scale')}")


def ours_fig6(run: Run) -> str:
    return (f"dead filters: {_claim(run, 'fig6_dead_filters')}; mid-frequency energy: "
            f"{_claim(run, 'fig6_mid_frequency')}; largest / median filter RMS: "
            f"{_claim(run, 'fig6_renorm')}")


def ours_table3(run: Run) -> str:
    names = (("zfnet", "ZFNet"), ("alexnet", "AlexNet replica"),
             ("alexnet_no_conv34_fc67", "- layers 3,4,6,7"))
    parts = [f"{label} {_error(run, n, 'test_top1_err')} (n={_seeds(run, n)})"
             for n, label in names if n in run.rows]
    return ("test top-1 error: " + ", ".join(parts) + " (every variant: Table 3 under "
            "\"Claims\")") if parts else "not measured"


def ours_transfer(run: Run) -> str:
    return (f"{_claim(run, 'transfer_few_shots')}; {_claim(run, 'transfer_many_shots')}; "
            f"gain few vs many: {_claim(run, 'fig9_gain')}")


def ours_table6(run: Run) -> str:
    runs = _newest(run, "transfer", lambda m: m.get("task") == "multilabel" and "mean_ap" in m)
    if not runs:
        return "not measured"
    aps = [m["mean_ap"] for m in runs]
    return (f"multi-label on the held-out classes: mean AP {_ms(aps)} (n={len(aps)}"
            + (", single run" if len(aps) == 1 else "") + ")")


def ours_table7(run: Run) -> str:
    runs = _newest(run, "transfer", lambda m: m.get("task") == "fewshot" and m.get("per_layer"))
    per: dict[str, list[float]] = {}
    for m in runs:
        for r in m["per_layer"]:
            if r.get("classifier") == "hinge":
                per.setdefault(r["layer"], []).append(r["mean"])
    if not per:
        return "not measured"
    curve = ", ".join(f"{layer} {_ms(v)}" for layer, v in per.items())
    return f"SVM accuracy by layer: {curve} (n={len(runs)}); {_claim(run, 'table7_depth')}"


def _not_run(text: str) -> Callable[[Run], str]:
    return lambda run: f"not in this run: {text}"


def _table1(layer: str) -> str:
    """Table 1's Delta at ``layer``: the parts' range, random squares'."""
    parts = [paper.TABLE1[p][layer][0] for p in claims_mod.TABLE1_PARTS]
    return f"parts {min(parts)}-{max(parts)}, random {paper.TABLE1['random'][layer][0]}"


# (paper, command, paper's number, status, ours). Only the last column is read from the run;
# the paper's numbers come from zfnet_cli.paper.
FIGURES: tuple[tuple[str, str, str, str, Callable[[Run], str]], ...] = (
    ("Fig 3, model", "`zfnet train experiment=zfnet data.root=...`", "62.4M parameters",
     "available", _not_run("62,357,608 parameters at full size (tests/test_model.py)")),
    ("§3, training recipe", "`zfnet train experiment=zfnet data.root=...`",
     "70 epochs, 12 days on a GTX580", "available", ours_recipe),
    ("Table 2, ImageNet val error", "`zfnet train --eval-only --checkpoint RUN --eval-crops 10` "
     "(in `make paper`)", "{} / {} top-1 / top-5 error".format(*paper.TABLE2["zfnet"]),
     "available: 1 and 10 crops",
     ours_table2),
    ("Fig 2, top-9 projections", "`make fig2` (`zfnet visualize --all`)", "qualitative",
     "available", lambda run: "every layer of seed 0's ZFNet, in the report"),
    ("Fig 2 / Fig 7 on your own model", "`zfnet visualize --layer layer3.1 --fmap 42 "
     "checkpoint=resnet18.pth` (`--all`: every block); `zfnet occlude photo.jpg "
     "checkpoint=resnet18.pth` (`project_fmap(model, image, layer, fmap)` from Python)",
     "- (the paper has ZFNet only)", "available: resnet, VGG-BN, DenseNet, MobileNetV3, "
     "EfficientNet, ConvNeXt tested",
     _not_run("torchvision resnet18 with random weights, below")),
    ("Fig 2 for every unit, browsable", "`make explore` (`zfnet explore`; the end of "
     "`make demo`)", "- (the paper shows a random few)", "available",
     _not_run("`make demo`'s model: 352 units of layers 1-5, 6,336 tiles, 44 MB at 64 px")),
    ("Fig 4, feature evolution", "`make fig4` (`zfnet visualize --evolution`)", "qualitative",
     "available", ours_fig4),
    ("Fig 5, invariance", "`make fig5` (`zfnet invariance`)",
     "qualitative: layer 1 sensitive, layer 7 stable", "available", ours_fig5),
    ("Fig 6, first layer against AlexNet's", "`make fig6`",
     "qualitative: dead and high-frequency 11x11/4 filters; one filter dominates without "
     "renormalisation", "available", ours_fig6),
    ("Fig 7, occlusion", "`make fig7` (`zfnet occlude localise=true`)",
     "qualitative: the probability drops when the object is covered", "available",
     lambda run: f"share of images whose worst occluder is on the object against chance: "
                 f"{_claim(run, 'fig7_localisation')}"),
    ("Fig 8, Table 1, correspondence", "`make table1` (`zfnet correspond`)",
     "Delta, layer 5: {}; layer 7: {}".format(*(_table1(layer) for layer in ("conv5", "fc7"))),
     "available", ours_table1),
    ("Table 3, ablation", "`make table3` (`zfnet ablate`; `DATA=` for ImageNet)",
     "val top-1 error: ZFNet {}, AlexNet {}, - layers 3,4,6,7 {}".format(
         *(paper.TABLE3[v][1] for v in ("zfnet", "alexnet", "alexnet_no_conv34_fc67"))),
     "available",
     ours_table3),
    ("Tables 4, 5, Fig 9, transfer", "`make table4`, `make table5`, `make fig9` "
     "(`zfnet transfer`; `CALTECH101=`, `CALTECH256=`)",
     "Caltech-101 {} ± {} at 30/class (scratch {}); Caltech-256 {} at 60 (scratch {})".format(
         *paper.FEWSHOT["caltech101"]["pretrained"][30], paper.FEWSHOT["caltech101"]["scratch"][30][0],
         paper.FEWSHOT["caltech256"]["pretrained"][60][0], paper.FEWSHOT["caltech256"]["scratch"][60][0]),
     "available", ours_transfer),
    ("Table 6, PASCAL VOC", "`make table6` (`zfnet transfer -e voc`; `VOC=`)",
     f"{paper.VOC_MEAN} mean AP (test server)", "available, on VOC val", ours_table6),
    ("Table 7, features per layer", "`make table7` (`zfnet transfer --no-scratch`)",
     "SVM rises from {} (layer 1) to {} (5) on Caltech-101".format(
         *(paper.TABLE7["caltech101"][("hinge", layer)] for layer in ("conv1", "conv5"))),
     "available", ours_table7),
)


def figure_table(root: Path, run: Run | None = None) -> str:
    """The markdown that goes between the figure-table markers, from the run under ``root``."""
    run = run or load(root)
    lines = ["| paper | command | paper's number | ours (`make paper-small`, mean ± std over "
             "seeds, n) | status |", "|---|---|---|---|---|"]
    for paper, command, number, status, ours in FIGURES:
        lines.append(f"| {paper} | {command} | {md_cell(number)} | {md_cell(ours(run))} | "
                     f"{md_cell(status)} |")
    return "\n".join(lines)


def real_block(root: Path, wall: str | None = None, machine: str = "") -> str:
    """The markdown that goes between the claims-real markers, from the ``make claims-real``
    run under ``root``: its report's rows measured on a network other than ours."""
    report = _latest_report(root)
    rows = [c for c in json.loads((report / "claims.json").read_text())
            if c.get("network", claims_mod.OURS) != claims_mod.OURS]
    if not rows:
        raise ValueError(f"{report / 'claims.json'} has no row measured on a network other "
                         "than ours (run make claims-real first)")
    firsts = [r for c in REAL_COMMANDS for r in run_folders(root / c) if (r / "run.json").is_file()]
    if not firsts:
        raise FileNotFoundError(f"no run of {', '.join(REAL_COMMANDS)} under {root}")
    meta = json.loads(min(firsts, key=lambda r: r.name).joinpath("run.json").read_text())
    v = meta["versions"]
    networks = ", ".join(dict.fromkeys(c["network"] for c in rows))
    lines = [f"From one `make claims-real` run on {networks}: commit "
             f"`{str(meta['git_revision'])[:7]}`, started {meta['started']} UTC, torch "
             f"{v['torch']}, torchvision {v['torchvision']}, {meta['torch_threads']} torch "
             f"threads, {v['platform']}" + (f", {machine}" if machine else "")
             + (f"; the whole target took {wall}" if wall else "") + f". Report: `{report}`.",
             "", "| figure / table | claim | measure (A > B) | ours (mean ± std, n) | paper | "
             "verdict |", "|---|---|---|---|---|---|"]
    for c in rows:
        lines.append(f"| {md_cell(c['where'])} | {md_cell(c['claim'])} | "
                     f"{md_cell(c['measure'])} | {md_cell(c['ours'])} | {md_cell(c['paper'])} "
                     f"| **{md_cell(c['verdict'])}** |")
    counts = Counter(c["verdict"] for c in rows)
    lines += ["", "Verdicts: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + "."]
    return "\n".join(lines)


def replace_block(readme: str, new: str, begin: str = BEGIN, end: str = END) -> str:
    """``readme`` with the text between the markers ``begin`` and ``end`` replaced by ``new``."""
    if (readme.count(begin) != 1 or readme.count(end) != 1
            or readme.index(begin) > readme.index(end)):
        raise ValueError(f"README needs exactly one {begin} ... {end} block")
    head, rest = readme.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{new}\n{end}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, nargs="?", help="the make paper-small output root")
    ap.add_argument("--real", type=Path, help="the make claims-real output root")
    ap.add_argument("--real-wall", help="how long make claims-real took, as measured")
    ap.add_argument("--readme", type=Path,
                    default=Path(__file__).resolve().parents[1] / "README.md")
    ap.add_argument("--wall", help="how long the whole target took, as measured (e.g. '2 h 5 min')")
    ap.add_argument("--machine", default="", help="the machine, in words")
    args = ap.parse_args(argv)
    if args.root is None and args.real is None:
        ap.error("give the make paper-small root, --real ROOT, or both")
    try:
        text = args.readme.read_text()
        if args.root is not None:
            run = load(args.root)
            text = replace_block(text, block(args.root, args.wall, args.machine, run))
            text = replace_block(text, figure_table(args.root, run), FIG_BEGIN, FIG_END)
        if args.real is not None:
            text = replace_block(text, real_block(args.real, args.real_wall, args.machine),
                                 REAL_BEGIN, REAL_END)
    except (OSError, ValueError, KeyError, IndexError) as err:
        print(f"readme_claims: {err}", file=sys.stderr)
        return 2
    args.readme.write_text(text)
    print(f"readme_claims: {args.readme} updated from "
          + " and ".join(str(r) for r in (args.root, args.real) if r is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
