"""``zfnet visualize``: what the feature maps respond to, through the switch deconvnet.

Three figures of the paper:

* **Fig 2, top-9** (``mode=top9``): one streaming pass over a data split finds the 9 strongest
  activations of every feature map of the requested layers; each is projected to pixels with
  its own image's switches and shown beside the image patch it came from (its receptive field).
  Any model: plain stacks through the paper's explicit deconvnet, any other network through
  :class:`~zfnet_cli.deconv_graph.GraphDeconvnet` (the same rules through its graph; the patch is
  the receptive field the graph really has). Layers by any name of :mod:`zfnet_cli.layers`
  (``conv3``, ``3`` for ``conv3``, ``layer3.1``, ``features.6``). Under ``torchrun`` the ranks
  scan strided shares of the images and merge their top-k (:func:`~zfnet_cli.top9.gather_top9`);
  rank 0 projects and draws.
* **Fig 4, evolution** (``mode=evolution``): for a seeded subset of maps per layer, the
  strongest activation over the training split at each kept epoch of a training run, projected.
* **Fig 6, filters** (``mode=filters``): the first-layer filters and top-1 projections of
  layer-2 maps, with dead-filter and spatial-frequency numbers; ``compare=[RUN_A, RUN_B, ...]``
  puts several training runs side by side (the AlexNet 11x11/4 against the ZFNet 7x7/2 first
  layer, with and without filter renormalisation).

Display normalisation (the paper does not say how it scales its reconstructions): each
projection and its image patch are cropped to the part of the activation's receptive field the
projection reaches (its non-zero pixels: through the image's own switches), and the projection
is divided by its largest absolute value, then
mapped to grey levels 128 + 254 * p, clipped (gain 2: the strongest pixels saturate and the
structure around them shows), so zero is mid-grey, as in the paper's figures. Fig 2 picks its
random subset of maps among the live ones (some activation above zero over the scan).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm import tqdm

from zfnet_cli import runs
from zfnet_cli.schemas import VisualizeConfig
from zfnet_cli.loading import Loaded, load_trained
from zfnet_cli.data.images import UnreadableFiles
from zfnet_cli.data.sources import image_set, load_split
from zfnet_cli.deconv import Deconvnet, Request
from zfnet_cli.deconv_graph import RULES, Projector, deconvnet_for
from zfnet_cli import sanity
from zfnet_cli.engine import Dist, pick_device
from zfnet_cli.fig2 import (choose_layers, image_classes, image_files, images_and_crops,
                            project_crops, scan_batches, top9_tiles)
from zfnet_cli.top9 import gather_top9, scan_top9
from zfnet_cli import viz
from zfnet_cli.files import write_atomic


# ---------------------------------------------------------------- loading

def num_maps(deconv: Projector, layer: str, input_size: int = 224) -> int:
    return deconv.num_maps(layer, input_size)


def _batches(dataset, loaded: Loaded, cfg: VisualizeConfig, device,
             unreadable: Optional[UnreadableFiles] = None):
    """Preprocessed ``(images, data-set indices)`` batches: unreadable files of a file-backed
    data set are skipped (recorded in ``unreadable``), so the indices are carried, not counted."""
    return scan_batches(dataset, loaded, min(cfg.max_images or len(dataset), len(dataset)),
                        cfg.batch_size, device, unreadable)


def _check_fmaps(deconv: Projector, layers: list[str], fmaps: Sequence[int],
                 input_size: int = 224) -> None:
    for layer in layers:
        n = num_maps(deconv, layer, input_size)
        bad = [f for f in fmaps if not 0 <= f < n]
        if bad:
            raise ValueError(f"--fmap {bad[0]} out of range: {layer} has {n} feature maps "
                             f"(0..{n - 1})")


def _pick_maps(n: int, count: int, seed: int, layer: str) -> list[int]:
    g = torch.Generator().manual_seed(seed * 7919 + sum(map(ord, layer)))
    return sorted(torch.randperm(n, generator=g)[:min(count, n)].tolist())


def _pick_live_maps(t, count: int, seed: int, layer: str) -> list[int]:
    """Fig 2's seeded random subset of maps, drawn among the live ones (some activation above
    zero over the scan); dead maps only fill up when too few are live."""
    live = (t.values[:, 0] > 0).nonzero().flatten().tolist()
    dead = [m for m in range(t.values.shape[0]) if m not in set(live)]
    picked = [live[i] for i in _pick_maps(len(live), count, seed, layer)] if live else []
    return sorted(picked + dead[: max(0, count - len(picked))])


# ---------------------------------------------------------------- Fig 2

_SIMILARITY_DOC = ("mean Pearson correlation, over a unit's shown records, between a seed's "
                   "projection through its own image and the same seed (unit, position, value) "
                   "through the next shown image, in the tile's box; near 1: the picture does "
                   "not depend on the image (a template of the unit)")

def run_top9(cfg: VisualizeConfig, run_dir: Path, device, dist_info: Dist | None = None) -> dict:
    loaded = load_trained(cfg.checkpoint, cfg.output_root, device, cfg.data, source=cfg)
    return top9_figures(cfg, loaded, run_dir, device, dist_info)


def top9_figures(cfg: VisualizeConfig, loaded: Loaded, run_dir: Path, device,
                 dist_info: Dist | None = None) -> dict:
    """Fig 2 for a loaded model (any model the deconvnet covers): scan, project, draw."""
    deconv, layers = choose_layers(loaded.model, cfg.layers, loaded.input_size, cfg.rule)
    _check_fmaps(deconv, layers, cfg.fmaps, loaded.input_size)
    rule = RULES[deconv.rule]
    dataset = load_split(loaded.data, cfg.split, progress=cfg.progress)
    scanned_set = image_set(loaded.data, cfg.split)  # a folder of photos is not "val"
    unreadable = UnreadableFiles(len(dataset), getattr(loaded.data, "max_broken", 0.01),
                                 scanned_set["split"] or "")
    scanned = min(cfg.max_images or len(dataset), len(dataset))
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info else (0, 1)
    top = None
    if rank < scanned:  # a rank with no image contributes nothing
        top = scan_top9(deconv, scan_batches(dataset, loaded, scanned, cfg.batch_size, device,
                                             unreadable, rank=rank, world=world),
                        layers, k=cfg.k, batches_carry_indices=True, progress=cfg.progress)
    top = gather_top9(top, cfg.k)
    if rank != 0:
        return {"mode": "top9", "layers": layers, "rank": rank}
    index: dict[str, dict] = {}
    figures, sanity_numbers = [], {}
    for layer in layers:
        t = top[layer]
        maps = list(cfg.fmaps) or _pick_live_maps(t, cfg.maps_per_layer, cfg.seed, layer)
        conditioning = deconv.conditioning(layer, loaded.input_size)
        blocks, units, scores = [], {}, []
        for m, tiles, similar in top9_tiles(deconv, loaded, dataset, t, layer, maps,
                                            batch_size=cfg.batch_size, progress=cfg.progress,
                                            similarity=cfg.similarity):
            cells = [(viz.projection_to_image(proj, viz.FIGURE_GAIN), patch)
                     for proj, patch, *_ in tiles]
            flag = "" if similar is None else (f", sim {similar:.2f}" + (
                " !" if similar > sanity.TEMPLATE_SIMILARITY else ""))
            blocks.append((f"{layer} map {m}{flag}", cells))
            scores += [similar] if similar is not None else []
            images = t.images[m].tolist()
            units[str(m)] = {
                "images": images, **image_files(dataset, images),
                "image_classes": image_classes(dataset, images),
                "positions": t.positions[m].tolist(),
                "values": t.values[m].tolist(), "receptive_fields": [list(rf) for *_, rf in tiles],
                "crops": [list(box) for _, _, box, _ in tiles],
                "image_similarity": similar}
        mean = sum(scores) / len(scores) if scores else None
        note = sanity.template_note(rule.name, layer, conditioning, mean)
        index[layer] = units
        sanity_numbers[layer] = {"conditioning": conditioning,
                                 "template": sanity.is_template(conditioning),
                                 "image_similarity": mean, "warning": note}
        path = run_dir / "figures" / f"fig2_{layer}.png"
        viz.top9_figure(blocks, path, cell=cfg.cell, title=f"Fig 2: {layer}, top-{cfg.k} "
                        f"activations over {scanned} images of {scanned_set['text']} (projection "
                        f"| image patch); rule: {rule.title}" + (
                            f"; sim: the same seed through another shown image, correlation "
                            f"(! above {sanity.TEMPLATE_SIMILARITY}: close to a template)"
                            if cfg.similarity else "") + (f". WARNING: {note}" if note else ""))
        figures.append(str(path.relative_to(run_dir)))
    write_atomic(run_dir / "top9.json", json.dumps(
        {"checkpoint": str(loaded.source), "split": scanned_set["split"],
         "folder": scanned_set["folder"], "data": loaded.data.name,
         "classes": loaded.classes, "class_names": loaded.class_names, "rule": rule.name,
         "image_similarity": _SIMILARITY_DOC, "template_similarity": sanity.TEMPLATE_SIMILARITY,
         "sanity": sanity_numbers, "layers": index}, indent=1) + "\n")
    for line in unreadable.lines("zfnet visualize: ", where=str(run_dir / "metrics.json")):
        print(line)
    return {"mode": "top9", "layers": layers, "figures": figures, "checkpoint": str(loaded.source),
            "images_scanned": scanned - len(unreadable), "unreadable": unreadable.summary(),
            "deconvnet": type(deconv).__name__, "rule": rule.name, "sanity": sanity_numbers,
            "world_size": world}


# ---------------------------------------------------------------- Fig 4

def run_evolution(cfg: VisualizeConfig, run_dir: Path, device) -> dict:
    train_run, kept = runs.kept_checkpoints(cfg.checkpoint, cfg.output_root)
    first = load_trained(str(kept[0][1]), cfg.output_root, device, cfg.data)
    first_deconv, layers = choose_layers(first.model, cfg.layers, first.input_size, cfg.rule)
    _check_fmaps(first_deconv, layers, cfg.fmaps)
    maps = {layer: list(cfg.fmaps) or _pick_maps(num_maps(first_deconv, layer), cfg.evolution_maps,
                                                 cfg.seed, layer) for layer in layers}
    dataset = load_split(first.data, cfg.evolution_split, progress=cfg.progress)
    columns: list[list] = []  # per epoch, the images in row order
    record: dict[str, dict] = {}
    for epoch, path in tqdm(kept, desc="epochs", disable=not cfg.progress):
        loaded = load_trained(str(path), cfg.output_root, device, cfg.data)
        deconv = deconvnet_for(loaded.model, layers, first_deconv.rule)
        top = scan_top9(deconv, _batches(dataset, loaded, cfg, device), layers, k=1,
                        batches_carry_indices=True, progress=cfg.progress)
        wanted = sorted({int(top[l].images[m, 0]) for l in layers for m in maps[l]})
        local = {g: j for j, g in enumerate(wanted)}
        inputs, _ = images_and_crops(dataset, wanted, loaded)
        requests = [Request(local[int(top[l].images[m, 0])], l, m, tuple(top[l].positions[m, 0].tolist()))
                    for l in layers for m in maps[l]]
        column = [viz.projection_to_image(p, viz.FIGURE_GAIN) for p, *_ in
                  project_crops(deconv, inputs, requests, loaded.input_size,
                                batch_size=cfg.batch_size, desc=f"project epoch {epoch}",
                                progress=cfg.progress)]
        columns.append(column)
        record[str(epoch)] = {f"{l}/{m}": {"image": int(top[l].images[m, 0]),
                                           "position": top[l].positions[m, 0].tolist(),
                                           "value": float(top[l].values[m, 0])}
                              for l in layers for m in maps[l]}
    labels = [f"{l} map {m}" for l in layers for m in maps[l]]
    rows = [(label, [col[i] for col in columns]) for i, label in enumerate(labels)]
    path = run_dir / "figures" / "fig4_evolution.png"
    viz.table_figure(rows, [f"epoch {e}" for e, _ in kept], path, cell=cfg.cell,
                     title=f"Fig 4: strongest activation over the {cfg.evolution_split} split, "
                           f"projected, at each kept epoch of {train_run.name}; rule: "
                           f"{RULES[first_deconv.rule].title}")
    write_atomic(run_dir / "evolution.json", json.dumps(
        {"train_run": str(train_run), "epochs": [e for e, _ in kept], "maps": maps,
         "rule": first_deconv.rule, "strongest": record}, indent=1) + "\n")
    return {"mode": "evolution", "train_run": str(train_run), "epochs": [e for e, _ in kept],
            "layers": layers, "rule": first_deconv.rule,
            "figures": [str(path.relative_to(run_dir))]}


# ---------------------------------------------------------------- Fig 6

def filter_stats(weight: torch.Tensor, dead_fraction: float = 0.1) -> dict:
    """Numbers behind Fig 6 for a first layer's filters (out, 3, k, k).

    * dead filters: RMS below ``dead_fraction`` x the largest filter RMS of the layer;
    * dominance: largest RMS / median RMS (Fig 6a: without renormalisation one filter dominates);
    * spectral energy: each live filter's colour-summed power spectrum (per-channel mean removed,
      zero-padded to 64x64) split by radial frequency in cycles per input pixel (the filter is
      applied at input resolution whatever its stride): low < 1/8, mid 1/8..1/4, high >= 1/4;
      averaged over the live filters.
    """
    w = weight.detach().double().cpu()
    rms = w.flatten(1).pow(2).mean(1).sqrt()
    live = rms >= dead_fraction * rms.max()
    centred = w - w.mean(dim=(2, 3), keepdim=True)
    power = torch.fft.fft2(centred, s=(64, 64)).abs().pow(2).sum(1)  # (out, 64, 64)
    f = torch.fft.fftfreq(64, dtype=torch.float64)
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    bands = {"low": radius < 1 / 8, "mid": (radius >= 1 / 8) & (radius < 1 / 4), "high": radius >= 1 / 4}
    total = power.sum(dim=(1, 2)).clamp_min(1e-30)
    energy = {b: float((power[:, m].sum(1) / total)[live].mean()) if live.any() else 0.0
              for b, m in bands.items()}
    return {"filters": int(w.shape[0]), "kernel": int(w.shape[-1]), "dead": int((~live).sum()),
            "dead_fraction_threshold": dead_fraction, "rms_max": float(rms.max()),
            "rms_median": float(rms.median()), "dominance": float(rms.max() / rms.median().clamp_min(1e-30)),
            "spectral_energy": energy}


def _filters_panel(cfg: VisualizeConfig, spec: str, device):
    """Filter grid + top-1 layer-2 projections of one trained model, and its numbers."""
    loaded = load_trained(spec, cfg.output_root, device, cfg.data, source=cfg)
    if not isinstance(loaded.deconv, Deconvnet):
        raise ValueError(f"--filters (Fig 6) reads a plain stack's conv1 and conv2; "
                         f"{loaded.name} is not one (Fig 2 works: --layer NAME)")
    conv1 = loaded.deconv._convs[0]
    w = conv1.weight.detach().cpu()
    cols = max(1, math.ceil(math.sqrt(w.shape[0])))
    filters = viz.image_grid([viz.filter_to_image(f) for f in w], max(16, cfg.cell // 2), cols)
    stats = filter_stats(w, cfg.dead_fraction)
    layer2 = loaded.deconv.layers[1] if len(loaded.deconv.layers) > 1 else loaded.deconv.layers[0]
    dataset = load_split(loaded.data, cfg.split, progress=cfg.progress)
    top = scan_top9(loaded.deconv, _batches(dataset, loaded, cfg, device), [layer2], k=1,
                    batches_carry_indices=True, progress=cfg.progress)[layer2]
    maps = list(range(min(cfg.layer2_maps, num_maps(loaded.deconv, layer2))))
    wanted = sorted({int(top.images[m, 0]) for m in maps})
    local = {g: j for j, g in enumerate(wanted)}
    inputs, _ = images_and_crops(dataset, wanted, loaded)
    requests = [Request(local[int(top.images[m, 0])], layer2, m, tuple(top.positions[m, 0].tolist()))
                for m in maps]
    projections = viz.image_grid([viz.projection_to_image(p, viz.FIGURE_GAIN) for p, *_ in
                                  project_crops(loaded.deconv, inputs, requests,
                                                loaded.input_size, batch_size=cfg.batch_size,
                                                desc=f"project {layer2}", progress=cfg.progress)],
                                 cfg.cell, max(1, math.ceil(math.sqrt(len(maps)))))
    conv = loaded.state["model_cfg"]
    name = f"{conv['name']} conv1 {conv['kernels'][0]}x{conv['kernels'][0]}/{conv['strides'][0]}"
    renorm = loaded.state["config"].get("optim", {}).get("renorm")  # None: foreign weights
    name += ", no renorm" if renorm is False else ""
    return name, filters, projections, {**stats, "stride": int(conv["strides"][0]),
                                        "checkpoint": str(loaded.source), "renorm": renorm,
                                        "layer2": layer2,
                                        "images": image_set(loaded.data, cfg.split)["text"]}


def run_filters(cfg: VisualizeConfig, run_dir: Path, device) -> dict:
    specs = list(cfg.compare) or [cfg.checkpoint]
    panels, numbers = [], {}
    for spec in specs:
        name, filters, projections, stats = _filters_panel(cfg, spec, device)
        key = name if name not in numbers else f"{name} ({spec})"
        numbers[key] = stats
        panels.append((key, filters, projections))
    fig_filters = run_dir / "figures" / "fig6_filters.png"
    viz.panels_figure([(f"(conv1) {n}", f) for n, f, _ in panels], fig_filters,
                      title="Fig 6: first-layer filters (each normalised, zero = grey)")
    fig_l2 = run_dir / "figures" / "fig6_layer2.png"
    viz.panels_figure([(f"(layer 2) {n}", p) for n, _, p in panels], fig_l2,
                      title=f"Fig 6: strongest layer-2 activations over "
                            f"{' / '.join(sorted({n['images'] for n in numbers.values()}))}, "
                            "projected")
    return {"mode": "filters", "models": numbers,
            "figures": [str(fig_filters.relative_to(run_dir)), str(fig_l2.relative_to(run_dir))]}


# ---------------------------------------------------------------- sanity: cascading randomisation

def run_cascade(cfg: VisualizeConfig, run_dir: Path, device) -> dict:
    """Adebayo et al.'s cascading randomisation for each rule (:func:`zfnet_cli.sanity.cascade`):
    for the chosen maps of each layer, each seeded whole on its strongest image of the scan,
    the projection with the weights re-initialised block by block from the layer down,
    compared with the trained one. Writes ``cascade.json`` and one curve figure per layer."""
    loaded = load_trained(cfg.checkpoint, cfg.output_root, device, cfg.data, source=cfg)
    deconv, layers = choose_layers(loaded.model, cfg.layers, loaded.input_size)
    _check_fmaps(deconv, layers, cfg.fmaps, loaded.input_size)
    dataset = load_split(loaded.data, cfg.split, progress=cfg.progress)
    scanned_set = image_set(loaded.data, cfg.split)  # a folder of photos is not "val"
    top = scan_top9(deconv, _batches(dataset, loaded, cfg, device), layers, k=1,
                    batches_carry_indices=True, progress=cfg.progress)
    curves, figures = {}, []
    rules = [cfg.rule] if cfg.rule else list(RULES)
    for layer in layers:
        t = top[layer]
        maps = list(cfg.fmaps) or _pick_live_maps(t, cfg.maps_per_layer, cfg.seed, layer)
        wanted = sorted({int(t.images[m, 0]) for m in maps})
        local = {g: j for j, g in enumerate(wanted)}
        inputs, _ = images_and_crops(dataset, wanted, loaded)
        requests = [Request(local[int(t.images[m, 0])], layer, m) for m in maps]
        result = sanity.cascade(loaded.model, inputs.to(device), requests, rules,
                                input_size=loaded.input_size, max_blocks=cfg.cascade_blocks,
                                seed=cfg.seed, batch_size=cfg.batch_size)
        result["images"] = {str(m): int(t.images[m, 0]) for m in maps}
        curves[layer] = result
        path = run_dir / "figures" / f"cascade_{layer}.png"
        viz.cascade_figure(result, path, title=f"Cascading randomisation (Adebayo et al. 2018): "
                           f"{layer}, {len(maps)} maps of {loaded.name}, blocks re-initialised "
                           f"from {layer} down; similarity to the trained projection")
        figures.append(str(path.relative_to(run_dir)))
    write_atomic(run_dir / "cascade.json", json.dumps(
        {"checkpoint": str(loaded.source), "split": scanned_set["split"],
         "folder": scanned_set["folder"], "seed": cfg.seed,
         "layers": curves}, indent=1) + "\n")
    return {"mode": "cascade", "layers": layers, "rules": rules, "figures": figures,
            "checkpoint": str(loaded.source),
            "after_one_block": {l: {r: {k: c["rules"][r][k][1] for k in ("spearman", "ssim")}
                                    for r in rules} for l, c in curves.items()
                                if len(c["blocks"])}}


# ---------------------------------------------------------------- entry point

def run(cfg: VisualizeConfig, run_dir: str | Path, *, dist_info: Dist | None = None, **_) -> dict:
    """Make the figure ``cfg.mode`` asks for in ``run_dir/figures`` and return its numbers
    (also written to ``run_dir/metrics.json``)."""
    run_dir = Path(run_dir)
    device = dist_info.device if dist_info else pick_device(cfg.device)
    modes = {"top9": run_top9, "evolution": run_evolution, "filters": run_filters,
             "cascade": run_cascade}
    if cfg.mode not in modes:
        raise ValueError(f"unknown mode '{cfg.mode}'; expected one of {', '.join(modes)}")
    if cfg.mode == "top9":
        metrics = run_top9(cfg, run_dir, device, dist_info)
    else:
        metrics = modes[cfg.mode](cfg, run_dir, device)
    if dist_info is None or dist_info.main:
        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
