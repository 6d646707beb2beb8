"""``zfnet transfer``: how well the features generalise (paper §5.2, Tables 4-7, Fig 9).

Two tasks, on a target data set the model was not trained on:

* ``fewshot`` (Caltech-101, Caltech-256, the embedded held-out classes): N training images per
  class, the rest (up to ``test_per_class``) for testing, mean per-class accuracy over
  ``folds`` seeded folds, mean ± std. For each N:

  - **pretrained** (Tables 4, 5): layers 1-7 frozen, a new softmax on ``layer`` (fc7). The
    features of every image are computed once and each fold indexes them;
  - **scratch** (the paper's "non-pretrained" rows): the same architecture trained from random
    weights on the fold's training images only, ``scratch_epochs`` passes of SGD;
  - **per layer** (Table 7, at ``per_layer_shots``): a linear SVM (hinge) and a softmax on each
    of ``layers``; conv maps are max-pooled to a 2x2 grid per map (``pool``, see
    :func:`zfnet_cli.transfer.pool_feature_map`), fc6 / fc7 are used as they are.

  Files: ``transfer.md/.csv/.json`` (pretrained against scratch, the paper's beside),
  ``table7.md/.csv/.json``, ``figures/fig9.png`` (accuracy against images per class),
  ``figures/table7.png``.
  Seeds: ``seed`` draws the folds (fold k uses seed + k for its training / test images); the
  from-scratch net of fold k starts from seed + k + 1000 x the pretrained model's own training
  seed (:func:`scratch_seed`: initial weights, data order, dropout), so each pretraining seed
  also gets its own scratch nets on the same folds. The 5 folds already sample what a transfer
  seed changes, so there is no ``seeds=`` option here: the spread over seeds comes from one
  transfer run per pretrained model (e.g. ``variants/zfnet`` and ``variants/zfnet_seed<S>`` of
  ``zfnet ablate seeds=N``), which ``zfnet report`` gathers into its claims
  (:mod:`zfnet_cli.claims`).
  A model that was not trained on the embedded data (a real ImageNet network, loaded as
  ``checkpoint=module:factory weights=FILE`` or any other form) can take the embedded held-out
  classes as its target too: those of ``class_set`` (``rich``: 20 classes), drawn at
  ``embedded_size`` (the size the small-scale runs use, 96 px) and resized to the model's input
  side (bilinear), so the model sees the whole image. Its layers are whatever ``layers`` names
  (e.g. the last block of each stage); Table 7's claim reads the last of them against the
  first four. Its from-scratch rows need an architecture of ours: ``scratch_checkpoint`` names
  one of our checkpoints whose architecture, input size and training recipe the scratch nets
  take (from random weights, on the fold's images at their drawn size), e.g. the small-scale
  ZFNet of ``make paper-small``; without it the scratch rows are skipped.
* ``multilabel`` (PASCAL VOC 2012, Table 6): a new 20-way softmax on frozen fc7 trained on
  ``train``, average precision per class on ``val`` (the paper's test server is not reachable),
  ``table6.md/.csv/.json``. On the embedded data the same protocol runs on the held-out classes
  (one object per image, so the targets are one-hot).
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from tqdm import tqdm

from zfnet_cli.schemas import TransferConfig
from zfnet_cli.loading import Loaded, load_trained
from zfnet_cli.data.caltech import few_shot_split
from zfnet_cli.data.images import UnreadableFiles
from zfnet_cli.data.transforms import BatchPreprocess
from zfnet_cli.engine import (Dist, InMemoryBatches, dataset_batches, pick_device,
                              train_one_epoch)
from zfnet_cli.model import ZFNet
from zfnet_cli.transfer import (extract_features, few_shot_eval, fold_summary,
                                mean_per_class_accuracy, train_linear)
from zfnet_cli.files import write_atomic
from zfnet_cli.paper import FEWSHOT as PAPER_FEWSHOT
from zfnet_cli.paper import TABLE7 as PAPER_TABLE7
from zfnet_cli.paper import VOC as PAPER_VOC
from zfnet_cli.paper import VOC_MEAN as PAPER_VOC_MEAN

TARGETS = ("embedded", "caltech101", "caltech256", "voc")


# ---------------------------------------------------------------- the target data

@dataclass
class Target:
    """The images a transfer experiment uses: ``dataset`` yields ``(uint8 (3,S,S), label)``;
    ``targets`` is (N,) int64, or (N, C) float 0/1 for multi-label; ``ignore`` marks the
    multi-label entries left out of the AP (VOC's difficult objects)."""

    name: str
    dataset: object
    classes: list[str]
    targets: torch.Tensor
    ignore: Optional[torch.Tensor] = None
    unreadable: Optional[UnreadableFiles] = None  # the files skipped by features_of
    resize: Optional[int] = None  # side the images are resized to for the model (None: as drawn)

    def keep(self, indices: torch.Tensor) -> None:
        """Keep only the images at ``indices`` (those that could be read), in that order:
        ``targets`` and ``ignore`` follow; ``dataset`` still indexes every file."""
        self.targets = self.targets[indices]
        self.ignore = None if self.ignore is None else self.ignore[indices]


def _embedded(cfg: TransferConfig, loaded: Loaded, split: str, per_class: int) -> Target:
    from zfnet_cli.data.embedded import load_embedded

    data = loaded.data
    if data.name != "embedded":  # a model from elsewhere: the held-out classes of class_set
        ds = load_embedded(split, image_size=cfg.embedded_size, per_class=per_class,
                           use="heldout", class_set=cfg.class_set, cache_dir=cfg.cache_dir,
                           progress=cfg.progress)
        return Target(f"embedded held-out, {cfg.class_set} set ({split})", ds, list(ds.classes),
                      ds.labels.clone(), resize=loaded.input_size)
    if data.use != "pretrain":
        raise ValueError(f"the model was trained with data.use={data.use}, so it has seen the "
                         "held-out classes; transfer needs a model pretrained without them")
    ds = load_embedded(split, image_size=data.image_size, per_class=per_class,
                       held_out=data.held_out, use="heldout", class_set=data.class_set,
                       seed=data.seed, cache_dir=data.cache_dir,
                       workers=data.workers, progress=cfg.progress)
    return Target(f"embedded held-out ({split})", ds, list(ds.classes), ds.labels.clone())


def fewshot_target(cfg: TransferConfig, loaded: Loaded) -> Target:
    """The pool the folds draw from: every image of the Caltech set, or ``pool_per_class``
    images of each embedded held-out class."""
    size = loaded.data.image_size
    if cfg.target == "embedded":
        return _embedded(cfg, loaded, "train", cfg.pool_per_class)
    if not cfg.root:
        raise ValueError(f"target={cfg.target} needs root=DIR (the data set's folder)")
    if cfg.target == "caltech101":
        from zfnet_cli.data.caltech import Caltech101

        ds = Caltech101(cfg.root, resize=size)
        name = "Caltech-101"
    elif cfg.target == "caltech256":
        from zfnet_cli.data.caltech import Caltech256

        ds = Caltech256(cfg.root, resize=size, clutter=cfg.clutter)
        name = "Caltech-256"
    else:
        raise ValueError(f"target={cfg.target} has no few-shot protocol; use task=multilabel")
    return Target(name, ds, list(ds.classes), torch.as_tensor(ds.targets, dtype=torch.long))


def multilabel_targets(cfg: TransferConfig, loaded: Loaded) -> tuple[Target, Target]:
    """(train, test): VOC 2012 train / val, or the embedded held-out classes (pool / test split)."""
    if cfg.target == "embedded":
        train = _embedded(cfg, loaded, "train", cfg.pool_per_class)
        test = _embedded(cfg, loaded, "test", cfg.test_per_class or 50)
        for t in (train, test):
            t.targets = torch.nn.functional.one_hot(t.targets, len(t.classes)).float()
        return train, test
    if cfg.target != "voc":
        raise ValueError(f"target={cfg.target} has no multi-label protocol; use target=voc or "
                         "target=embedded")
    if not cfg.root:
        raise ValueError("target=voc needs root=DIR (the folder holding VOCdevkit/VOC2012)")
    from zfnet_cli.data.voc import VOC2012Classification

    out = []
    for split in ("train", "val"):
        ds = VOC2012Classification(cfg.root, split, resize=loaded.data.image_size)
        out.append(Target(f"VOC 2012 {split}", ds, list(ds.classes), ds.targets.clone(),
                          ds.difficult.clone()))
    return out[0], out[1]


def _raw_batches(dataset, batch: int, workers: Optional[int], unreadable: UnreadableFiles
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 (B, 3, S, S) batches of ``dataset`` in order and their indices (in memory, or
    decoded by workers, unreadable files skipped under ``unreadable``)."""
    for images, _, indices in dataset_batches(dataset, batch, None, workers=workers,
                                              unreadable=unreadable).batches_with_indices():
        yield images, indices


def _report_unreadable(targets: Sequence[Target], run_dir: Path) -> None:
    """The end-of-run lines naming the target images that were skipped."""
    for t in targets:
        for line in t.unreadable.lines("zfnet transfer: ", where=str(run_dir / "metrics.json")):
            print(line)


def features_of(target: Target, loaded: Loaded, layers: Sequence[str], cfg: TransferConfig,
                device: torch.device, keep_images: bool = False
                ) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """Frozen features of every readable image of ``target`` (one pass), and the uint8 images
    themselves when ``keep_images`` (for the from-scratch training). Unreadable files are
    skipped under ``cfg.max_broken`` and ``target`` keeps only the images read
    (:meth:`Target.keep`; the skipped files in ``target.unreadable``)."""
    pre = loaded.preprocess()
    kept: list[torch.Tensor] = []
    read: list[torch.Tensor] = []
    target.unreadable = UnreadableFiles(len(target.dataset), cfg.max_broken, target.name,
                                        key="max_broken")

    def batches():
        for raw, indices in tqdm(_raw_batches(target.dataset, cfg.batch_size, cfg.workers,
                                              target.unreadable),
                        desc=f"features {target.name}", disable=not cfg.progress, leave=False,
                        total=math.ceil(len(target.dataset) / cfg.batch_size)):
            if keep_images:
                kept.append(raw)
            read.append(indices)
            raw = raw.to(device)
            if target.resize and raw.shape[-1] != target.resize:
                raw = torch.nn.functional.interpolate(raw.float(), size=target.resize,
                                                      mode="bilinear", align_corners=False
                                                      ).round().clamp(0, 255).to(torch.uint8)
            yield pre(raw)

    feats = extract_features(loaded.model, batches(), layers, pool=cfg.pool, device=device)
    target.keep(torch.cat(read))
    return feats, (torch.cat(kept) if keep_images else None)


# ---------------------------------------------------------------- from scratch

SCRATCH_SEED_STRIDE = 1000  # scratch seeds of one pretraining seed: fold seeds + this x it


def scratch_seed(fold_seed: int, loaded: Loaded) -> int:
    """The seed of a fold's from-scratch net: the fold's seed, moved by the pretrained model's
    own training seed (``config.seed`` in our checkpoints; 0 for others). So the transfer runs
    on the N seeds of ``zfnet ablate seeds=N`` train N different scratch nets per fold, and the
    scratch side gets a spread over seeds as the pretrained side does, while the
    folds' images stay the same (a paired comparison). Pretraining seed 0 keeps the fold seed."""
    pretrain = int((loaded.state.get("config") or {}).get("seed") or 0)
    return fold_seed + SCRATCH_SEED_STRIDE * pretrain


def train_scratch(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                  test_labels: torch.Tensor, num_classes: int, loaded: Loaded,
                  cfg: TransferConfig, seed: int, device: torch.device) -> float:
    """The paper's "non-pretrained" baseline for one fold: the pretrained model's architecture
    from random weights (its own init), trained on the fold's images only with SGD (the
    pretrained run's momentum, weight decay and filter renormalisation; ``scratch_epochs``
    passes in batches of ``scratch_batch``, lr / 10 for the last quarter of the steps), the mean
    image of these images; returns
    the mean per-class accuracy (%) on the test images, centre crop."""
    saved = loaded.state.get("config", {})
    optim = saved.get("optim", {})
    data = loaded.data
    torch.manual_seed(seed)
    model = ZFNet(loaded.model.cfg, num_classes).to(device)
    lr = cfg.scratch_lr if cfg.scratch_lr is not None else optim.get("lr", 0.01)
    sgd = torch.optim.SGD(model.parameters(), lr=lr, momentum=optim.get("momentum", 0.9),
                          weight_decay=optim.get("weight_decay", 5e-4))
    mean = images.double().mean(dim=0).float().to(device)
    pre_train = BatchPreprocess(mean, loaded.input_size, train=True, flip=data.flip,
                                scale=data.scale)
    renorm = optim.get("renorm_rms", 0.1) if optim.get("renorm", True) else None
    gen = torch.Generator().manual_seed(seed)
    batch = min(cfg.scratch_batch, len(images))

    def stream():  # shuffled batches, epoch after epoch
        while True:
            yield from InMemoryBatches(images, labels, batch, pre_train, shuffle=True,
                                       generator=gen, device=device)

    batches = stream()
    total = cfg.scratch_epochs * math.ceil(len(images) / batch)
    first = math.ceil(0.75 * total)
    for steps, phase_lr in ((first, lr), (total - first, lr * 0.1)):
        for g in sgd.param_groups:
            g["lr"] = phase_lr
        if steps:
            train_one_epoch(model, itertools.islice(batches, steps), sgd, renorm_rms=renorm,
                            device=device)
    model.eval()
    pre_eval = BatchPreprocess(mean, loaded.input_size, train=False, scale=data.scale)
    with torch.no_grad():
        pred = torch.cat([model(pre_eval(test_images[i:i + cfg.batch_size].to(device))).argmax(1).cpu()
                          for i in range(0, len(test_images), cfg.batch_size)])
    return mean_per_class_accuracy(pred, test_labels, num_classes)


# ---------------------------------------------------------------- the experiments

def run_fewshot(cfg: TransferConfig, loaded: Loaded, run_dir: Path, device: torch.device) -> dict:
    target = fewshot_target(cfg, loaded)
    num_classes = len(target.classes)
    if not cfg.shots or min(cfg.shots) < 1:
        raise ValueError(f"shots must be >= 1 images per class, got {list(cfg.shots)}")
    scratch, arch = cfg.scratch, loaded
    if scratch and not isinstance(loaded.model, ZFNet):
        if cfg.scratch_checkpoint:
            arch = load_trained(cfg.scratch_checkpoint, cfg.output_root, device)
            if not isinstance(arch.model, ZFNet):
                raise ValueError(f"scratch_checkpoint={cfg.scratch_checkpoint} is not one of our "
                                 "ZFNet checkpoints (the scratch nets take its architecture)")
            if target.resize is None or arch.input_size > cfg.embedded_size:
                raise ValueError(f"scratch_checkpoint's input ({arch.input_size} px) needs the "
                                 f"embedded target drawn at least that large "
                                 f"(embedded_size={cfg.embedded_size})")
        else:
            print("zfnet transfer: the from-scratch rows need one of our architectures "
                  "(scratch_checkpoint=...); skipped")
            scratch = False
    table7_shots = cfg.per_layer_shots or max(cfg.shots)
    layers = list(dict.fromkeys([cfg.layer] + (list(cfg.layers) if cfg.per_layer else [])))
    t0 = time.perf_counter()
    feats, images = features_of(target, loaded, layers, cfg, device, keep_images=scratch)
    feature_seconds = time.perf_counter() - t0
    train_kw = dict(weight_decay=cfg.weight_decay, epochs=cfg.max_iter, device=device)

    def folds(shots: int) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        splits, skipped = [], set()
        for k in range(cfg.folds):
            tr, te, sk = few_shot_split(target.targets.tolist(), shots,
                                        test_per_class=cfg.test_per_class, seed=cfg.seed + k,
                                        on_short=cfg.on_short, num_classes=num_classes,
                                        classes=target.classes)
            splits.append((tr, te))
            skipped.update(sk)
        if len(skipped) == num_classes:
            raise ValueError(f"every class has fewer than {shots} + 1 images")
        return splits, sorted(skipped)

    paper = PAPER_FEWSHOT.get(cfg.target, {})
    rows = []
    scratch_seeds = [scratch_seed(cfg.seed + k, arch) for k in range(cfg.folds)]
    work = [(s, k) for s in cfg.shots for k in range(cfg.folds)]
    bar = tqdm(total=len(work), desc="folds", disable=not cfg.progress, leave=False)
    for shots in cfg.shots:
        splits, skipped = folds(shots)
        pre = few_shot_eval(feats[cfg.layer], target.targets, splits, num_classes, loss=cfg.loss,
                            seed=cfg.seed, **train_kw)
        row = {"shots": shots, "pretrained_mean": pre["mean"], "pretrained_std": pre["std"],
               "pretrained_accuracies": pre["accuracies"], "folds": cfg.folds,
               "skipped_classes": [target.classes[c] for c in skipped]}
        if scratch:
            accs = []
            for k, (tr, te) in enumerate(splits):
                tr_t, te_t = torch.as_tensor(tr), torch.as_tensor(te)
                accs.append(train_scratch(images[tr_t], target.targets[tr_t], images[te_t],
                                          target.targets[te_t], num_classes, arch, cfg,
                                          scratch_seeds[k], device))
                bar.update(1)
            s = fold_summary(accs)
            row.update(scratch_mean=s["mean"], scratch_std=s["std"], scratch_accuracies=accs)
        else:
            bar.update(cfg.folds)
        for kind in ("pretrained", "scratch"):
            ref = paper.get(kind, {}).get(shots)
            row[f"paper_{kind}_mean"], row[f"paper_{kind}_std"] = ref if ref else (None, None)
        rows.append(row)
    bar.close()

    per_layer = []
    if cfg.per_layer:
        splits, skipped = folds(table7_shots)
        for loss in cfg.classifiers:
            for layer in cfg.layers:
                r = few_shot_eval(feats[layer], target.targets, splits, num_classes, loss=loss,
                                  seed=cfg.seed, **train_kw)
                per_layer.append({"classifier": loss, "layer": layer, "shots": table7_shots,
                                  "dims": int(feats[layer].shape[1]), "mean": r["mean"],
                                  "std": r["std"], "accuracies": r["accuracies"],
                                  "paper": PAPER_TABLE7.get(cfg.target, {}).get((loss, layer))})
    _write_fewshot(cfg, target, rows, per_layer, run_dir, scratch)
    _report_unreadable([target], run_dir)
    return {"task": "fewshot", "target": target.name, "classes": num_classes,
            "images": len(target.targets), "layer": cfg.layer, "rows": rows,
            "scratch_seeds": scratch_seeds if scratch else None,
            "scratch_architecture": str(arch.source) if scratch else None,
            "unreadable": target.unreadable.summary(),
            "per_layer": per_layer, "feature_seconds": feature_seconds,
            "seconds": time.perf_counter() - t0}


def _write_fewshot(cfg: TransferConfig, target: Target, rows: list[dict], per_layer: list[dict],
                   run_dir: Path, scratch: bool) -> None:
    from zfnet_cli.tables import layers_figure, mean_std, shots_figure, write_table

    which = {"caltech101": "Table 4", "caltech256": "Table 5"}.get(cfg.target, "Tables 4, 5")
    cols = [("images / class", lambda r: str(r["shots"])),
            ("pretrained (ours)", lambda r: mean_std(r["pretrained_mean"], r["pretrained_std"]))]
    if scratch:
        cols.append(("scratch (ours)", lambda r: mean_std(r["scratch_mean"], r["scratch_std"])))
    cols += [("pretrained (paper)", lambda r: mean_std(r["paper_pretrained_mean"], r["paper_pretrained_std"])),
             ("scratch (paper)", lambda r: mean_std(r["paper_scratch_mean"], r["paper_scratch_std"])),
             ("classes skipped", lambda r: str(len(r["skipped_classes"])))]
    notes = [f"Mean per-class accuracy (%) ± std over {cfg.folds} folds; {len(target.classes)} "
             f"classes of {target.name}, up to {cfg.test_per_class or 'all the remaining'} test "
             f"images per class. Pretrained: frozen layers 1-7, a new {cfg.loss} on {cfg.layer}."]
    if scratch:
        notes.append(f"Scratch: the same architecture from random weights, trained for "
                     f"{cfg.scratch_epochs} epochs on the fold's images only.")
    write_table(rows, run_dir, "transfer", title=f"{which}: transfer to {target.name}",
                columns=cols, notes=notes)
    if cfg.plot:
        curves = {"pretrained": [{"shots": r["shots"], "mean": r["pretrained_mean"],
                                  "std": r["pretrained_std"]} for r in rows]}
        if scratch:
            curves["scratch"] = [{"shots": r["shots"], "mean": r["scratch_mean"],
                                  "std": r["scratch_std"]} for r in rows]
        paper = {k: {s: m for s, (m, _) in v.items()}
                 for k, v in PAPER_FEWSHOT.get(cfg.target, {}).items()}
        shots_figure(curves, run_dir / "figures" / "fig9.png", paper=paper or None,
                     title=f"Fig 9: {target.name}, accuracy against training images per class")
    if per_layer:
        label = {"hinge": "SVM", "softmax": "Softmax"}
        write_table(per_layer, run_dir, "table7",
                    title=f"Table 7: features per layer, {target.name} at {per_layer[0]['shots']} "
                          "images per class",
                    columns=[("classifier (layer)", lambda r: f"{label.get(r['classifier'], r['classifier'])} ({r['layer']})"),
                             ("dims", lambda r: str(r["dims"])),
                             ("ours", lambda r: mean_std(r["mean"], r["std"])),
                             ("paper", lambda r: "-" if r["paper"] is None else f"{r['paper']:.1f}")],
                    notes=[f"Conv maps max-pooled to a 2x2 grid per map (pool={cfg.pool}); fc6, "
                           "fc7 after their ReLU. SVM: one-vs-rest, squared hinge, L-BFGS."])
        if cfg.plot:
            layers_figure(per_layer, run_dir / "figures" / "table7.png",
                          title=f"Table 7: accuracy per layer, {target.name}")


def run_multilabel(cfg: TransferConfig, loaded: Loaded, run_dir: Path, device: torch.device) -> dict:
    from zfnet_cli.data.voc import mean_average_precision
    from zfnet_cli.tables import write_table

    t0 = time.perf_counter()
    train, test = multilabel_targets(cfg, loaded)
    f_train, _ = features_of(train, loaded, [cfg.layer], cfg, device)
    f_test, _ = features_of(test, loaded, [cfg.layer], cfg, device)
    y = train.targets
    keep = y.sum(1) > 0  # images whose every object is difficult have no positive to learn
    clf = train_linear(f_train[cfg.layer][keep], y[keep], len(train.classes), loss=cfg.loss,
                       weight_decay=cfg.weight_decay, epochs=cfg.max_iter, device=device)
    scores = clf.scores(f_test[cfg.layer]).cpu()
    per_class, mean = mean_average_precision(scores.numpy(), test.targets.numpy(),
                                             None if test.ignore is None else test.ignore.numpy())
    _report_unreadable([train, test], run_dir)
    voc = cfg.target == "voc"
    rows = [{"class": c, "ap": 100 * ap, "paper": PAPER_VOC.get(c) if voc else None}
            for c, ap in zip(test.classes, per_class)]
    rows.append({"class": "mean", "ap": 100 * mean, "paper": PAPER_VOC_MEAN if voc else None})
    write_table(rows, run_dir, "table6", title=f"Table 6: {test.name}, average precision (%)",
                columns=[("class", lambda r: r["class"]),
                         ("ours", lambda r: "-" if math.isnan(r["ap"]) else f"{r['ap']:.1f}"),
                         ("paper", lambda r: "-" if r["paper"] is None else f"{r['paper']:.1f}")],
                notes=[f"A new 20-way {cfg.loss} on frozen {cfg.layer}, trained on "
                       f"{train.name} ({int(keep.sum())} images), tested on {test.name} "
                       f"({len(test.targets)} images). The paper trains on train+val and tests "
                       "on the (unreachable) test server; it lists only some per-class values."])
    return {"task": "multilabel", "target": test.name, "classes": len(test.classes),
            "train_images": int(keep.sum()), "test_images": len(test.targets),
            "unreadable": {"train": train.unreadable.summary(), "test": test.unreadable.summary()},
            "mean_ap": 100 * mean, "rows": rows, "seconds": time.perf_counter() - t0}


def run(cfg: TransferConfig, run_dir: str | Path, *, dist_info: Dist | None = None,
        overrides: Sequence[str] = ()) -> dict:
    """Run the transfer task ``cfg`` names and write its tables and figures into ``run_dir``."""
    if cfg.target not in TARGETS:
        raise ValueError(f"unknown target '{cfg.target}'; expected one of {', '.join(TARGETS)}")
    task = cfg.task if cfg.task != "auto" else ("multilabel" if cfg.target == "voc" else "fewshot")
    if task not in ("fewshot", "multilabel"):
        raise ValueError(f"task must be fewshot, multilabel or auto, got '{cfg.task}'")
    for loss in [cfg.loss, *cfg.classifiers]:
        if loss not in ("softmax", "hinge"):
            raise ValueError(f"unknown classifier '{loss}'; expected softmax or hinge (SVM)")
    device = dist_info.device if dist_info and dist_info.device else pick_device(cfg.device)
    loaded = load_trained(cfg.checkpoint, cfg.output_root, device, source=cfg)
    run_dir = Path(run_dir)
    if task == "fewshot":
        metrics = run_fewshot(cfg, loaded, run_dir, device)
    else:
        metrics = run_multilabel(cfg, loaded, run_dir, device)
    metrics["checkpoint"] = str(loaded.source)
    metrics["model_kind"] = loaded.kind
    write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
