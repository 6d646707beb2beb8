"""``zfnet explore``: Fig 2 for **every** unit, as a static site to browse (see
:mod:`zfnet_cli.webpages`).

The paper shows a random handful of feature maps per layer. This scans an image set once with
the streaming top-9 (:func:`~zfnet_cli.top9.scan_top9`: memory k x units, however many images),
projects each unit's 9 strongest activations with their own images' switches
(:meth:`~zfnet_cli.deconv.Deconvnet.project`), cuts each projection and its image patch at the
same receptive-field box (as Fig 2 does) and writes ``site/`` in the run folder: ``index.html``
with the layers, one page per layer with every unit, a unit box, next / previous and sorting
(strongest activation, distinct classes in the top-9). Where the checkpoint's training run kept
epochs (``keep_epochs``, Fig 4), each unit's strongest activation at each kept epoch is shown
too. Opens from ``file://``: no server, no network.

Tiles use the figures' display normalisation (``viz.projection_to_image`` with gain 2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from zfnet_cli import viz
from zfnet_cli.bounds import DEVICE, bounded
from zfnet_cli.checkpoint import CheckpointError, Loaded, ModelSource, load_trained
from zfnet_cli.data.sources import DataConfig, load_split
from zfnet_cli.deconv import Request
from zfnet_cli.engine import Dist, pick_device
from zfnet_cli.webpages import ExplorerSite, UnitRecord
from zfnet_cli.top9 import scan_top9


@dataclass
class ExploreConfig(ModelSource):  # + arch, weights, trust_pickle, preprocess
    checkpoint: str = "latest"  # a checkpoint file, a train run folder, or the newest train run
    data: Optional[DataConfig] = None  # None: the data the checkpoint was trained on
    split: str = "val"  # the image set scanned (Fig 2: the validation set)
    layers: list[int] = field(default_factory=list)  # paper layer numbers; empty: all conv layers
    k: int = bounded(9, min=1)  # strongest activations per unit (Fig 2: 9)
    max_images: Optional[int] = bounded(None, min=1)  # scan at most this many images of the split
    batch_size: int = bounded(64, min=1)
    evolution: bool = True  # add each unit's kept-epoch projections when the run has them (Fig 4)
    evolution_split: str = "train"  # Fig 4: strongest activation over the training set
    cell: int = bounded(64, min=8)  # tiles are stored at most this many pixels on their long side
    device: str = bounded("auto", **DEVICE)
    output_root: str = "outputs"
    progress: bool = True


@dataclass
class Subject:
    """The model under study as the explorer needs it: the one place that knows how a model is
    loaded and its layers are named (to switch to the any-model API in one spot)."""

    loaded: Loaded
    layers: list[str]
    shapes: dict[str, tuple[int, int, int]]  # layer -> (C, h, w) of its output


def open_subject(spec: str, cfg: ExploreConfig, device) -> Subject:
    """Load ``spec`` (a checkpoint, run folder or ``latest``), pick ``cfg.layers`` by paper
    number and measure each layer's output shape with one forward of a blank image."""
    from zfnet_cli.experiments.visualize import layer_names  # the paper-number -> name rule

    from zfnet_cli.deconv import Deconvnet

    loaded = load_trained(spec, cfg.output_root, device, cfg.data, source=cfg)
    if not isinstance(loaded.deconv, Deconvnet):  # the graph deconvnet has no stage forward
        raise ValueError(f"zfnet explore reads plain stacks (ZFNet, AlexNet, VGG); {loaded.name} "
                         f"is not one: use zfnet visualize --layer NAME for Fig 2 on it")
    layers = layer_names(loaded.deconv, cfg.layers)
    s = loaded.input_size
    top = max(layers, key=loaded.deconv.layers.index)
    acts = loaded.deconv.forward(torch.zeros(1, 3, s, s), upto=top, switches=False).activations
    return Subject(loaded, layers, {l: tuple(acts[l].shape[1:]) for l in layers})


def _image_names(dataset, indices, split: str) -> list[str]:
    """How the page names an image: its file name where it has one, else ``split/index``."""
    if hasattr(dataset, "samples"):
        return [Path(dataset.samples[i][0]).name for i in indices]
    return [f"{split}/{i}" for i in indices]


def _first(batches, n: Optional[int]):
    """The (images, labels) batches cut after ``n`` images (the loaders step in whole batches,
    so ``max_images`` would otherwise round up to a batch)."""
    seen = 0
    for images, labels in batches:
        if n is not None and seen + images.shape[0] > n:
            images, labels = images[: n - seen], labels[: n - seen]
        seen += images.shape[0]
        if images.shape[0]:
            yield images, labels
        if n is not None and seen >= n:
            return


def _unit_chunks(n: int, k: int, batch: int) -> list[range]:
    """Units in chunks of about ``batch`` x 4 projections (bounded memory, few forwards)."""
    step = max(1, (4 * batch) // max(1, k))
    return [range(a, min(n, a + step)) for a in range(0, n, step)]


def _top9_units(site: ExplorerSite, sub: Subject, dataset, cfg: ExploreConfig, device) -> int:
    """Scan, project and write every unit of every chosen layer; returns images scanned."""
    from zfnet_cli.experiments.visualize import _batches, _image_classes, _images, _project_crops

    loaded = sub.loaded
    top = scan_top9(loaded.deconv, _first(_batches(dataset, loaded, cfg, device), cfg.max_images),
                    sub.layers, k=cfg.k, progress=cfg.progress)
    for layer in sub.layers:
        t = top[layer]
        site.add_layer(layer, sub.shapes[layer])
        chunks = _unit_chunks(t.values.shape[0], t.values.shape[1], cfg.batch_size)
        for units in tqdm(chunks, desc=f"explore {layer}", disable=not cfg.progress):
            wanted = sorted({int(i) for m in units for i in t.images[m]})
            local = {g: j for j, g in enumerate(wanted)}
            inputs, crops = _images(dataset, wanted, loaded)
            requests = [Request(local[int(t.images[m, j])], layer, m,
                                tuple(t.positions[m, j].tolist()))
                        for m in units for j in range(t.images.shape[1])]
            projected = iter(_project_crops(loaded, inputs, requests, cfg, f"project {layer}"))
            for m in units:
                imgs = t.images[m].tolist()
                projs, patches, boxes = [], [], []
                for g in imgs:
                    proj, (y0, x0, y1, x1) = next(projected)
                    projs.append(viz.projection_to_image(proj, viz.FIGURE_GAIN))
                    patches.append(crops[local[g]][:, y0:y1, x0:x1].permute(1, 2, 0).numpy())
                    boxes.append([y0, x0, y1, x1])
                record = UnitRecord(t.values[m].tolist(), _image_names(dataset, imgs, cfg.split),
                                    _image_classes(dataset, imgs), t.positions[m].tolist(), boxes)
                site.add_unit(layer, m, record, projs, patches)
    return min(cfg.max_images or len(dataset), len(dataset))


def _evolution(site: ExplorerSite, sub: Subject, cfg: ExploreConfig, device) -> list[int]:
    """Fig 4 for every unit: at each kept epoch of the checkpoint's training run, the unit's
    strongest activation over ``cfg.evolution_split``, projected. No kept epochs: nothing."""
    from zfnet_cli.experiments.visualize import _batches, _images, _kept_checkpoints, _project_crops

    try:
        _, kept = _kept_checkpoints(cfg.checkpoint, cfg.output_root)
    except (CheckpointError, FileNotFoundError):
        return []
    dataset = None
    for epoch, path in tqdm(kept, desc="epochs", disable=not cfg.progress):
        loaded = load_trained(str(path), cfg.output_root, device, cfg.data)
        dataset = dataset or load_split(loaded.data, cfg.evolution_split, progress=cfg.progress)
        top = scan_top9(loaded.deconv, _first(_batches(dataset, loaded, cfg, device), cfg.max_images),
                        sub.layers, k=1, progress=cfg.progress)
        for layer in sub.layers:
            t = top[layer]
            wanted = sorted({int(i) for i in t.images[:, 0]})
            local = {g: j for j, g in enumerate(wanted)}
            inputs, _ = _images(dataset, wanted, loaded)
            units = range(t.values.shape[0])
            requests = [Request(local[int(t.images[m, 0])], layer, m, tuple(t.positions[m, 0].tolist()))
                        for m in units]
            tiles = {m: viz.projection_to_image(p, viz.FIGURE_GAIN) for m, (p, _) in
                     zip(units, _project_crops(loaded, inputs, requests, cfg, f"epoch {epoch}"))}
            site.add_evolution(layer, epoch, tiles, {m: float(t.values[m, 0]) for m in units})
    return [e for e, _ in kept]


def run(cfg: ExploreConfig, run_dir: str | Path, *, dist_info: Dist | None = None, **_) -> dict:
    """Write the explorer site to ``run_dir/site/`` and return its numbers (also in
    ``run_dir/metrics.json``): the index path, layers, units per layer, images scanned."""
    run_dir = Path(run_dir)
    device = dist_info.device if dist_info else pick_device(cfg.device)
    if cfg.k < 1:
        raise ValueError(f"k must be >= 1, got {cfg.k}")
    sub = open_subject(cfg.checkpoint, cfg, device)
    dataset = load_split(sub.loaded.data, cfg.split, progress=cfg.progress)
    name = (sub.loaded.state.get("model_cfg") or {}).get("name", "model")
    site = ExplorerSite(run_dir / "site", f"{name} explorer", cell=cfg.cell)
    scanned = _top9_units(site, sub, dataset, cfg, device)
    epochs = _evolution(site, sub, cfg, device) if cfg.evolution else []
    index = site.finish({"checkpoint": sub.loaded.source, "image set": f"{sub.loaded.data.name} "
                         f"{cfg.split} split", "images scanned": scanned, "top-k": cfg.k,
                         "kept epochs (evolution)": ", ".join(map(str, epochs)) or "none",
                         "evolution image set": cfg.evolution_split if epochs else "-",
                         "tiles": "projection / 2 x its largest |value|, zero = grey; "
                                  "each cut at its activation's receptive field"})
    metrics = {"index": str(index), "checkpoint": str(sub.loaded.source), "split": cfg.split,
               "layers": {l: sub.shapes[l][0] for l in sub.layers}, "images_scanned": scanned,
               "epochs": epochs}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
