"""Figures: training curves, image grids and heat maps (matplotlib with the Agg backend, PIL)."""
from __future__ import annotations

import functools
import math
import textwrap
from pathlib import Path
from typing import Sequence

import os
import sys

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Agg (files only) for the commands; a notebook that has chosen its backend keeps it
# (zfnet_cli.occlusion.plot_fig7 imports this module there).
if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from zfnet_cli.files import write_atomic  # noqa: E402


def save_png(fig, path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as a PNG through the atomic writer: a reader sees the old
    figure or the whole new one, and a full disk is one :class:`~zfnet_cli.files.WriteError`
    line with nothing left behind."""
    return write_atomic(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))


def _save_figure(fig, path, title: str = "", dpi: int = 100, fontsize: int | None = 10) -> Path:
    """Title, tight layout, write the PNG (making its folder), close the figure."""
    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path = save_png(fig, path, dpi=dpi)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Loss (left) and top-1 / top-5 error (right) per epoch, train and validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_err.plot(epochs, [100 - h["train_top1"] for h in history], "o-", label="train top-1")
    ax_err.plot(epochs, [100 - h["val_top1"] for h in history], "s-", label="val top-1")
    ax_err.plot(epochs, [100 - h["val_top5"] for h in history], "^-", label="val top-5")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error", ylim=(0, 100))
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save_figure(fig, path, title, dpi=120, fontsize=None)


def cascade_figure(result: dict, path: str | Path, title: str = "") -> Path:
    """Cascading randomisation (:func:`zfnet_cli.sanity.cascade`): per rule, Spearman of |map|
    (left) and SSIM (right) against the trained projection, as blocks are re-initialised."""
    steps = ["trained"] + [f"+{b.rsplit('.', 1)[0] if b.count('.') > 1 else b}"
                           for b in result["blocks"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for rule, curve in result["rules"].items():
        for ax, key in zip(axes, ("spearman", "ssim")):
            ax.plot(range(len(steps)), curve[key], "o-", label=rule)
    for ax, key in zip(axes, ("Spearman rank correlation of |map|", "SSIM of |map| / max")):
        ax.set(ylabel=key, ylim=(-0.2, 1.05), xlabel="weights re-initialised, from the layer down")
        ax.set_xticks(range(len(steps)), steps, rotation=60, ha="right", fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save_figure(fig, path, "\n".join(textwrap.wrap(title, 130)), dpi=100, fontsize=9)


# ---------------------------------------------------------------- image grids (PIL)

GREY = (128, 128, 128)
FIGURE_GAIN = 2.0  # projections in figures: see projection_to_image
BORDER = (40, 40, 40)


def projection_to_image(proj, gain: float = 1.0) -> np.ndarray:
    """A deconv projection (3, h, w) float -> (h, w, 3) uint8 for display: divided by its largest
    absolute value and mapped to 128 + 127 * gain * p (clipped), so zero is mid-grey (our
    choice; the paper does not say how it scales reconstructions). Figures use gain 2: the few
    strongest pixels saturate and the structure around them shows."""
    p = np.asarray(proj, dtype=np.float64)
    peak = np.abs(p).max()
    p = p / peak if peak > 0 else p
    return np.clip(128 + 127 * gain * p, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def filter_to_image(w) -> np.ndarray:
    """A first-layer filter (3, k, k) -> (k, k, 3) uint8, zero at mid-grey, scaled by its own
    largest absolute weight (each filter normalised separately, as Fig 6 shows them)."""
    return projection_to_image(w)


def _fit(img, cell: int):
    """Letterbox an (h, w, 3) uint8 array into a cell x cell grey PIL tile (aspect kept)."""
    tile = Image.new("RGB", (cell, cell), GREY)
    im = Image.fromarray(img)
    scale = cell / max(im.width, im.height)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    im = im.resize(size, Image.NEAREST if scale >= 4 else Image.BILINEAR)
    tile.paste(im, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return tile


def image_grid(images: Sequence, cell: int, cols: int, gap: int = 1):
    """Tiles in a grid with ``gap`` px of background between them."""
    rows = max(1, math.ceil(len(images) / cols))
    canvas = Image.new("RGB", (cols * cell + (cols - 1) * gap, rows * cell + (rows - 1) * gap), GREY)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas.paste(_fit(img, cell), (c * (cell + gap), r * (cell + gap)))
    return canvas


TEXT_SIZE = 12  # px, the grids' labels and titles


@functools.lru_cache(maxsize=None)
def font(size: int = TEXT_SIZE) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` px: the TrueType font matplotlib ships in its own data folder
    (always present where matplotlib is, unlike system fonts). PIL's built-in bitmap font
    nearly drops spaces ("activationsover"), so the PIL grids use this one."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)


def draw_len(text: str, size: int = TEXT_SIZE) -> float:
    """Width in pixels of ``text`` in :func:`font` at ``size``."""
    return font(size).getlength(str(text))


def wrap(text: str, width: float, size: int = TEXT_SIZE) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` px (a longer word stays whole)."""
    lines: list[str] = []
    for word in str(text).split(" "):
        if lines and draw_len(lines[-1] + " " + word, size) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


LINE = TEXT_SIZE + 4  # px per line of text


def _canvas(width: int, height: int, title: str, pad: int = 6):
    """A grey canvas ``width`` wide with the title wrapped to that width at its top left, and
    ``height`` px below the title. Returns (canvas, draw, title height)."""
    lines = wrap(title, max(width, 360) - 2 * pad) if title else []  # narrow grids: <= 360 px
    width = max([width] + [int(draw_len(l)) + 2 * pad for l in lines])
    top = len(lines) * LINE + 6 if lines else 0
    canvas = Image.new("RGB", (width, height + top), GREY)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((pad, 3 + i * LINE), line, fill=(255, 255, 255), font=font())
    return canvas, draw, top


def _save(canvas, path) -> Path:
    """A PIL image to ``path`` (format from the suffix) through the atomic writer."""
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    return write_atomic(path, lambda f: canvas.save(f, format=fmt))


def top9_figure(blocks: Sequence[tuple[str, Sequence[tuple]]], path, *, cell: int = 48,
                columns: int = 2, title: str = "") -> Path | Image.Image:
    """Fig 2's layout: per feature map, its projections in a 3x3 grid beside the 3x3 grid of
    the image patches they came from; maps separated by thin dark borders, grey background.

    ``blocks``: (label, [(projection (h,w,3) uint8, patch (h,w,3) uint8), ...]) per map.
    Returns the file written at ``path``, or with ``path=None`` the PIL image."""
    side = max(1, math.ceil(math.sqrt(max(len(c) for _, c in blocks))))
    pad, head = 6, LINE
    grid_w = side * cell + (side - 1)
    bw, bh = 2 * grid_w + 3 * pad, grid_w + head + 2 * pad
    columns = max(1, min(columns, len(blocks)))  # one map: one block wide, not a half-empty row
    rows = math.ceil(len(blocks) / columns)
    canvas, draw, top = _canvas(columns * bw + 1, rows * bh + 1, title, pad)
    for i, (label, cells) in enumerate(blocks):
        r, c = divmod(i, columns)
        x, y = c * bw, top + r * bh
        draw.rectangle([x, y, x + bw, y + bh], outline=BORDER)
        draw.text((x + pad, y + 3), label, fill=(255, 255, 255), font=font())
        canvas.paste(image_grid([p for p, _ in cells], cell, side), (x + pad, y + head + pad))
        canvas.paste(image_grid([q for _, q in cells], cell, side), (x + 2 * pad + grid_w, y + head + pad))
    return canvas if path is None else _save(canvas, path)


def table_figure(rows: Sequence[tuple[str, Sequence]], headers: Sequence[str], path, *,
                 cell: int = 48, title: str = "") -> Path:
    """A grid of images with a label per row and a header per column (Fig 4: one row per
    feature map, one column per epoch)."""
    pad, head = 4, LINE + 2
    label_w = max(int(draw_len(r[0])) for r in rows) + 3 * pad
    ncol = max(len(r[1]) for r in rows)
    width = max(cell, max(int(draw_len(h)) for h in headers) + 6) if headers else cell
    canvas, draw, top = _canvas(label_w + ncol * (width + pad) + pad,
                                head + len(rows) * (cell + pad) + pad, title, pad)
    for j, h in enumerate(headers):
        x = label_w + j * (width + pad) + (width - int(draw_len(h))) // 2
        draw.text((x, top + 2), str(h), fill=(255, 255, 255), font=font())
    for i, (label, images) in enumerate(rows):
        y = top + head + i * (cell + pad)
        draw.text((pad, y + cell // 2 - TEXT_SIZE // 2 - 1), label, fill=(255, 255, 255),
                  font=font())
        for j, img in enumerate(images):
            x = label_w + j * (width + pad) + (width - cell) // 2
            canvas.paste(_fit(img, cell), (x, y))
            draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=BORDER)
    return _save(canvas, path)


def panels_figure(panels: Sequence[tuple[str, object]], path, *, title: str = "") -> Path:
    """PIL images side by side, each under its caption (Fig 6's comparison)."""
    pad, head = 8, LINE + 2
    widths = [max(p.width, int(draw_len(c)) + 4) for c, p in panels]  # captions never overlap
    w = sum(widths) + pad * (len(panels) + 1)
    h = max(p.height for _, p in panels) + head + 2 * pad
    canvas, draw, top = _canvas(w, h, title, pad)
    x = pad
    for (caption, p), width in zip(panels, widths):
        draw.text((x, top + pad), caption, fill=(255, 255, 255), font=font())
        canvas.paste(p, (x, top + pad + head))
        x += width + pad
    return _save(canvas, path)



def occlusion_row(image, occluder: tuple[int, int, int], fmap_total, projection, p_target,
                  top_label, classes: Sequence[str], centres, *, overlay=None, title: str = "",
                  fmap: str = "", target: str = "", region: str = ""):
    """Fig 7's row for one image as a matplotlib ``Figure`` (built without pyplot, so it neither
    needs nor changes a backend: a notebook shows it, :func:`occlusion_figure` saves it).

    Panels: (a) the input with the occluder drawn at ``occluder`` (the caller passes the most
    damaging position), (b) total activation of the
    strongest map per occluder position (left out where ``fmap_total`` is ``None``: a
    TorchScript model, whose layers cannot be read), (c) that map's deconv projection (left out where
    ``projection`` is ``None``: no deconvnet for the model), (d) p(correct class) per position, its colours spanning the
    map's own min..max (said on its colour bar), (e) the most probable label per position with a legend of class names, and, where
    ``overlay`` (H, W) is given, (f) that map over the image (the fall in p(correct class) at
    each pixel). Maps are drawn over the image's coordinates: each cell sits at its occluder's
    centre. ``region`` says which part of the photo the image is (a second title line)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    h, w = image.shape[:2]
    cy, cx = centres[:, 0, 0], centres[0, :, 1]
    dy = (cy[1] - cy[0]) if len(cy) > 1 else h
    dx = (cx[1] - cx[0]) if len(cx) > 1 else w
    extent = (cx[0] - dx / 2, cx[-1] + dx / 2, cy[-1] + dy / 2, cy[0] - dy / 2)
    names = ["a"] + (["b"] if fmap_total is not None else []) + \
        (["c"] if projection is not None else []) + ["d", "e"] + \
        (["f"] if overlay is not None else [])
    fig = Figure(figsize=(3.5 * len(names), 3.9))
    axes = dict(zip(names, fig.subplots(1, len(names))))
    y, x, size = occluder
    axes["a"].imshow(image)
    axes["a"].add_patch(Rectangle((x - 0.5, y - 0.5), size, size, facecolor=(0.5, 0.5, 0.5),
                                  edgecolor="white", linewidth=1))
    axes["a"].set_title("(a) input, occluder at its most\ndamaging position (lowest p)", fontsize=9)
    if fmap_total is not None:
        im = axes["b"].imshow(fmap_total, cmap="jet", extent=extent)
        axes["b"].set_title(f"(b) total activation, {fmap}", fontsize=9)
        fig.colorbar(im, ax=axes["b"], fraction=0.046)
    if projection is not None:
        axes["c"].imshow(projection)
        axes["c"].set_title(f"(c) projection of {fmap}", fontsize=9)
    # The map's own range, not 0..max: a model with low p would otherwise show one flat colour.
    lo, hi = float(p_target.min()), float(p_target.max())
    im = axes["d"].imshow(p_target, cmap="jet", extent=extent, vmin=lo, vmax=max(hi, lo + 1e-6))
    axes["d"].set_title(f"(d) p({target})", fontsize=9)
    bar = fig.colorbar(im, ax=axes["d"], fraction=0.046)
    bar.set_label(f"p, scaled to this map's range {lo:.3g}..{hi:.3g}", fontsize=7)
    labels = np.unique(top_label)
    index = np.searchsorted(labels, top_label)
    cmap = matplotlib.colormaps["tab20"].resampled(max(len(labels), 1))
    axes["e"].imshow(index, cmap=cmap, extent=extent, vmin=-0.5, vmax=len(labels) - 0.5,
                     interpolation="nearest")
    axes["e"].set_title("(e) most probable label", fontsize=9)
    handles = [Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(labels))]
    axes["e"].legend(handles, [classes[int(c)] for c in labels], fontsize=7, loc="upper left",
                     bbox_to_anchor=(1.02, 1.0), frameon=False)
    if overlay is not None:
        axes["f"].imshow(image)
        im = axes["f"].imshow(overlay, cmap="jet", alpha=0.5, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        axes["f"].set_title(f"(f) fall in p({target}) when covered", fontsize=9)
        fig.colorbar(im, ax=axes["f"], fraction=0.046)
    for ax in axes.values():
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
    if title or region:
        fig.suptitle("\n".join(t for t in (title, region) if t), fontsize=10)
    fig.tight_layout()
    return fig


def occlusion_figure(image, occluder: tuple[int, int, int], fmap_total, projection, p_target,
                     top_label, classes: Sequence[str], centres, path, **kwargs) -> Path:
    """:func:`occlusion_row` written to ``path`` (PNG)."""
    fig = occlusion_row(image, occluder, fmap_total, projection, p_target, top_label, classes,
                        centres, **kwargs)
    return save_png(fig, path)


def invariance_figure(result: dict, examples: dict, names: Sequence[str], layers: Sequence[str],
                      path, *, title: str = "") -> Path:
    """Fig 5's grid: one row per transform; columns: thumbnails of every image at 5 amounts
    (``examples[kind]``: per image, a list of (amount label, (h, w, 3) uint8)), each image's
    row framed in its line's colour, then the feature distance at each layer and P(true class),
    one line per image."""
    kinds = list(result)
    ncol = 2 + len(layers)
    fig = plt.figure(figsize=(4.2 * ncol, 3.3 * len(kinds)))
    grid = fig.add_gridspec(len(kinds), ncol)
    units = {"translate": "vertical shift (px)", "scale": "scale", "rotate": "rotation (deg)"}
    for r, kind in enumerate(kinds):
        rows = []
        for i, per_image in enumerate(examples[kind]):
            colour = (np.array(matplotlib.colors.to_rgb(f"C{i % 10}")) * 255).astype(np.uint8)
            tiles = [np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=255)
                     for _, img in per_image]
            row = np.concatenate(tiles, axis=1)
            framed = np.empty((row.shape[0] + 6, row.shape[1] + 6, 3), np.uint8)
            framed[:] = colour
            framed[3:-3, 3:-3] = row
            rows.append(framed)
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(np.concatenate(rows, axis=0))
        ax.set_title(f"{kind}: " + ", ".join(a for a, _ in examples[kind][0]), fontsize=8)
        ax.axis("off")
        amounts = result[kind]["amounts"]
        panels = [(f"distance_{l}", f"layer {l}: relative distance") for l in layers]
        panels.append(("p_true", "P(true class)"))
        for c, (key, label) in enumerate(panels, start=1):
            ax = fig.add_subplot(grid[r, c])
            for i, ys in enumerate(result[kind][key]):
                ax.plot(amounts, ys, "-o", ms=2.5, lw=1.2, label=names[i])
            ax.set_xlabel(units.get(kind, kind), fontsize=8)
            ax.set_title(label, fontsize=9)
            ax.grid(alpha=0.3)
            if key == "p_true":
                ax.set_ylim(-0.02, 1.02)
            if r == 0 and c == len(panels):
                ax.legend(fontsize=7, loc="best")
    return _save_figure(fig, path, title)


def masks_figure(images, boxes: dict, path, *, title: str = "", cell: int = 96) -> Path:
    """Fig 8: each image (rows) with the square occluded for each part (columns)."""
    names = list(boxes)
    rows = []
    for i, img in enumerate(images):
        tiles = []
        for name in names:
            y0, x0, y1, x1 = boxes[name][i]
            t = np.array(img, copy=True)
            t[y0:y1, x0:x1] = 128
            t[y0:y1, [x0, x1 - 1]] = 255
            t[[y0, y1 - 1], x0:x1] = 255
            tiles.append(t)
        rows.append((f"image {i + 1}", [img] + tiles))
    return table_figure(rows, ["original"] + [n.replace("_", " ") for n in names], path,
                        cell=cell, title=title)
