"""``zfnet occlude``: occlusion sensitivity (paper §4.2, Fig 7) on any image a user has.

For each image: slide the data set's mean-grey square over it (:func:`zfnet_cli.occlusion.occlude`)
and draw Fig 7's panels: (a) the input with the occluder where it hurts the correct class most,
(b) the total activation of the strongest map of ``layer`` per occluder position (default: the
paper's layer 5, or the model's last feature map before global pooling), (c) that map's deconv
projection (left out, with a note, where no deconvnet applies to the model), (d) p(correct class)
per position, (e) the most probable label per position, and (f) the fall in p(correct class)
at each pixel over the image.

Images are files, folders of photos (flat, or one sub-folder per class:
:class:`~zfnet_cli.data.images.PhotoFolder`) or, with neither, a few images of the model's
data from ``split`` (``val``, the default, or ``test``). A photo is occluded over the region
the model sees: resized to short side ``image_size`` and cut to the centre ``input_size``
square (torchvision's weights: 256 then 224, the centred square of 0.875 x the short side);
``region`` in ``occlusion.json`` and the npz gives it in the photo's pixels. Labels: none (the
predicted class; in a class-per-folder tree, the folder's name where it names a class of the
model), one for every image, or one per image.

``localise=true`` also checks that the maps mean something, on images whose objects have known
boxes: the embedded data's (over ``localise_images`` images of ``split``: tune on val, read the
claims on test), or, where images are given, the real photos of a folder written by
:func:`zfnet_cli.data.photos.photos` (its ``photos.json`` holds each photo's hand-drawn box and
ImageNet class, which is then the photo's correct class unless a label is given): the fraction
for which the occluder position where p(true class) drops most is centred inside the object's
box, beside ``chance_inside``: the mean share of occluder positions centred inside the box (what
a map that picked its worst position at random would score), and ``per_image`` for the spread
over images. ``metrics.json`` records the ``split`` read.

Classes are shown by their human names where the model has them (ImageNet: wnid -> name, from
the checkpoint, the data root's ``meta.bin`` / devkit, or torchvision's list for foreign weights
such as ``checkpoint=alexnet-owt-7be5be79.pth``); ``occlusion.json`` gives each class's id and
name.

Occluder size and stride are UNSTATED in the paper; the defaults here are a quarter of the input
side and a quarter of that (56 px / 14 px at 224, 32 / 8 at 128).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from zfnet_cli.schemas import OccludeConfig
from zfnet_cli.loading import Loaded, load_trained, resolve_label
from zfnet_cli.data.images import (ImageError, PhotoFolder, load_image, seen_region,
                                   upright_size)
from zfnet_cli.data.photos import boxed
from zfnet_cli.data.sources import load_split
from zfnet_cli.data.transforms import center_crop
from zfnet_cli.deconv_graph import deconvnet_for, project_fmap
from zfnet_cli.sanity import template_note
from zfnet_cli.engine import Dist, pick_device
from zfnet_cli.layers import SCRIPTED
from zfnet_cli.occlusion import OcclusionMaps, occlude
from zfnet_cli import viz
from zfnet_cli.files import write_atomic


@dataclass
class _Input:
    """One image to occlude: its name, where it came from, and its correct class."""

    name: str
    path: Optional[Path] = None  # an image file; None: an image of the model's data set
    folder_class: Optional[str] = None  # its sub-folder in a class-per-folder tree
    raw: Optional[torch.Tensor] = None  # uint8 (3, S, S), once read
    label: Optional[int] = None
    label_from: str = "prediction"
    box: Optional[list[float]] = None  # the object's box in the photo's pixels (photos.json)


def _geometry(cfg: OccludeConfig, side: int) -> tuple[int, int]:
    size = cfg.size or max(1, side // 4)
    stride = cfg.stride or max(1, size // 4)
    if size > side:
        raise ValueError(f"occluder size {size} is larger than the {side}x{side} model input")
    return size, stride


def _method(cfg: OccludeConfig) -> dict:
    """``occlude``'s method options from the config (bounds already checked at compose)."""
    return {"method": cfg.method, "memory_budget": cfg.memory_budget_mb * 2 ** 20}


def _projection(loaded: Loaded, x: torch.Tensor, maps: OcclusionMaps, rule: Optional[str]
                ) -> tuple[Optional[np.ndarray], Optional[str], str]:
    """Panel (c), the projection of the strongest map under ``rule``, as an image; or ``None``
    and why not where no deconvnet applies to the model (or to that layer). Third: the rule's
    name for the title, with a warning where the projection is a template of the map."""
    if maps.layer is None:
        return None, SCRIPTED, ""
    try:
        loaded.deconv  # a TorchScript model: its one-line reason
        # the explicit deconvnet where the layer is in a plain stack, else the graph one
        net = deconvnet_for(loaded.model, [maps.layer], rule)
        proj = project_fmap(loaded.model, x, maps.layer, maps.fmap, rule=net.rule)
        note = template_note(net.rule, maps.layer,
                             net.conditioning(maps.layer, tuple(x.shape[-2:])))
    except ValueError as err:
        return None, str(err).splitlines()[0], ""
    text = f"(c) {net.rule} rule" + (f"; WARNING: {note}" if note else "")
    return viz.projection_to_image(proj.cpu().numpy(), viz.FIGURE_GAIN), None, text


def _region(item: _Input, loaded: Loaded) -> dict:
    """The part of the photo the model sees (and so the part occluded), in its pixels."""
    size, crop = loaded.data.image_size, loaded.input_size
    if item.path is not None:
        w, h = upright_size(item.path)
    else:
        w = h = int(item.raw.shape[-1])
        size = w
    x0, y0, x1, y1 = seen_region(w, h, size, crop)
    text = (f"occluded: the model's view, x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f} of the "
            f"{w}x{h} image (its centre {crop}x{crop} after resizing the short side to {size})")
    return {"region": [x0, y0, x1, y1], "photo_size": [w, h], "region_text": text}


def _panels(loaded: Loaded, item: _Input, x: torch.Tensor, maps: OcclusionMaps,
            names: list[str], path: Path, title: str, region: str, rule: Optional[str] = None
            ) -> tuple[dict, Optional[str]]:
    """Fig 7's panels (a)-(e) and the overlay (f) for one image; labels are shown by their
    human names (``names``). Returns the numbers for the JSON and the reason panel (c) was
    left out (``None`` where it is drawn)."""
    projection, why, rule_text = _projection(loaded, x, maps, rule)
    title = f"{title}; {rule_text}" if rule_text else title
    worst = int(maps.log_p_target.flatten().argmin())
    y, xx = maps.positions[worst].tolist()
    drop = maps.clean_p_target - maps.resampled()["p_target"]  # (H, W)
    viz.occlusion_figure(
        center_crop(item.raw, loaded.input_size).permute(1, 2, 0).numpy(), (y, xx, maps.size),
        None if maps.fmap_total is None else maps.fmap_total.numpy(), projection,
        maps.p_target.numpy(),
        maps.top_label.numpy(), names, maps.centers().numpy(), path, title=title,
        fmap=f"{maps.layer} map {maps.fmap}", target=names[maps.target], overlay=drop.numpy(),
        region=region)
    return {"worst_position": [y, xx], "panel_c": why is None, "panel_c_rule": rule_text}, why


def _save_maps(path: Path, maps: OcclusionMaps, region: dict) -> None:
    """One image's maps: at grid resolution, at the input's pixels, and where they are."""
    full = maps.resampled()
    write_atomic(path, lambda f: np.savez_compressed(
        f, positions=maps.positions.numpy(), boxes=maps.boxes().numpy(),
        grid=np.array(maps.grid), size=maps.size, stride=maps.stride,
        image_size=np.array(maps.image_size), layer=np.array(maps.layer or ""),
        module_name=np.array(maps.module_name), target=maps.target,
        **({} if maps.layer is None else {"fmap": maps.fmap, "fmap_total": maps.fmap_total.numpy()}),
        p_target=maps.p_target.numpy(),
        log_p_target=maps.log_p_target.numpy(), top_label=maps.top_label.numpy(),
        **{f"{k}_input": v.numpy() for k, v in full.items()},
        clean_probs=maps.clean_probs.numpy(), clean_p_target=maps.clean_p_target,
        region=np.array(region["region"]), photo_size=np.array(region["photo_size"])))


def _summary(maps: OcclusionMaps, classes: list[str], names: list[str]) -> dict:
    """The numbers of one image; each class as its id (``class``: a wnid on ImageNet) and its
    human name (``name``; the id itself where there is no name)."""
    top5 = maps.clean_probs.topk(min(5, len(classes)))
    return {"layer": maps.layer, "module": maps.module_name, "strongest_fmap": maps.fmap,
            "target": maps.target,
            "target_class": classes[maps.target], "target_name": names[maps.target],
            "clean_p_target": maps.clean_p_target, "clean_label": classes[maps.clean_label],
            "clean_label_name": names[maps.clean_label], "min_p_target": float(maps.p_target.min()),
            "top_classes": [{"class": classes[i], "name": names[i], "p": float(p)} for p, i in
                            zip(top5.values.tolist(), top5.indices.tolist())],
            "grid": list(maps.grid), "size": maps.size, "stride": maps.stride,
            "method": maps.method}


def list_inputs(images: list[str]) -> list[_Input]:
    """The image files and the photos of each folder (:class:`PhotoFolder`), in order.

    Raises:
        ImageError: a folder holds no images (one line naming it).
    """
    out: list[_Input] = []
    for f in images:
        if Path(f).is_dir():
            folder = PhotoFolder(f, resize=1)  # only its listing is used here
            out += [_Input(path, Path(path), folder.classes[c] if folder.tree else None)
                    for path, c in folder.samples]
        else:
            out.append(_Input(str(f), Path(f)))
    return out


def assign_labels(inputs: list[_Input], cfg: OccludeConfig, classes: list[str],
                  names: list[str]) -> None:
    """Each input's correct class: ``labels`` one per image (or one for all), else ``label``
    for all, else the class its sub-folder names (where it names a class of the model), else
    ``None`` (the predicted class).

    Raises:
        ValueError: more than one label, but not one per image; an unknown class.
    """
    given = list(cfg.labels) or ([cfg.label] if cfg.label is not None else [])
    if len(given) > 1 and len(given) != len(inputs):
        raise ValueError(f"{len(given)} labels for {len(inputs)} image"
                         f"{'s' if len(inputs) != 1 else ''}: give one --label for all images "
                         f"or one per image, in order")
    resolved = [resolve_label(g, classes, names) for g in given]
    for i, item in enumerate(inputs):
        photo = boxed(item.path) if item.path is not None else None
        if photo is not None:
            item.box = photo.box
        if resolved:
            item.label, item.label_from = resolved[i if len(resolved) > 1 else 0], "label"
        elif photo is not None and len(classes) == 1000:  # photos.json names ImageNet classes
            item.label, item.label_from = photo.classes[0], "photos.json"
        elif item.folder_class is not None:
            try:
                item.label = resolve_label(item.folder_class, classes, names)
                item.label_from = "folder"
            except ValueError:  # a folder name that is no class of the model: the prediction
                pass


def _hit(maps: OcclusionMaps, box: Sequence[float]) -> dict:
    """Whether the occluder position where p(target) drops most is centred inside ``box``
    (``x0, y0, x1, y1`` in the model input's pixels), and chance: the share of all occluder
    positions centred inside it, i.e. the hit rate of a map that picked its worst position at
    random (the claims report compares to it)."""
    x0, y0, x1, y1 = box
    worst = int(maps.log_p_target.flatten().argmin())  # log: no ties where p underflows
    cy, cx = maps.centers().view(-1, 2)[worst].tolist()
    inside = x0 <= cx + 0.5 <= x1 and y0 <= cy + 0.5 <= y1  # pixel centre, continuous coords
    c = maps.centers().view(-1, 2) + 0.5
    share = float(((c[:, 1] >= x0) & (c[:, 1] <= x1) & (c[:, 0] >= y0) & (c[:, 0] <= y1))
                  .double().mean())
    return {"worst_centre": [cy, cx], "box": [x0, y0, x1, y1], "inside": bool(inside),
            "chance": share, "p_drop": maps.clean_p_target - float(maps.p_target.min())}


def _box_in_view(box: Sequence[float], region: Sequence[float], side: int) -> list[float]:
    """A box in a photo's pixels, moved into the model input's pixels (``region``: the part
    of the photo the ``side`` x ``side`` input shows), clipped to the input."""
    rx0, ry0, rx1, _ = region
    k = side / (rx1 - rx0)
    x0, y0, x1, y1 = ((v - o) * k for v, o in zip(box, (rx0, ry0, rx0, ry0)))
    return [min(max(v, 0.0), float(side)) for v in (x0, y0, x1, y1)]


def _summarise(records: list[dict], split: str, size: int, stride: int) -> dict:
    n = len(records)
    hits = sum(r["inside"] for r in records)
    return {"split": split, "images": n, "inside": hits, "fraction_inside": hits / max(n, 1),
            "goal": ">= 0.9", "chance_inside": sum(r["chance"] for r in records) / max(n, 1),
            "size": size, "stride": stride, "per_image": records}


def localisation(loaded: Loaded, cfg: OccludeConfig, device) -> dict:
    """Over ``cfg.localise_images`` embedded images of ``cfg.split``: is the occluder position
    where p(true class) drops most centred inside the object's box?"""
    if loaded.data.name != "embedded":
        raise ValueError("localise=true needs the embedded data (its images carry object boxes) "
                         "or photos with boxes: a folder written by zfnet_cli.data.photos.photos")
    data = load_split(loaded.data, cfg.split, progress=cfg.progress)
    n = min(cfg.localise_images, len(data))
    # spread the sample over the classes: every (len/n)-th image
    idx = torch.linspace(0, len(data) - 1, n).round().long().tolist()
    size, stride = _geometry(cfg, loaded.input_size)
    pre = loaded.preprocess()
    fill = loaded.fill()
    offset = (data.images.shape[-1] - loaded.input_size) / 2
    records = []
    for i in tqdm(idx, desc="localise", disable=not cfg.progress):
        x = pre(data.images[i:i + 1].to(device))[0]
        label = int(data.labels[i])
        maps = occlude(loaded.model, x, size=size, stride=stride, fill=fill.to(device),
                       target=label, layer=cfg.layer, batch_size=cfg.batch_size,
                       **_method(cfg))
        records.append({"index": i, "class": data.classes[label],
                        **_hit(maps, (data.boxes[i] - offset).tolist())})
    return _summarise(records, cfg.split, size, stride)


def run(cfg: OccludeConfig, run_dir: str | Path, *, dist_info: Dist | None = None, **_) -> dict:
    """Fig 7 for each image (files, photo folders, or embedded validation images), numbers in
    ``run_dir/occlusion.json`` and ``maps_<i>.npz``; returns the metrics, with ``failed`` listing
    the image files that could not be used (the others are still processed) and ``notes`` what
    was left out (panel (c) where no deconvnet applies)."""
    run_dir = Path(run_dir)
    device = dist_info.device if dist_info else pick_device(cfg.device)
    inputs = list_inputs(cfg.images)  # a folder without images fails before the model loads
    loaded = load_trained(cfg.checkpoint, cfg.output_root, device, cfg.data, source=cfg)
    classes, names = loaded.classes, loaded.class_names
    size, stride = _geometry(cfg, loaded.input_size)
    pre = loaded.preprocess()
    fill = loaded.fill().to(device)

    failed: list[str] = []
    if not cfg.images:
        data = load_split(loaded.data, cfg.split, progress=cfg.progress)
        n = min(cfg.default_images, len(data))
        idx = torch.linspace(0, len(data) - 1, n).round().long()
        for i in idx.tolist():
            image, label = data[i]  # in-memory (embedded) or file-based (ImageNet) alike
            inputs.append(_Input(f"{loaded.data.name}:{cfg.split}/{i}", raw=image,
                                 label=loaded.label_of(data, int(label)),
                                 label_from="data set"))
    assign_labels(inputs, cfg, classes, names)
    results, notes, located = [], [], []
    if cfg.localise and cfg.images and not any(item.box for item in inputs):
        raise ValueError("localise=true on image files needs their object boxes: a folder "
                         "written by zfnet_cli.data.photos.photos (its photos.json)")
    for item in tqdm(inputs, desc="images", disable=not cfg.progress):
        if item.raw is None:  # read one photo at a time: a large folder is never all in memory
            try:
                item.raw = load_image(item.path, loaded.data.image_size, max_pixels=cfg.max_pixels)
            except ImageError as err:
                failed.append(str(err))
                continue
        k = len(results)
        x = pre(item.raw[None].to(device))[0]
        maps = occlude(loaded.model, x, size=size, stride=stride, fill=fill, target=item.label,
                       layer=cfg.layer, batch_size=cfg.batch_size, progress=cfg.progress,
                       **_method(cfg))
        stem = item.path.stem if item.path is not None else item.name.split("/")[-1]
        fig = run_dir / "figures" / f"fig7_{k:02d}_{stem}.png"
        region = _region(item, loaded)
        panels, why = _panels(loaded, item, x, maps, names, fig, f"Fig 7: {item.name}",
                              region["region_text"], cfg.rule)
        if why and not notes:
            which = "panels (b) and (c)" if maps.layer is None else "panel (c), the deconv projection"
            default = (f" ({maps.layer} is panel (b)'s default layer, no --layer given; "
                       f"--layer NAME reads another)" if cfg.layer is None and maps.layer else "")
            notes.append(f"Fig 7 without {which}: {why}{default}")
        _save_maps(run_dir / f"maps_{k:02d}.npz", maps, region)
        if cfg.localise and item.box is not None:  # a boxed photo: its maps are the check's
            located.append({"image": item.name, "class": classes[maps.target],
                            **_hit(maps, _box_in_view(item.box, region["region"],
                                                      loaded.input_size))})
        results.append({"image": item.name, **_summary(maps, classes, names), **panels,
                        "label_from": item.label_from, "folder_class": item.folder_class,
                        **region, "figure": str(fig.relative_to(run_dir)),
                        "arrays": f"maps_{k:02d}.npz"})
        item.raw = None
    if failed and not results:
        raise ImageError(failed[0] if len(failed) == 1 else
                         f"none of the {len(failed)} images could be used: " + "; ".join(failed))

    # split: where the default images and the localisation check came from (files: unused)
    metrics = {"checkpoint": str(loaded.source), "model_kind": loaded.kind,
               "split": cfg.split, "size": size,
               "stride": stride, "images": results, "failed": failed, "notes": notes}
    if cfg.localise:
        loc = (_summarise(located, "photos", size, stride) if cfg.images else
               localisation(loaded, cfg, device))
        write_atomic(run_dir / "localisation.json", json.dumps(loc, indent=1) + "\n")
        metrics["localisation"] = {k: v for k, v in loc.items() if k != "per_image"}
    write_atomic(run_dir / "occlusion.json", json.dumps(metrics, indent=1) + "\n")
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
