"""The paper's tables as files (markdown for reading, CSV for spreadsheets, JSON for scripts) and
the plots drawn from them: Table 3's ablation bars, Fig 9's accuracy against training images per
class and Table 7's accuracy per layer."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable, Optional, Sequence

from zfnet_cli.viz import _save_figure, plt
from zfnet_cli.files import write_atomic

Column = tuple[str, Callable[[dict], str]]  # (header, row -> cell text)


def write_table(rows: Sequence[dict], folder: str | Path, name: str, *, title: str,
                columns: Sequence[Column], notes: Sequence[str] = ()) -> Path:
    """``folder/name.md`` (a markdown table of ``columns`` under ``title``, then ``notes``),
    ``folder/name.csv`` and ``folder/name.json`` (every key of every row). Returns the .md path."""
    folder = Path(folder)
    rows = list(rows)
    write_atomic(folder / f"{name}.json", json.dumps(rows, indent=2) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=keys or ["empty"])
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    write_atomic(folder / f"{name}.csv", text.getvalue())
    lines = [f"# {title}", "", "| " + " | ".join(h for h, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    if notes:
        lines += [""] + list(notes)
    path = folder / f"{name}.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def md_cell(text) -> str:
    """``text`` as one markdown table cell: pipes escaped, line breaks as spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def mean_std(mean: Optional[float], std: Optional[float]) -> str:
    """``"83.8 ± 0.5"``, or ``"-"`` when there is no value."""
    if mean is None:
        return "-"
    return f"{mean:.1f} ± {std:.1f}" if std is not None else f"{mean:.1f}"


def ablation_figure(rows: Sequence[dict], path, *, title: str = "Table 3: ablation") -> Path:
    """Grouped bars per variant: our train top-1, val top-1 and val top-5 error (± the std over
    seeds where a row has ``<key>_std``), with the paper's as black ticks on each bar."""
    import numpy as np

    keys = [("train_top1_err", "train top-1"), ("val_top1_err", "val top-1"),
            ("val_top5_err", "val top-5")]
    x = np.arange(len(rows))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.2))
    for j, (key, label) in enumerate(keys):
        pos = x + (j - 1) * width
        # error bars: the std over seeds where a row has several (zfnet ablate seeds=N)
        ax.bar(pos, [r[key] for r in rows], width, label=label,
               yerr=[r.get(f"{key}_std") or 0.0 for r in rows], capsize=2)
        ax.scatter(pos, [r[f"paper_{key}"] for r in rows], marker="_", s=220, color="black",
                   zorder=3, label="paper" if j == 0 else None)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="error (%)", ylim=(0, 100))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, path, title, dpi=120)


def shots_figure(curves: dict[str, Sequence[dict]], path, *, title: str,
                 paper: Optional[dict[str, dict[int, float]]] = None) -> Path:
    """Fig 9: mean per-class accuracy (± std over folds) against training images per class, one
    line per curve (e.g. pretrained, scratch); the paper's values, if given, as open markers."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, (label, points) in enumerate(curves.items()):
        pts = sorted(points, key=lambda p: p["shots"])
        color = f"C{i}"
        ax.errorbar([p["shots"] for p in pts], [p["mean"] for p in pts],
                    yerr=[p["std"] for p in pts], fmt="o-", capsize=3, color=color, label=label)
        if paper and label in paper:
            ref = sorted(paper[label].items())
            ax.plot([s for s, _ in ref], [a for _, a in ref], "s--", mfc="none", color=color,
                    alpha=0.7, label=f"{label} (paper)")
    ax.set(xlabel="training images per class", ylabel="mean per-class accuracy (%)",
           ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, path, title, dpi=120)


def layers_figure(rows: Sequence[dict], path, *, title: str) -> Path:
    """Table 7 as a plot: accuracy (± std) against layer, one line per classifier."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    for i, loss in enumerate(dict.fromkeys(r["classifier"] for r in rows)):
        pts = [r for r in rows if r["classifier"] == loss]
        ax.errorbar([layers.index(r["layer"]) for r in pts], [r["mean"] for r in pts],
                    yerr=[r["std"] for r in pts], fmt="o-", capsize=3, color=f"C{i}", label=loss)
    ax.set_xticks(range(len(layers)), layers)
    ax.set(xlabel="layer", ylabel="mean per-class accuracy (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(fig, path, title, dpi=120)
