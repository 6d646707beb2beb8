"""``zfnet explore``: Fig 2 for **every** unit, as a static site to browse (see
:mod:`zfnet_cli.webpages`).

The paper shows a random handful of feature maps per layer. This scans an image set once with
the streaming top-9 (:func:`~zfnet_cli.top9.scan_top9`: memory k x units, however many images),
projects each unit's 9 strongest activations with their own images' switches, cuts each
projection and its image patch at the same receptive-field box (as Fig 2 does; the shared
pieces are in :mod:`zfnet_cli.fig2`, which ``zfnet visualize`` uses too) and writes ``site/``
in the run folder: ``index.html``
with the layers, one page per layer with every unit, a unit box, next / previous and sorting
(strongest activation, distinct classes in the top-9). Where the checkpoint's training run kept
epochs (``keep_epochs``, Fig 4), each unit's strongest activation at each kept epoch is shown
too. Opens from ``file://``: no server, no network.

Any model the deconvnet covers: plain stacks (our ZFNet, AlexNet, VGG) through the paper's
explicit switch deconvnet, any other network (a torchvision ``resnet18`` state dict, say)
through :class:`~zfnet_cli.deconv_graph.GraphDeconvnet`; layers by any name (``conv3`` or
``3``, ``layer3.1``, ``features.6``), by default every conv stage of a plain stack, the blocks
of any other network.

Tiles use the figures' display normalisation (``viz.projection_to_image`` with gain 2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from zfnet_cli import viz
from zfnet_cli.schemas import ExploreConfig
from zfnet_cli.checkpoint import CheckpointError
from zfnet_cli.loading import Loaded, load_trained
from zfnet_cli.runs import kept_checkpoints
from zfnet_cli.data.images import UnreadableFiles
from zfnet_cli.data.sources import image_set, load_split
from zfnet_cli import sanity
from zfnet_cli.deconv_graph import RULES, Projector
from zfnet_cli.engine import Dist, pick_device
from zfnet_cli.files import write_atomic
from zfnet_cli.fig2 import choose_layers, image_classes, layer_shapes, scan_batches, top9_tiles
from zfnet_cli.webpages import ExplorerSite, UnitRecord
from zfnet_cli.top9 import scan_top9


@dataclass
class Subject:
    """The model under study as the explorer needs it: loaded, its deconvnet (the explicit one
    on plain stacks, the graph one on any other network) and the layers explored."""

    loaded: Loaded
    deconv: Projector
    layers: list[str]
    shapes: dict[str, tuple[int, ...]]  # layer -> (C, h, w) of its output


def open_subject(spec: str, cfg: ExploreConfig, device) -> Subject:
    """Load ``spec`` (a checkpoint, run folder, ``latest``, or any model a user brings: see
    :class:`~zfnet_cli.loading.ModelSource`), pick ``cfg.layers`` by any layer name
    (default: every conv stage of a plain stack, the blocks of any other network) and measure
    each layer's output shape with one forward pass of a blank image."""
    loaded = load_trained(spec, cfg.output_root, device, cfg.data, source=cfg)
    deconv, layers = choose_layers(loaded.model, cfg.layers, loaded.input_size, cfg.rule)
    return Subject(loaded, deconv, layers, layer_shapes(loaded.model, layers, loaded.input_size))


def _image_names(dataset, indices, split: str) -> list[str]:
    """How the page names an image: its file name where it has one, else ``split/index``."""
    if hasattr(dataset, "samples"):
        return [Path(dataset.samples[i][0]).name for i in indices]
    return [f"{split}/{i}" for i in indices]


def _top9_units(site: ExplorerSite, sub: Subject, dataset, cfg: ExploreConfig, device) -> int:
    """Scan, project and write every unit of every chosen layer; returns images scanned."""
    loaded = sub.loaded
    scanned = min(cfg.max_images or len(dataset), len(dataset))
    unreadable = UnreadableFiles(len(dataset), getattr(loaded.data, "max_broken", 0.01), cfg.split)
    top = scan_top9(sub.deconv, scan_batches(dataset, loaded, scanned, cfg.batch_size, device,
                                             unreadable),
                    sub.layers, k=cfg.k, batches_carry_indices=True, progress=cfg.progress)
    for line in unreadable.lines("zfnet explore: "):
        print(line)
    for layer in sub.layers:
        t = top[layer]
        conditioning = sub.deconv.conditioning(layer, loaded.input_size)
        site.add_layer(layer, sub.shapes[layer], rule=sub.deconv.rule, conditioning=conditioning,
                       warning=sanity.template_note(sub.deconv.rule, layer, conditioning),
                       threshold=sanity.TEMPLATE_SIMILARITY)
        units = range(min(t.values.shape[0], cfg.max_units or t.values.shape[0]))
        for m, tiles, similar in tqdm(top9_tiles(sub.deconv, loaded, dataset, t, layer, units,
                                                 batch_size=cfg.batch_size,
                                                 similarity=cfg.similarity),
                                      total=len(units), desc=f"explore {layer}",
                                      disable=not cfg.progress):
            imgs = t.images[m].tolist()
            record = UnitRecord(t.values[m].tolist(), _image_names(dataset, imgs, cfg.split),
                                image_classes(dataset, imgs), t.positions[m].tolist(),
                                [list(box) for _, _, box, _ in tiles], similar,
                                [list(rf) for *_, rf in tiles])
            site.add_unit(layer, m, record,
                          [viz.projection_to_image(p, viz.FIGURE_GAIN) for p, *_ in tiles],
                          [patch for _, patch, *_ in tiles])
    return scanned - len(unreadable)


def _evolution(site: ExplorerSite, sub: Subject, cfg: ExploreConfig, device) -> list[int]:
    """Fig 4 for every unit: at each kept epoch of the checkpoint's training run, the unit's
    strongest activation over ``cfg.evolution_split``, projected. No kept epochs (or a model
    that is not one of our training runs): nothing."""
    if sub.loaded.kind != "zfnet":
        return []
    try:
        _, kept = kept_checkpoints(cfg.checkpoint, cfg.output_root)
    except (CheckpointError, FileNotFoundError):
        return []
    dataset = None
    for epoch, path in tqdm(kept, desc="epochs", disable=not cfg.progress):
        loaded = load_trained(str(path), cfg.output_root, device, cfg.data)
        deconv, _ = choose_layers(loaded.model, sub.layers, loaded.input_size, sub.deconv.rule)
        dataset = dataset or load_split(loaded.data, cfg.evolution_split, progress=cfg.progress)
        scanned = min(cfg.max_images or len(dataset), len(dataset))
        top = scan_top9(deconv, scan_batches(dataset, loaded, scanned, cfg.batch_size, device),
                        sub.layers, k=1, batches_carry_indices=True, progress=cfg.progress)
        for layer in sub.layers:
            t = top[layer]
            units = sorted(site.layers[layer].units)  # the units the site shows
            tiles = {m: viz.projection_to_image(unit[0][0], viz.FIGURE_GAIN) for m, unit, _ in
                     top9_tiles(deconv, loaded, dataset, t, layer, units,
                                batch_size=cfg.batch_size)}
            site.add_evolution(layer, epoch, tiles, {m: float(t.values[m, 0]) for m in tiles})
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
    name = sub.loaded.name
    site = ExplorerSite(run_dir / "site", f"{name} explorer", cell=cfg.cell)
    scanned = _top9_units(site, sub, dataset, cfg, device)
    epochs = _evolution(site, sub, cfg, device) if cfg.evolution else []
    scanned_set = image_set(sub.loaded.data, cfg.split)  # a folder of photos is not "val"
    index = site.finish({"checkpoint": sub.loaded.source, "image set": scanned_set["text"],
                         "images scanned": scanned, "top-k": cfg.k,
                         "kept epochs (evolution)": ", ".join(map(str, epochs)) or "none",
                         "evolution image set": cfg.evolution_split if epochs else "-",
                         "projection rule": RULES[sub.deconv.rule].title,
                         "image similarity": f"per unit, the same seed through the next shown "
                                             f"image, mean correlation (flagged above "
                                             f"{sanity.TEMPLATE_SIMILARITY})"
                                             if cfg.similarity else "not computed",
                         "tiles": "projection / 2 x its largest |value|, zero = grey; "
                                  "each cut at its activation's receptive field"})
    metrics = {"index": str(index), "checkpoint": str(sub.loaded.source),
               "split": scanned_set["split"], "folder": scanned_set["folder"],
               "layers": {l: sub.shapes[l][0] for l in sub.layers},
               "units_explored": {l: len(site.layers[l].units) for l in sub.layers},
               "images_scanned": scanned, "deconvnet": type(sub.deconv).__name__,
               "rule": sub.deconv.rule,
               "template_layers": [l for l in sub.layers if site.layers[l].warning],
               "epochs": epochs}
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
