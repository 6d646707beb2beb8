"""``zfnet report``: one markdown report of a whole reproduction (``make paper``), and the same
as a web page (``index.html`` beside ``report.md``).

It reads the finished runs under an output root (the newest of each kind: each ``visualize``
mode, each transfer target and task, the newest ablation, ...), copies their figures into the
report folder and puts their tables, which already hold the paper's numbers beside ours, in the
paper's order into ``report.md``. Nothing is recomputed: the report is exactly what the runs
wrote. Its last section, "Claims" (also ``claims.md``, ``claims.csv``, ``claims.json``), judges
each qualitative claim of the paper on every finished run under the root, several seeds
aggregated as mean ± std (:mod:`zfnet_cli.claims`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

from zfnet_cli.runs import finished_runs
from zfnet_cli.engine import Dist
from zfnet_cli.files import write_atomic
from zfnet_cli.paper import TABLE2 as PAPER_TABLE2
from zfnet_cli.schemas import ReportConfig



def _runs(root: Path, command: str) -> list[Path]:
    """Finished runs of ``command`` (a ``metrics.json`` written), oldest first."""
    return finished_runs(root / command)


def _config(run: Path) -> dict:
    import yaml  # PyYAML, which omegaconf depends on

    return yaml.safe_load((run / "config.yaml").read_text()) or {}


def _newest_by(runs: Sequence[Path], key) -> dict:
    """The newest run for each value of ``key(config)``, in first-seen order of the keys."""
    out: dict = {}
    for run in runs:
        out[key(_config(run))] = run
    return out


class _Writer:
    def __init__(self, folder: Path, root: Path):
        self.folder, self.root, self.lines = folder, root, []
        (folder / "figures").mkdir(exist_ok=True)

    def section(self, title: str, run: Optional[Path], text: str = "") -> None:
        self.lines += ["", f"## {title}", ""]
        if run is None:
            self.lines.append("_No finished run found._")
            return
        self.lines.append(f"Run: `{run}`")
        if text:
            self.lines += ["", text]

    def table(self, path: Path) -> None:
        """A table file the run wrote, its own title one level down."""
        if path.is_file():
            body = path.read_text().strip().splitlines()
            if body and body[0].startswith("# "):
                body[0] = "### " + body[0][2:]
            self.lines += [""] + body

    def figures(self, run: Path, names: Optional[Sequence[str]] = None) -> None:
        pngs = sorted((run / "figures").glob("*.png"))
        if names is not None:
            pngs = [p for p in pngs if any(p.name.startswith(n) for n in names)]
        for png in pngs:
            dest = f"{run.parent.name}_{run.name}_{png.name}"
            shutil.copyfile(png, self.folder / "figures" / dest)
            self.lines += ["", f"![{png.stem}](figures/{dest})"]


def eval_only_rows(root: Path) -> list[tuple[str, str, float, float]]:
    """``(model, crops, val top-1 error, val top-5 error)`` of every evaluation-only run under
    ``root`` (``zfnet train eval_only=true``), oldest first; ``model`` is ``zfnet`` or
    ``alexnet`` for an ablation's variant folder of that name, else the checkpoint's path, and
    ``crops`` the key of ``metrics.json`` ``val`` (``1crop``, ``10crop``)."""
    rows = []
    for run in _runs(root, "train"):
        m = json.loads((run / "metrics.json").read_text())
        if not m.get("eval_only"):
            continue
        source = str(m.get("checkpoint", ""))
        name = "zfnet" if "/zfnet/" in source else "alexnet" if "/alexnet/" in source else source
        rows += [(name, crops, e["top1_err"], e["top5_err"]) for crops, e in m["val"].items()]
    return rows


def _table2(w: _Writer, root: Path) -> None:
    """Table 2 from the ablation's ZFNet and AlexNet variants (centre crop) and any
    evaluation-only runs on them (10 crops)."""
    rows = []
    for folder in _runs(root, "ablate")[-1:]:
        for name in ("alexnet", "zfnet"):
            m = folder / "variants" / name / "metrics.json"
            if m.is_file():
                final = json.loads(m.read_text())["final"]
                rows.append((name, "centre crop, after training", 100 - final["val_top1"],
                             100 - final["val_top5"]))
    rows += [(name, f"{crops[:-4]} crop{'s' if crops != '1crop' else ''}, evaluation run", t1, t5)
             for name, crops, t1, t5 in eval_only_rows(root)]
    w.section("Table 2: validation error (one net)", root if rows else None)
    if rows:
        w.lines += ["", "| model | evaluation | val top-1 error | val top-5 error | paper |",
                    "|---|---|---|---|---|"]
        for name, how, t1, t5 in rows:
            ref = PAPER_TABLE2.get(name)
            w.lines.append(f"| {name} | {how} | {t1:.1f} | {t5:.1f} | "
                           f"{f'{ref[0]} / {ref[1]}' if ref else '-'} |")


def _claims(w: _Writer, root: Path) -> dict:
    """The claims section: one row per qualitative claim of the paper, judged on every finished
    run under ``root`` (several seeds = several runs; :mod:`zfnet_cli.claims`), also written as
    ``claims.md``, ``claims.csv`` and ``claims.json`` beside ``report.md``. Returns the count
    of each verdict."""
    from zfnet_cli import claims
    from zfnet_cli.tables import md_cell as cell, write_table

    judged = claims.evaluate(root)
    nets = list(dict.fromkeys(c.network for c in judged))
    write_table([c.as_row() for c in judged], w.folder, "claims",
                title="Claims: which of the paper's claims hold here",
                columns=[("network", lambda r: cell(r["network"])),
                         ("figure / table", lambda r: cell(r["where"])),
                         ("claim", lambda r: cell(r["claim"])),
                         ("measure (A > B)", lambda r: cell(r["measure"])),
                         ("read from", lambda r: cell(f"`{r['source']}`")),
                         ("ours (mean ± std over replicates, n)", lambda r: cell(r["ours"])),
                         ("paper's value", lambda r: cell(r["paper"])),
                         ("verdict", lambda r: cell(f"**{r['verdict']}**")),
                         ("why", lambda r: cell(r["detail"]))],
                notes=[f"Rule: {claims.RULE} On our ZFNet a replicate is one trained model "
                       "(one seed): several runs on one checkpoint count once, the newest (a "
                       "test-split run before any val-split one; 'read from' names the split). "
                       "On another network (one trained model) a replicate is a photo (Fig 5, "
                       "Fig 7) or a fold of sampled training images (transfer), as n says. "
                       f"Runs read: every finished run under `{root}`."])
    w.lines += ["", "## Claims", ""]
    if len(nets) > 1:
        _side_by_side(judged, nets, w.folder)
        w.table(w.folder / "claims_by_network.md")
    w.table(w.folder / "claims.md")
    return {v: sum(c.verdict == v for c in judged) for v in claims.VERDICTS}


def _side_by_side(judged: Sequence, nets: list[str], folder: Path) -> None:
    """``claims_by_network.md``: the claims measured on several networks, one row per claim,
    each network's value and verdict side by side."""
    from zfnet_cli.tables import md_cell as cell

    by_key: dict[str, dict] = {}
    for c in judged:  # a claim's key, less its transfer target: "table7_depth (Caltech-101)"
        by_key.setdefault(c.key.split(" (")[0], {}).setdefault(c.network, c)
    lines = ["# Claims side by side: each network's value and verdict", "",
             "| figure / table | claim | " + " | ".join(cell(n) for n in nets) + " |",
             "|---|---|" + "---|" * len(nets)]
    for row in by_key.values():
        first = next(iter(row.values()))
        cells = [cell(f"{row[n].ours}: **{row[n].verdict}**") if n in row else "-" for n in nets]
        lines.append(f"| {cell(first.where)} | {cell(first.claim)} | " + " | ".join(cells) + " |")
    write_atomic(folder / "claims_by_network.md", "\n".join(lines) + "\n")


def write_html(folder: Path) -> Path:
    """``folder/index.html`` beside ``folder/report.md``: every section of the markdown, whoever
    wrote it, as one self-contained page (same figures, relative links, no scripts)."""
    from zfnet_cli.webpages import html_page

    text = (folder / "report.md").read_text()
    title = next((l[2:].strip() for l in text.splitlines() if l.startswith("# ")), "report")
    path = folder / "index.html"
    path.write_text(html_page(text, title))
    return path


def run(cfg: ReportConfig, run_dir: str | Path, *, dist_info: Dist | None = None,
        overrides: Sequence[str] = ()) -> dict:
    """Write ``run_dir/report.md`` (and ``run_dir/figures/``) from the runs under ``cfg.root``."""
    root, folder = Path(cfg.root), Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no output root {root} (run the experiments first, e.g. make paper)")
    w = _Writer(folder, root)
    w.lines = [f"# {cfg.title}", "", f"Every table and figure below was written by a run under "
               f"`{root}`; the paper's numbers sit beside ours in each table."]

    ablations = _runs(root, "ablate")
    _table2(w, root)
    vis = _newest_by(_runs(root, "visualize"), lambda c: c.get("mode", "top9"))
    inv = _runs(root, "invariance")[-1:]
    for title, run_ in (("Fig 2: top-9 activations and their projections", vis.get("top9")),
                        ("Fig 4: feature evolution during training", vis.get("evolution")),
                        ("Fig 5: invariance to translation, scale and rotation",
                         inv[0] if inv else None),
                        ("Fig 6: first-layer filters and layer-2 features", vis.get("filters"))):
        w.section(title, run_)
        if run_:
            w.figures(run_)
    occ = _runs(root, "occlude")[-1:] or [None]
    w.section("Fig 7: occlusion sensitivity", occ[0])
    if occ[0]:
        loc = json.loads((occ[0] / "metrics.json").read_text()).get("localisation")
        if loc:
            w.lines += ["", f"Localisation check: {json.dumps(loc)}"]
        w.figures(occ[0])
    cor = _runs(root, "correspond")[-1:] or [None]
    w.section("Fig 8, Table 1: correspondence", cor[0])
    if cor[0]:
        w.table(cor[0] / "table1.md")
        w.figures(cor[0])
    w.section("Table 3: architecture ablation", ablations[-1] if ablations else None)
    if ablations:
        w.table(ablations[-1] / "table3.md")
        w.figures(ablations[-1])
    transfers = _newest_by(_runs(root, "transfer"),
                           lambda c: (c.get("target"), "multilabel" if c.get("task") == "multilabel"
                                      or c.get("target") == "voc" else "fewshot"))
    for (target, task), run_ in transfers.items():
        if task == "fewshot":
            w.section(f"Tables 4, 5, 7 and Fig 9: transfer to {target}", run_)
            w.table(run_ / "transfer.md")
            w.table(run_ / "table7.md")
        else:
            w.section(f"Table 6: multi-label transfer to {target}", run_)
            w.table(run_ / "table6.md")
        w.figures(run_)
    if not transfers:
        w.section("Tables 4-7 and Fig 9: transfer", None)
    verdicts = _claims(w, root)
    write_atomic(folder / "report.md", "\n".join(w.lines) + "\n")
    write_html(folder)
    sections = sum(1 for line in w.lines if line.startswith("## "))
    missing = sum(1 for line in w.lines if line == "_No finished run found._")
    metrics = {"report": str(folder / "report.md"), "html": str(folder / "index.html"),
               "root": str(root), "sections": sections, "missing": missing, "claims": verdicts,
               "claims_table": str(folder / "claims.md")}
    write_atomic(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(f"zfnet report: {sections} sections, {missing} without a finished run; claims: "
          + ", ".join(f"{n} {v}" for v, n in verdicts.items()))
    return metrics
