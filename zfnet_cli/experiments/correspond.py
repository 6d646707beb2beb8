"""``zfnet correspond``: Fig 8 and Table 1, correspondence of object parts across images
(see :mod:`zfnet_cli.correspondence` for the measure and its normalisation).

N images of one class with named parts: the embedded faces (their ``right_eye``, ``left_eye``,
``nose`` boxes; named as seen from the face, like the paper's dogs) of ``split`` (``val``, the
default, or ``test``, on which the claims are read), or a user's images with a parts
file. In each draw every image gets a mean-grey square over the same part, or over a
random spot of the same size (inside the object's box when it is known, else anywhere), and
Delta is computed at layers 5 and 7. Table 1's mean ± std is over ``draws`` draws; for the parts
the draws jitter the square's centre by up to ``jitter`` pixels (the paper gives no protocol for
its ± on parts).

Parts file (``parts_file=``): JSON ``{"img.jpg": {"left_eye": [x0, y0, x1, y1], ...}, ...}`` or
CSV with a header ``image,part,x0,y0,x1,y1``; boxes in the pixels of the image as given, mapped
through the same resize and centre crop as the image.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from zfnet_cli import viz
from zfnet_cli.loading import load_trained
from zfnet_cli.layers import read_layers, resolve_layers
from zfnet_cli.correspondence import occlude_regions, sign_consistency, square_mask
from zfnet_cli.schemas import CorrespondConfig
from zfnet_cli.data.images import read_image, resize_center_crop, to_tensor
from zfnet_cli.data.sources import load_split
from zfnet_cli.engine import Dist, pick_device
from zfnet_cli.files import write_atomic
from zfnet_cli.paper import TABLE1 as PAPER_TABLE1


def read_parts(path: str | Path) -> dict[str, dict[str, list[float]]]:
    """A parts file as {image: {part: [x0, y0, x1, y1]}} (JSON or CSV, see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"parts file {path}: no such file")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
            return {str(k): {p: [float(v) for v in box] for p, box in parts.items()}
                    for k, parts in raw.items()}
        out: dict[str, dict[str, list[float]]] = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                out.setdefault(row["image"], {})[row["part"]] = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"parts file {path}: expected JSON {{image: {{part: [x0,y0,x1,y1]}}}} or CSV "
                         f"image,part,x0,y0,x1,y1 ({type(err).__name__}: {err})") from None


def _map_box(box, width: int, height: int, size: int) -> np.ndarray:
    """A box in original-image pixels -> pixels of the short-side-resized, centre-cropped square."""
    s = size / min(width, height)
    nw, nh = max(size, round(width * s)), max(size, round(height * s))
    left, top = (nw - size) // 2, (nh - size) // 2
    x0, y0, x1, y1 = box
    return np.array([x0 * nw / width - left, y0 * nh / height - top,
                     x1 * nw / width - left, y1 * nh / height - top], dtype=np.float64)


def _inputs(cfg: CorrespondConfig, loaded, size: int):
    """uint8 (N, 3, S, S) images, per part (N, 4) boxes, (N, 4) object boxes or None, names."""
    if cfg.images:
        if not cfg.parts_file:
            raise ValueError("image files need parts_file=PATH (JSON or CSV of part boxes)")
        table = read_parts(cfg.parts_file)
        imgs, parts, names = [], {p: [] for p in cfg.parts}, []
        for f in cfg.images:
            key = next((k for k in (str(f), Path(f).name) if k in table), None)
            if key is None:
                raise ValueError(f"parts file {cfg.parts_file} has no entry for {f}")
            missing = [p for p in cfg.parts if p not in table[key]]
            if missing:
                raise ValueError(f"parts file {cfg.parts_file}: {f} has no '{missing[0]}' box")
            # One guarded read (missing, empty, a folder, a bomb: one line naming the file);
            # the boxes are in the upright image's pixels, its size before resizing.
            rgb = read_image(f, max_pixels=cfg.max_pixels)
            w, h = rgb.size
            imgs.append(to_tensor(resize_center_crop(rgb, size)))
            for p in cfg.parts:
                parts[p].append(_map_box(table[key][p], w, h, size))
            names.append(str(f))
        return (torch.stack(imgs), {p: np.stack(v) for p, v in parts.items()}, None, names)
    from zfnet_cli.data.embedded import PART_CLASS

    data = load_split(loaded.data, cfg.split, progress=cfg.progress)
    if PART_CLASS not in data.classes:
        raise ValueError(f"the model's data has no '{PART_CLASS}' class with part boxes")
    idx = (data.labels == data.classes.index(PART_CLASS)).nonzero().flatten()[: cfg.n_images].tolist()
    if len(idx) < 2:
        raise ValueError(f"need at least 2 '{PART_CLASS}' images in the {cfg.split} split, "
                         f"found {len(idx)}")
    bad = [p for p in cfg.parts if p not in data.parts]
    if bad:
        raise ValueError(f"unknown part '{bad[0]}'; parts: {', '.join(data.parts)}")
    parts = {p: data.parts[p][idx].double().numpy() for p in cfg.parts}
    return (data.images[idx], parts, data.boxes[idx].double().numpy(),
            [f"{loaded.data.name}:{cfg.split}/{i}" for i in idx])


@torch.no_grad()
def run(cfg: CorrespondConfig, run_dir: str | Path, *, dist_info: Dist | None = None, **_) -> dict:
    run_dir = Path(run_dir)
    device = dist_info.device if dist_info else pick_device(cfg.device)
    loaded = load_trained(cfg.checkpoint, cfg.output_root, device, cfg.data, source=cfg)
    c = loaded.input_size
    images, parts, objects, names = _inputs(cfg, loaded, loaded.data.image_size)
    offset = (images.shape[-1] - c) / 2  # image pixels -> model-input pixels
    x = loaded.preprocess()(images.to(device))  # (N, 3, c, c)
    fill = loaded.fill().to(device)  # the mean-grey square in model-input units
    resolve_layers(loaded.model, cfg.layers, CorrespondConfig().layers)  # close matches; the default
    clean = read_layers(loaded.model, x, cfg.layers)
    size = cfg.mask_size or max(1, c // 6)
    rng = np.random.default_rng(cfg.seed)
    n = x.shape[0]
    rows = list(cfg.parts) + ["random"]
    deltas: dict[str, dict[str, list[float]]] = {r: {l: [] for l in cfg.layers} for r in rows}
    first_boxes: dict[str, list] = {}
    for draw in range(cfg.draws):
        for row in rows:
            boxes = []
            for i in range(n):
                if row == "random":
                    x0, y0, x1, y1 = (objects[i] - offset) if objects is not None else (0, 0, c, c)
                    centre = (rng.uniform(max(y0, 0), min(y1, c)), rng.uniform(max(x0, 0), min(x1, c)))
                else:
                    bx0, by0, bx1, by1 = parts[row][i] - offset
                    j = rng.uniform(-cfg.jitter, cfg.jitter, 2) if draw else np.zeros(2)
                    centre = ((by0 + by1) / 2 + j[0], (bx0 + bx1) / 2 + j[1])
                boxes.append(square_mask(centre, size, c, c))
            if draw == 0:
                first_boxes[row] = boxes
            occluded = read_layers(loaded.model, occlude_regions(x, boxes, fill), cfg.layers)
            for l in cfg.layers:
                eps = (clean[l] - occluded[l]).flatten(1)  # eps_i = x_i - x~_i
                deltas[row][l].append(sign_consistency(eps))
    table = {r: {l: {"mean": float(np.mean(v)), "std": float(np.std(v)), "draws": v}
                 for l, v in deltas[r].items()} for r in rows}
    header = ["occlusion"] + [f"{l} {who}" for l in cfg.layers for who in ("ours", "paper")]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.replace("_", " ")]
        for l in cfg.layers:
            p = PAPER_TABLE1.get(r, {}).get(l)
            cells += [f"{table[r][l]['mean']:.3f} ± {table[r][l]['std']:.3f}",
                      f"{p[0]:.3f} ± {p[1]:.3f}" if p else "—"]
        md.append("| " + " | ".join(cells) + " |")
    source = "files" if cfg.images else f"the {cfg.split} split"
    md_text = ("Table 1: Delta = mean over image pairs i != j of the fraction of feature signs where "
               f"eps_i and eps_j differ; {n} images ({source}), {cfg.draws} draws, {size}px "
               "squares.\n\n"
               + "\n".join(md) + "\n\n"
               "Scales differ: our Delta is normalised to [0, 1] (divided by the N(N-1) ordered "
               "pairs and the feature length D); the paper does not say how its Delta is "
               "normalised and its values sit on another scale. Compare the ordering of the "
               "rows (parts below random = consistent), not the numbers.\n")
    write_atomic(run_dir / "table1.md", md_text)
    crops = images[:, :, int(offset):int(offset) + c, int(offset):int(offset) + c]
    path = run_dir / "figures" / "fig8_masks.png"
    viz.masks_figure(crops.permute(0, 2, 3, 1).numpy(), first_boxes, path,
                     title="Fig 8: the squares occluded in each image (first draw)")
    metrics = {"checkpoint": str(loaded.source), "split": cfg.split, "images": names,
               "mask_size": size,
               "draws": cfg.draws, "jitter": cfg.jitter, "layers": cfg.layers, "table": table,
               "paper": PAPER_TABLE1, "normalisation": "pairs N(N-1) and feature length D",
               "figures": [str(path.relative_to(run_dir))], "table_markdown": "table1.md"}
    write_atomic(run_dir / "table1.json", json.dumps(metrics, indent=1) + "\n")
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics
