"""``zfnet occlude``: occlusion sensitivity (paper §4.2, Fig 7) on any image a user has.

For each image: slide the data set's mean-grey square over it (:func:`zfnet_cli.occlusion.occlude`)
and draw Fig 7's panels: (a) the input with the occluder where it hurts the correct class most,
(b) the total activation of the strongest layer-5 map per occluder position, (c) that map's
deconv projection, (d) p(correct class) per position, (e) the most probable label per position.

``localise=true`` also checks that the maps mean something, on the embedded data whose objects
have known boxes: over ``localise_images`` validation images, the fraction for which the
occluder position where p(true class) drops most is centred inside the object's box.

Classes are shown by their human names where the model has them (ImageNet: wnid -> name, from
the checkpoint, the data root's ``meta.bin`` / devkit, or torchvision's list for foreign weights
such as ``checkpoint=alexnet-owt-7be5be79.pth``); ``occlusion.json`` gives each class's id and
name.

Occluder size and stride are UNSTATED in the paper; the defaults here are a quarter of the input
side and a quarter of that (56 px / 14 px at 224, 32 / 8 at 128).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from zfnet_cli.checkpoint import Loaded, load_trained, resolve_label
from zfnet_cli.data.images import MAX_PIXELS, ImageError, load_image
from zfnet_cli.data.sources import DataConfig, load_split
from zfnet_cli.deconv import Request
from zfnet_cli.engine import Dist, pick_device
from zfnet_cli.occlusion import OcclusionMaps, occlude
from zfnet_cli import viz


@dataclass
class OccludeConfig:
    checkpoint: str = "latest"  # a checkpoint file, a train run folder, or the newest train run
    images: list[str] = field(default_factory=list)  # image files; empty: embedded val images
    label: Optional[str] = None  # the correct class (index or name); None: the predicted class
    size: Optional[int] = None  # occluder side in px (UNSTATED); None: input side // 4
    stride: Optional[int] = None  # step in px; None: size // 4
    layer: Optional[str] = None  # None: the last conv layer ("layer 5")
    default_images: int = 4  # validation images used when no files are given
    data: Optional[DataConfig] = None  # None: the data the checkpoint was trained on
    localise: bool = False  # also run the localisation check on the embedded data
    localise_images: int = 100
    batch_size: int = 128  # occluder positions per forward pass (method=full)
    # "incremental": recompute each layer only where the occluder reaches it (exact, Krypton);
    # "full": the whole model per position; "auto": incremental where it is estimated faster
    method: str = "auto"
    memory_budget_mb: int = 256  # incremental path: MiB of per-position activations per chunk
    max_pixels: int = MAX_PIXELS  # larger image files are refused (decompression-bomb guard)
    device: str = "auto"
    output_root: str = "outputs"
    progress: bool = True


def _geometry(cfg: OccludeConfig, side: int) -> tuple[int, int]:
    size = cfg.size or max(1, side // 4)
    stride = cfg.stride or max(1, size // 4)
    if size > side:
        raise ValueError(f"occluder size {size} is larger than the {side}x{side} model input")
    return size, stride


def _method(cfg: OccludeConfig) -> dict:
    """``occlude``'s method options from the config."""
    if cfg.memory_budget_mb < 1:
        raise ValueError(f"memory_budget_mb must be >= 1 (MiB), got {cfg.memory_budget_mb}")
    return {"method": cfg.method, "memory_budget": cfg.memory_budget_mb * 2 ** 20}


def _centre_crop(raw: torch.Tensor, c: int) -> torch.Tensor:
    top = (raw.shape[-1] - c) // 2
    return raw[:, top:top + c, top:top + c]


def _panels(loaded: Loaded, raw: torch.Tensor, x: torch.Tensor, maps: OcclusionMaps,
            names: list[str], path: Path, title: str) -> dict:
    """Fig 7's panels for one image; labels are shown by their human names (``names``)."""
    proj = loaded.deconv.project(x[None], [Request(0, maps.layer, maps.fmap, None)])[0].cpu()
    worst = int(maps.log_p_target.flatten().argmin())
    y, xx = maps.positions[worst].tolist()
    viz.occlusion_figure(
        _centre_crop(raw, loaded.input_size).permute(1, 2, 0).numpy(), (y, xx, maps.size),
        maps.fmap_total.numpy(), viz.projection_to_image(proj.numpy(), viz.FIGURE_GAIN),
        maps.p_target.numpy(),
        maps.top_label.numpy(), names, maps.centers().numpy(), path, title=title,
        fmap=f"{maps.layer} map {maps.fmap}", target=names[maps.target])
    return {"worst_position": [y, xx]}


def _summary(maps: OcclusionMaps, classes: list[str], names: list[str]) -> dict:
    """The numbers of one image; each class as its id (``class``: a wnid on ImageNet) and its
    human name (``name``; the id itself where there is no name)."""
    top5 = maps.clean_probs.topk(min(5, len(classes)))
    return {"layer": maps.layer, "strongest_fmap": maps.fmap, "target": maps.target,
            "target_class": classes[maps.target], "target_name": names[maps.target],
            "clean_p_target": maps.clean_p_target, "clean_label": classes[maps.clean_label],
            "clean_label_name": names[maps.clean_label], "min_p_target": float(maps.p_target.min()),
            "top_classes": [{"class": classes[i], "name": names[i], "p": float(p)} for p, i in
                            zip(top5.values.tolist(), top5.indices.tolist())],
            "grid": list(maps.grid), "size": maps.size, "stride": maps.stride}


def localisation(loaded: Loaded, cfg: OccludeConfig, device) -> dict:
    """Over ``cfg.localise_images`` embedded validation images: is the occluder position where
    p(true class) drops most centred inside the object's box?"""
    if loaded.data.name != "embedded":
        raise ValueError("localise=true needs the embedded data (its images carry object boxes)")
    val = load_split(loaded.data, "val", progress=cfg.progress)
    n = min(cfg.localise_images, len(val))
    # spread the sample over the classes: every (len/n)-th image
    idx = torch.linspace(0, len(val) - 1, n).round().long().tolist()
    size, stride = _geometry(cfg, loaded.input_size)
    pre = loaded.preprocess()
    fill = loaded.fill()
    offset = (val.images.shape[-1] - loaded.input_size) / 2
    hits, records = 0, []
    for i in tqdm(idx, desc="localise", disable=not cfg.progress):
        x = pre(val.images[i:i + 1].to(device))[0]
        label = int(val.labels[i])
        maps = occlude(loaded.model, x, size=size, stride=stride, fill=fill.to(device),
                       target=label, layer=cfg.layer, batch_size=cfg.batch_size,
                       **_method(cfg))
        worst = int(maps.log_p_target.flatten().argmin())  # log: no ties where p underflows
        cy, cx = maps.centers().view(-1, 2)[worst].tolist()
        x0, y0, x1, y1 = (val.boxes[i] - offset).tolist()
        inside = x0 <= cx + 0.5 <= x1 and y0 <= cy + 0.5 <= y1  # pixel centre, continuous coords
        hits += inside
        records.append({"index": i, "class": val.classes[label], "worst_centre": [cy, cx],
                        "box": [x0, y0, x1, y1], "inside": bool(inside),
                        "p_drop": maps.clean_p_target - float(maps.p_target.min())})
    return {"images": n, "inside": hits, "fraction_inside": hits / max(n, 1), "goal": ">= 0.9",
            "size": size, "stride": stride, "per_image": records}


def run(cfg: OccludeConfig, run_dir: str | Path, *, dist_info: Dist | None = None, **_) -> dict:
    """Fig 7 for each image (files, or embedded validation images), numbers in
    ``run_dir/occlusion.json`` and ``maps_<i>.npz``; returns the metrics, with ``failed`` listing
    the image files that could not be used (the others are still processed)."""
    run_dir = Path(run_dir)
    device = dist_info.device if dist_info else pick_device(cfg.device)
    loaded = load_trained(cfg.checkpoint, cfg.output_root, device, cfg.data)
    classes, names = loaded.classes, loaded.class_names
    target = resolve_label(cfg.label, classes, names)
    size, stride = _geometry(cfg, loaded.input_size)
    pre = loaded.preprocess()
    fill = loaded.fill().to(device)

    inputs: list[tuple[str, torch.Tensor, Optional[int]]] = []
    failed: list[str] = []
    if cfg.images:
        for f in cfg.images:
            try:
                inputs.append((str(f), load_image(f, loaded.data.image_size,
                                                  max_pixels=cfg.max_pixels), target))
            except ImageError as err:
                failed.append(str(err))
    else:
        val = load_split(loaded.data, "val", progress=cfg.progress)
        idx = torch.linspace(0, len(val) - 1, min(cfg.default_images, len(val))).round().long()
        for i in idx.tolist():
            image, label = val[i]  # in-memory (embedded) or file-based (ImageNet) alike
            label = loaded.label_of(val, int(label)) if target is None else target
            inputs.append((f"{loaded.data.name}:val/{i}", image, label))

    if failed and not inputs:
        raise ImageError(failed[0] if len(failed) == 1 else
                         f"none of the {len(failed)} images could be used: " + "; ".join(failed))
    results = []
    for k, (name, raw, label) in enumerate(tqdm(inputs, desc="images", disable=not cfg.progress)):
        x = pre(raw[None].to(device))[0]
        maps = occlude(loaded.model, x, size=size, stride=stride, fill=fill, target=label,
                       layer=cfg.layer, batch_size=cfg.batch_size, progress=cfg.progress,
                       **_method(cfg))
        stem = Path(name).stem if cfg.images else name.split("/")[-1]
        fig = run_dir / "figures" / f"fig7_{k:02d}_{stem}.png"
        entry = {"image": name, **_summary(maps, classes, names),
                 **_panels(loaded, raw, x, maps, names, fig, f"Fig 7: {name}"),
                 "figure": str(fig.relative_to(run_dir)), "arrays": f"maps_{k:02d}.npz"}
        np.savez_compressed(run_dir / f"maps_{k:02d}.npz", positions=maps.positions.numpy(),
                            fmap_total=maps.fmap_total.numpy(), p_target=maps.p_target.numpy(),
                            top_label=maps.top_label.numpy(), clean_probs=maps.clean_probs.numpy())
        results.append(entry)

    metrics = {"checkpoint": str(loaded.source), "size": size, "stride": stride,
               "images": results, "failed": failed}
    if cfg.localise:
        loc = localisation(loaded, cfg, device)
        (run_dir / "localisation.json").write_text(json.dumps(loc, indent=1) + "\n")
        metrics["localisation"] = {k: v for k, v in loc.items() if k != "per_image"}
    (run_dir / "occlusion.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
