"""``zfnet invariance``: Fig 5, how features and the output change under vertical translation,
scaling and rotation (see :mod:`zfnet_cli.invariance`).

For N images (default 5 embedded images of different classes from ``split``: ``val``, the
default, or ``test``, on which the claims are read; or image files and photo folders), each
transform and amount: the relative Euclidean distance between the original's and the
transformed image's features at layer 1 and layer 7 (``layers``: any of the model's layers, e.g.
a real network's first and last block), and P(true class). A photo written by
:func:`zfnet_cli.data.photos.photos` takes its true class from the folder's ``photos.json``
(unless labels are given).

``method=image`` transforms the whole image, as the paper did (uncovered pixels take the data
set's mean colour). ``method=render`` (embedded data only) re-renders the scene with only the
object moved, scaled or rotated, background unchanged, which the generator can do because it
knows the geometry; no border artefacts, but no longer the paper's exact protocol.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from zfnet_cli import viz
from zfnet_cli.schemas import InvarianceConfig
from zfnet_cli.loading import load_trained, resolve_label
from zfnet_cli.data.images import PhotoFolder, load_image
from zfnet_cli.data.photos import boxed
from zfnet_cli.data.sources import load_split
from zfnet_cli.engine import Dist, pick_device
from zfnet_cli.invariance import TRANSFORMS, paper_amounts, relative_distance, transform_image
from zfnet_cli.files import write_atomic
from zfnet_cli.layers import read_layers, resolve_layers


def _listing(folder: str) -> list[str]:
    """The photos of a folder, as ``zfnet occlude`` lists them (:class:`PhotoFolder`)."""
    return [path for path, _ in PhotoFolder(folder, resize=1).samples]


def _first_of_each_class(data, n: int) -> list[int]:
    """The first image of each of the first n classes of a split (different objects, as Fig 5)."""
    picked, seen = [], set()
    labels = data.labels.tolist() if hasattr(data, "labels") else data.targets  # in memory / files
    for i, label in enumerate(labels):
        if label not in seen:
            picked.append(i)
            seen.add(label)
        if len(picked) == n:
            break
    return picked


def run(cfg: InvarianceConfig, run_dir: str | Path, *, dist_info: Dist | None = None, **_) -> dict:
    run_dir = Path(run_dir)
    device = dist_info.device if dist_info else pick_device(cfg.device)
    loaded = load_trained(cfg.checkpoint, cfg.output_root, device, cfg.data, source=cfg)
    classes, class_names = loaded.classes, loaded.class_names
    # an unknown name fails here, with close matches (and, for the default, what to pass)
    resolve_layers(loaded.model, cfg.layers, InvarianceConfig().layers)
    if cfg.method not in ("image", "render"):
        raise ValueError(f"method must be 'image' or 'render', got '{cfg.method}'")
    size = loaded.data.image_size
    pre = loaded.preprocess()
    fill = loaded.mean.mean(dim=(1, 2)).round().tolist()  # the data set's mean colour

    # (name, uint8 image, true label or None, scene for re-rendering or None)
    items = []
    files = [str(p) for f in cfg.images for p in
             (_listing(f) if Path(f).is_dir() else [f])]
    if cfg.labels and len(cfg.labels) > len(files):
        raise ValueError(f"{len(cfg.labels)} labels for {len(files)} image file(s): give "
                         "one --label per file, in order (or none: the predicted class)")
    if files:
        labels = list(cfg.labels) + [None] * (len(files) - len(cfg.labels))
        for f, lab in zip(files, labels):
            photo = boxed(f)
            if lab is None and photo is not None and len(classes) == 1000:
                lab = str(photo.classes[0])  # photos.json names the object's ImageNet class
            items.append((f, load_image(f, size, max_pixels=cfg.max_pixels),
                          resolve_label(lab, classes, class_names), None))
        if cfg.method == "render":
            raise ValueError("method=render re-draws embedded scenes; use method=image for files")
    else:
        data = load_split(loaded.data, cfg.split, progress=cfg.progress)
        for i in _first_of_each_class(data, cfg.n_images):
            image, label = data[i]  # uint8 (3, S, S): in memory or decoded from its file
            scene = (data.classes[int(label)], int(data.seeds[i])) if hasattr(data, "seeds") else None
            if cfg.method == "render" and scene is None:
                raise ValueError("method=render needs the embedded data")
            items.append((f"{loaded.data.name}:{cfg.split}/{i}", image, int(label), scene))

    steps = {"translate": cfg.steps_translate, "scale": cfg.steps_scale, "rotate": cfg.steps_rotate}
    result: dict[str, dict] = {}
    examples: dict[str, list] = {}
    for kind in TRANSFORMS:
        amounts = paper_amounts(kind, loaded.input_size, steps[kind])
        curves = {f"distance_{l}": [] for l in cfg.layers} | {"p_true": []}
        for k, (name, raw, label, scene) in enumerate(tqdm(items, desc=kind, disable=not cfg.progress)):
            if cfg.method == "render":
                from zfnet_cli.data.embedded import render_scene

                kw = {"translate": "shift_y", "scale": "scale", "rotate": "angle"}[kind]
                batch = torch.stack([torch.from_numpy(render_scene(scene[0], scene[1], size, **{kw: a})[0])
                                     .permute(2, 0, 1) for a in amounts])
            else:
                batch = torch.stack([transform_image(raw, kind, a, fill) for a in amounts])
            with torch.no_grad():
                x = pre(torch.cat([raw[None], batch]).to(device))
                logits, out = read_layers(loaded.model, x, cfg.layers, output=True)
            if label is None:
                label = int(logits[0].argmax())
                items[k] = (name, raw, label, scene)
            for l in cfg.layers:
                curves[f"distance_{l}"].append(relative_distance(out[l][:1].expand_as(out[l][1:]),
                                                                 out[l][1:]).tolist())
            curves["p_true"].append(F.softmax(logits[1:], dim=1)[:, label].tolist())
            # thumbnails of every image at 5 amounts (Fig 5's first column)
            pick = torch.linspace(0, len(amounts) - 1, 5).round().long().tolist()
            examples.setdefault(kind, []).append(
                [(f"{amounts[j]:.0f}" if kind != "scale" else f"{amounts[j]:.2f}",
                  batch[j].permute(1, 2, 0).numpy()) for j in pick])
        result[kind] = {"amounts": amounts, **curves}
    names = [f"{n.split('/')[-1]} ({class_names[lab]})" for n, _, lab, _ in items]
    path = run_dir / "figures" / "fig5_invariance.png"
    viz.invariance_figure(result, examples, names, cfg.layers, path,
                          title=f"Fig 5: invariance ({cfg.method} transforms); distances are "
                                "||f(x) - f(x')|| / ||f(x)||")
    # split: where the images came from (files given: unused, recorded all the same)
    metrics = {"checkpoint": str(loaded.source), "model_kind": loaded.kind, "split": cfg.split,
               "method": cfg.method,
               "layers": cfg.layers,
               "images": [{"image": n, "true_class": classes[lab], "true_class_name": class_names[lab]}
                          for n, _, lab, _ in items],
               "transforms": result, "distance": "relative Euclidean, ||f(x)-f(x')|| / ||f(x)||",
               "figures": [str(path.relative_to(run_dir))]}
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics
