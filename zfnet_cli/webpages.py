"""A static, self-contained web site of every unit's top-9 (Fig 2 for all feature maps), and a
tiny markdown-to-HTML converter for the report.

The paper shows a random handful of feature maps per layer; the explorer shows all of them.
:class:`ExplorerSite` writes, into one folder::

    index.html                 the layers, with their unit counts and links
    <layer>.html               one page per layer: every unit's 9 projections beside its 9
                               patches (the Fig 2 pair), a unit box, next / previous, sorting,
                               and for the chosen unit its images, classes, values, positions
    data/<layer>.js            the layer's numbers, as a script (file:// pages cannot fetch JSON)
    img/<layer>/<unit>_p<j>.png, _i<j>.png, _e<epoch>.png   the tiles, one small file each
    explorer.js, explorer.css  the page logic and style (no CDN, no network)

It opens from ``file://`` with no server: data arrive by ``<script src>``, images are
``loading="lazy"`` files, so a layer of 512 units opens at once and the site's size is
proportional to units x 18 tiles. Nothing here imports torch, typer or hydra; the tiles come in
as uint8 arrays.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

ASSETS = Path(__file__).resolve().parent / "site_assets"


@dataclass
class UnitRecord:
    """What the explorer shows of one unit (feature map): its top-k, strongest first.

    Attributes:
        values: activation values, strongest first.
        images: image names (as the data set names them), one per record.
        classes: the true class of each image.
        positions: (y, x) of each activation in the layer's output.
        boxes: (y0, x0, y1, x1) the receptive-field box each tile was cut at, input pixels.
        similarity: the unit's image similarity (:mod:`zfnet_cli.sanity`: the same seed through
            other shown images, mean correlation; near 1: a template), or ``None``.
        fields: the whole receptive field of each activation (y0, x0, y1, x1) where the tile
            was cut at a smaller box (deep layers: where the projection concentrates).
    """

    values: Sequence[float]
    images: Sequence[str]
    classes: Sequence[str]
    positions: Sequence[Sequence[int]]
    boxes: Sequence[Sequence[int]]
    similarity: Optional[float] = None
    fields: Optional[Sequence[Sequence[int]]] = None


@dataclass
class _Layer:
    name: str
    shape: tuple
    rule: str = "deconvnet"
    conditioning: dict = field(default_factory=dict)  # kind -> count (switches, masks, ...)
    warning: str = ""
    threshold: Optional[float] = None  # image similarity above this flags a unit
    units: dict = field(default_factory=dict)  # unit index -> record dict
    epochs: list = field(default_factory=list)


def _tile(img: np.ndarray, cell: int) -> Image.Image:
    """An (h, w, 3) uint8 array as a PIL image no larger than ``cell`` on its long side (small
    tiles stay small: the page scales them up with crisp pixels)."""
    im = Image.fromarray(np.ascontiguousarray(img))
    if max(im.size) > cell:
        s = cell / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
    return im


def _js_name(layer: str) -> str:
    """A layer name as a file stem (``layer3.1`` -> ``layer3.1``; anything odd -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer)


class ExplorerSite:
    """Writes the explorer site unit by unit, then its pages (see the module docstring).

    Args:
        folder (str or Path): where the site goes (made if missing).
        title (str): shown on every page.
        cell (int, optional): the long side, in pixels, tiles are stored at (at most).
            Default: 64.

    Example:
        >>> import numpy as np, tempfile
        >>> site = ExplorerSite(tempfile.mkdtemp(), "demo")
        >>> site.add_layer("conv1", (4, 8, 8))
        >>> tile = np.zeros((5, 5, 3), np.uint8)
        >>> site.add_unit("conv1", 0, UnitRecord([1.5], ["val/3"], ["cat"], [[2, 2]], [[0, 0, 5, 5]]),
        ...               [tile], [tile])
        >>> site.finish({"images scanned": 1}).name
        'index.html'
    """

    def __init__(self, folder: str | Path, title: str, *, cell: int = 64):
        self.folder, self.title, self.cell = Path(folder), title, cell
        self.layers: dict[str, _Layer] = {}
        (self.folder / "data").mkdir(parents=True, exist_ok=True)

    def add_layer(self, layer: str, shape: Sequence[int], *, rule: str = "deconvnet",
                  conditioning: Optional[dict] = None, warning: str = "",
                  threshold: Optional[float] = None) -> None:
        """Announce a layer (in bottom-to-top order) with its output shape (C, h, w), the
        projection rule, what conditions its projections on the image (``conditioning``:
        counts of switches, masks, gates, norms), a warning shown above its units (a template)
        and the image-similarity threshold above which a unit is flagged."""
        self.layers[layer] = _Layer(layer, tuple(int(s) for s in shape), rule,
                                    dict(conditioning or {}), warning, threshold)
        (self.folder / "img" / _js_name(layer)).mkdir(parents=True, exist_ok=True)

    def _save(self, layer: str, name: str, img: np.ndarray) -> str:
        rel = f"img/{_js_name(layer)}/{name}.png"
        _tile(img, self.cell).save(self.folder / rel, optimize=False)
        return rel

    def add_unit(self, layer: str, unit: int, record: UnitRecord,
                 projections: Sequence[np.ndarray], patches: Sequence[np.ndarray]) -> None:
        """One unit's top-k: its numbers and its tiles ((h, w, 3) uint8, strongest first),
        written to ``img/<layer>/`` at once (memory stays one unit's worth)."""
        n = len(record.values)
        if not (len(projections) == len(patches) == len(record.images) == n):
            raise ValueError(f"{layer} unit {unit}: {n} values but {len(projections)} "
                             f"projections, {len(patches)} patches, {len(record.images)} images")
        self.layers[layer].units[int(unit)] = {
            "unit": int(unit), "values": [round(float(v), 5) for v in record.values],
            "images": [str(s) for s in record.images], "classes": [str(c) for c in record.classes],
            "positions": [list(map(int, p)) for p in record.positions],
            "boxes": [list(map(int, b)) for b in record.boxes],
            "similarity": None if record.similarity is None else round(record.similarity, 4),
            "fields": [list(map(int, b)) for b in (record.fields or record.boxes)],
            "proj": [self._save(layer, f"{unit}_p{j}", p) for j, p in enumerate(projections)],
            "patch": [self._save(layer, f"{unit}_i{j}", q) for j, q in enumerate(patches)]}

    def add_evolution(self, layer: str, epoch: int, tiles: dict[int, np.ndarray],
                      values: dict[int, float]) -> None:
        """Fig 4 for every unit: at kept ``epoch``, each unit's strongest activation projected
        (``tiles``: unit -> (h, w, 3) uint8) and its value."""
        lay = self.layers[layer]
        lay.epochs.append(int(epoch))
        for unit, img in tiles.items():
            u = lay.units[int(unit)]
            u.setdefault("evolution", []).append(
                {"epoch": int(epoch), "value": round(float(values[unit]), 5),
                 "img": self._save(layer, f"{unit}_e{epoch}", img)})

    def finish(self, meta: dict) -> Path:
        """Write the data files, the layer pages, the index and the assets; returns index.html.

        ``meta``: shown on the index as a two-column table (checkpoint, images scanned, ...)."""
        for name in ("explorer.js", "explorer.css"):
            (self.folder / name).write_text((ASSETS / name).read_text())
        names = list(self.layers)
        for layer in self.layers.values():
            units = [layer.units[u] for u in sorted(layer.units)]
            for u in units:  # what the sort menu needs, computed once here
                u["distinct"] = len(set(u["classes"]))
            data = {"layer": layer.name, "shape": list(layer.shape), "epochs": layer.epochs,
                    "rule": layer.rule, "conditioning": layer.conditioning,
                    "warning": layer.warning, "threshold": layer.threshold, "units": units}
            stem = _js_name(layer.name)
            (self.folder / "data" / f"{stem}.js").write_text(
                "window.EXPLORER = " + json.dumps(data, separators=(",", ":")) + ";\n")
            (self.folder / f"{stem}.html").write_text(self._layer_page(layer.name, names))
        index = self.folder / "index.html"
        index.write_text(self._index_page(meta))
        return index

    # ------------------------------------------------------------ pages

    def _nav(self, names: Sequence[str], current: Optional[str]) -> str:
        here = ' class="here"'
        links = ['<a href="index.html">index</a>'] + [
            f'<a href="{_js_name(n)}.html"{here if n == current else ""}>{html.escape(n)}</a>'
            for n in names]
        return '<nav class="layers">' + " ".join(links) + "</nav>"

    def _head(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title>"
                '<link rel="stylesheet" href="explorer.css"></head>\n')

    def _index_page(self, meta: dict) -> str:
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in meta.items())
        layers = "".join(
            f'<tr><td><a href="{_js_name(l.name)}.html">{html.escape(l.name)}</a></td>'
            f"<td>{len(l.units)}</td><td>{' x '.join(map(str, l.shape))}</td>"
            f"<td>{sum(1 for u in l.units.values() if u['values'] and u['values'][0] > 0)}</td>"
            f"<td>{', '.join(map(str, l.epochs)) or '-'}</td><td>{html.escape(l.rule)}</td>"
            f"<td>{html.escape(_conditioned(l))}</td></tr>"
            for l in self.layers.values())
        return (self._head(self.title) + "<body>" + self._nav(list(self.layers), None)
                + f"<h1>{html.escape(self.title)}</h1>"
                "<p>Every unit (feature map) of each layer: its strongest activations over the "
                "image set (top-k below), each projected to pixels (left; the rule is named per "
                "layer) beside the "
                "image patch it came from (right), as in Fig 2 of Zeiler &amp; Fergus 2014.</p>"
                '<table class="layers"><tr><th>layer</th><th>units</th><th>output (C x h x w)'
                "</th><th>live units</th><th>kept epochs</th><th>rule</th><th>conditioned by"
                "</th></tr>" + layers + "</table>"
                f'<table class="meta">{rows}</table></body></html>\n')

    def _layer_page(self, layer: str, names: Sequence[str]) -> str:
        stem = _js_name(layer)
        return (self._head(f"{layer} · {self.title}") + "<body>" + self._nav(names, layer)
                + f"<h1>{html.escape(layer)} <small>{html.escape(self.title)}</small></h1>"
                + self._rule_line(self.layers[layer]) +
                '<div class="controls">'
                '<label>unit <input id="unit" type="number" min="0" value="0"></label> '
                '<button id="prev" title="previous unit in this order (key: left)">&larr; previous'
                '</button> <button id="next" title="next unit in this order (key: right)">next '
                '&rarr;</button> <label>order <select id="sort">'
                '<option value="unit">unit number</option>'
                '<option value="value">strongest activation</option>'
                '<option value="distinct">fewest distinct classes in the top-9</option>'
                '<option value="distinct_desc">most distinct classes in the top-9</option>'
                '</select></label> <span id="position"></span></div>'
                '<section id="detail"></section>'
                '<h2>All units <small>(click one; projection | image patch)</small></h2>'
                '<div id="grid"></div>'
                f'<script src="data/{stem}.js"></script><script src="explorer.js"></script>'
                "</body></html>\n")


    def _rule_line(self, lay: "_Layer") -> str:
        line = (f'<p class="rule">projections: {html.escape(lay.rule)} rule; conditioned on the '
                f'image by {html.escape(_conditioned(lay))}</p>')
        if lay.warning:
            line += f'<p class="warning" id="warning">{html.escape(lay.warning)}</p>'
        return line


def _conditioned(lay: "_Layer") -> str:
    """``2 switches, 5 masks`` or ``nothing (a template)``."""
    parts = [f"{n} {k}" for k, n in lay.conditioning.items() if n]
    return ", ".join(parts) if parts else "nothing (template)"


# ---------------------------------------------------------------- markdown -> HTML (the report)

_INLINE = [(re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)"),
            lambda m: f'<img alt="{m.group(1)}" src="{m.group(2)}" loading="lazy">'),
           (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>'),
           (re.compile(r"\*\*([^*]+)\*\*"), lambda m: f"<strong>{m.group(1)}</strong>"),
           (re.compile(r"(?<![\w*])_([^_]+)_(?![\w*])"), lambda m: f"<em>{m.group(1)}</em>"),
           (re.compile(r"(?<!\*)\*([^*\s][^*]*)\*(?!\*)"), lambda m: f"<em>{m.group(1)}</em>")]


def _inline(text: str) -> str:
    """Escape, then code spans (kept literal), images, links, bold, italics."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if p.startswith("`") and p.endswith("`") and len(p) >= 2:
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
            continue
        p = html.escape(p, quote=False)
        for pattern, repl in _INLINE:
            p = pattern.sub(repl, p)
        out.append(p)
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> str:
    """The markdown subset our reports use, as an HTML fragment: ``#`` headings, paragraphs,
    pipe tables, ``-`` / ``*`` / ``1.`` lists, fenced code, images, links, bold, italics and
    code spans. Everything else is kept as (escaped) text, so no input breaks the page.

    Args:
        text (str): markdown.

    Returns:
        str: HTML (no ``<html>`` wrapper; see :func:`html_page`).

    Example:
        >>> markdown_to_html("# T\\n\\n| a | b |\\n|---|---|\\n| 1 | `x` |")
        '<h1 id="t">T</h1>\\n<table>\\n<tr><th>a</th><th>b</th></tr>\\n<tr><td>1</td><td><code>x</code></td></tr>\\n</table>'
    """
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if s.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append("<pre><code>" + html.escape("\n".join(block)) + "</code></pre>")
        elif m := re.match(r"(#{1,6})\s+(.*)", s):
            flush()
            n = len(m.group(1))
            slug = re.sub(r"[^a-z0-9]+", "-", m.group(2).lower()).strip("-")
            out.append(f'<h{n} id="{slug}">{_inline(m.group(2))}</h{n}>')
        elif (s.startswith("|") and i + 1 < len(lines)
              and re.fullmatch(r"\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?", lines[i + 1].strip())):
            flush()
            rows = ["<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(s)) + "</tr>"]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i]))
                            + "</tr>")
                i += 1
            out.append("<table>\n" + "\n".join(rows) + "\n</table>")
            continue
        elif re.match(r"([-*]|\d+\.)\s+", s):
            flush()
            ordered = bool(re.match(r"\d+\.", s))
            items = []
            while i < len(lines) and re.match(r"([-*]|\d+\.)\s+", lines[i].strip()):
                items.append("<li>" + _inline(re.sub(r"^([-*]|\d+\.)\s+", "", lines[i].strip()))
                             + "</li>")
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(items) + f"</{tag}>")
            continue
        elif not s:
            flush()
        else:
            para.append(s)
        i += 1
    flush()
    return "\n".join(out)


_PAGE_CSS = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;height:auto;display:block;margin:.5em 0}
code{background:#f3f3f3;padding:0 .2em}h2{border-bottom:1px solid #ddd;margin-top:2em}
nav.toc a{margin-right:.8em}"""


def html_page(markdown: str, title: str) -> str:
    """A whole self-contained HTML page (inline style, no scripts, no network) from markdown,
    with a table of contents of its ``##`` sections."""
    body = markdown_to_html(markdown)
    toc = " ".join(f'<a href="#{m.group(1)}">{m.group(2)}</a>'
                   for m in re.finditer(r'<h2 id="([^"]*)">(.*?)</h2>', body))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_PAGE_CSS}</style></head><body>\n"
            + (f'<nav class="toc">{toc}</nav>\n' if toc else "") + body + "\n</body></html>\n")
