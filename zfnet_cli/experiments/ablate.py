"""``zfnet ablate``: the architecture ablation of Table 3 (paper §5.1).

Each variant is the AlexNet replica or ZFNet with layers removed or resized, trained from scratch
with the same recipe and budget (the ``train`` overrides given to every variant). A variant is a
normal ``zfnet train`` run in ``<ablation>/variants/<name>/``; one whose ``metrics.json`` exists
is finished and skipped, one with ``checkpoints/last.pt`` but no metrics is resumed, so
``zfnet ablate resume=latest`` continues an interrupted ablation. After each variant the table
(train top-1, val top-1, val top-5 error and parameter count, beside the paper's) is rewritten
as ``table3.md``, ``table3.csv`` and ``table3.json``, with ``figures/table3.png``.

Seeds (``seeds=N``): each variant is trained N times, with ``seed`` = S, S+1, ..., S+N-1 where S
is the variants' own ``seed`` (``-t seed=S``, default 0). A training seed sets the initial
weights, the order of the training images and their augmentation (crops, flips) and dropout's
masks; it does not change the data set itself (the embedded images come from ``data.seed``) nor
the validation images. The first seed's folder is ``variants/<name>`` (so ``variants/zfnet`` is
always a trained ZFNet, as ``make paper`` expects), the others ``variants/<name>_seed<S>``. The
table then gives each error as mean ± std (sample std) over the seeds, with their number n; a
variant with one finished seed shows its single value and n = 1. The default N = 1 trains each
variant once, as before.

Widths scale with the model the presets name: fc6/fc7 at 2048 and 8192 are 1/2 and 2x the base
width (4096 in the paper, 256 in the small preset), and conv3-5 = 512/1024/512 multiplies the
base conv3-5 widths by 512/384, 1024/384 and 512/256.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from zfnet_cli.schemas import AblateConfig
from zfnet_cli.engine import Dist
from zfnet_cli.experiments import train as experiment_train
from zfnet_cli.files import write_atomic
from zfnet_cli.paper import TABLE3


@dataclass(frozen=True)
class Variant:
    """One row of Table 3."""

    label: str  # the row's name in Table 3
    base: str  # "alexnet" or "zfnet": the model preset it starts from
    paper: tuple[float, float, float]  # Table 3: train top-1, val top-1, val top-5 error (%)
    drop: tuple[str, ...] = ()  # layers removed (model.drop)
    fc_factor: float = 1.0  # fc6, fc7 width x this (2048 or 8192 of the paper's 4096)
    wide_conv: bool = False  # conv3-5 = 512/1024/512 instead of 384/384/256 (scaled)


# Table 3, in the paper's order.
VARIANTS: dict[str, Variant] = {
    "alexnet": Variant("AlexNet replica", "alexnet", TABLE3["alexnet"]),
    "alexnet_no_conv34": Variant("- layers 3,4", "alexnet", TABLE3["alexnet_no_conv34"],
                                 drop=("conv3", "conv4")),
    "alexnet_no_fc7": Variant("- layer 7", "alexnet", TABLE3["alexnet_no_fc7"], drop=("fc7",)),
    "alexnet_no_fc67": Variant("- layers 6,7", "alexnet", TABLE3["alexnet_no_fc67"], drop=("fc6", "fc7")),
    "alexnet_no_conv34_fc67": Variant("- layers 3,4,6,7", "alexnet", TABLE3["alexnet_no_conv34_fc67"],
                                      drop=("conv3", "conv4", "fc6", "fc7")),
    "alexnet_fc2048": Variant("fc6,7 = 2048", "alexnet", TABLE3["alexnet_fc2048"], fc_factor=0.5),
    "alexnet_fc8192": Variant("fc6,7 = 8192", "alexnet", TABLE3["alexnet_fc8192"], fc_factor=2.0),
    "zfnet": Variant("ZFNet", "zfnet", TABLE3["zfnet"]),
    "zfnet_fc2048": Variant("ZFNet fc6,7 = 2048", "zfnet", TABLE3["zfnet_fc2048"], fc_factor=0.5),
    "zfnet_fc8192": Variant("ZFNet fc6,7 = 8192", "zfnet", TABLE3["zfnet_fc8192"], fc_factor=2.0),
    "zfnet_conv512": Variant("ZFNet conv3-5 = 512/1024/512", "zfnet", TABLE3["zfnet_conv512"],
                             wide_conv=True),
    "zfnet_fc8192_conv512": Variant("ZFNet 8192 + 512/1024/512", "zfnet", TABLE3["zfnet_fc8192_conv512"],
                                    fc_factor=2.0, wide_conv=True),
}
WIDE_CONV_FACTORS = (512 / 384, 1024 / 384, 512 / 256)  # conv3, conv4, conv5


def check_variants(names: Optional[Sequence[str]]) -> list[str]:
    """The variants to run, in Table 3's order of the request; unknown names are an error."""
    names = list(VARIANTS) if not names else list(dict.fromkeys(names))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; variants: {', '.join(VARIANTS)}")
    return names


def variant_overrides(variant: Variant, presets: dict[str, str],
                      base_model: Callable[[str], "experiment_train.ModelConfig"]) -> list[str]:
    """``zfnet train`` overrides that build ``variant``. ``base_model(preset)`` gives the base
    preset's :class:`ModelConfig` (for the widths to scale)."""
    if variant.base not in presets:
        raise ValueError(f"ablate.presets has no model for base '{variant.base}'")
    preset = presets[variant.base]
    out = [f"model={preset}"]
    base = base_model(preset)
    if variant.drop:
        out.append(f"model.drop=[{','.join(variant.drop)}]")
    if variant.fc_factor != 1.0:
        out.append("model.fc_widths=[" + ",".join(str(max(1, round(w * variant.fc_factor)))
                                                  for w in base.fc_widths) + "]")
    if variant.wide_conv:
        ch = list(base.channels)
        ch[2:5] = [max(1, round(c * f)) for c, f in zip(ch[2:5], WIDE_CONV_FACTORS)]
        out.append("model.channels=[" + ",".join(map(str, ch)) + "]")
    return out


_ERRORS = ("train_top1_err", "val_top1_err", "val_top5_err")  # Table 3's columns, in %
_TEST_ERRORS = ("test_top1_err", "test_top5_err")  # with train eval_test=true, every seed


def seed_folder(name: str, seed: int, first_seed: int) -> str:
    """The folder of ``variants/`` that holds variant ``name`` trained with ``seed``: the
    variant's own name for the first seed, ``<name>_seed<S>`` for the others."""
    return name if seed == first_seed else f"{name}_seed{seed}"


def finished_variants(run_dir: Path) -> dict[str, list[dict]]:
    """Variant name -> the ``metrics.json`` of each of its finished seeds in ``run_dir``, in
    Table 3's order (variants) and seed order."""
    out: dict[str, list[dict]] = {}
    base = run_dir / "variants"
    for name in VARIANTS:
        tag = f"{name}_seed"
        others = sorted((p for p in base.glob(f"{tag}*") if p.name[len(tag):].isdigit()),
                        key=lambda p: int(p.name[len(tag):]))
        found = [json.loads((f / "metrics.json").read_text()) for f in [base / name, *others]
                 if (f / "metrics.json").is_file()]
        if found:
            out[name] = found
    return out


def _row(name: str, runs: list[dict]) -> dict:
    """One Table 3 row from the finished seeds of a variant: each error as its mean over the
    seeds, ``<key>_std`` (sample std; None for one seed), ``<key>_values`` (one per seed)."""
    from zfnet_cli.transfer import fold_summary

    v = VARIANTS[name]
    keys = _ERRORS + (_TEST_ERRORS if all("test_top1" in m["final"] for m in runs) else ())
    per_seed = {key: [100.0 - m["final"][key.removesuffix("_err")] for m in runs] for key in keys}
    row = {"variant": name, "label": v.label, "parameters": runs[0]["parameters"],
           "epochs": runs[0]["epochs"], "seeds": len(runs),
           "seed_values": [m.get("seed") for m in runs]}
    for key, values in per_seed.items():
        s = fold_summary(values)
        row[key], row[f"{key}_std"] = s["mean"], s["std"] if len(values) > 1 else None
        row[f"{key}_values"] = values
    row.update(paper_train_top1_err=v.paper[0], paper_val_top1_err=v.paper[1],
               paper_val_top5_err=v.paper[2])
    return row


def table_rows(run_dir: Path) -> list[dict]:
    """Table 3's rows from every finished variant in the ablation folder ``run_dir``, in the
    table's order, each over its finished seeds (:func:`_row`)."""
    return [_row(n, runs) for n, runs in finished_variants(Path(run_dir)).items()]


def write_table(rows: list[dict], run_dir: Path, *, plot: bool = True) -> None:
    """``table3.md`` / ``.csv`` / ``.json`` and ``figures/table3.png`` from the finished rows."""
    from zfnet_cli.tables import ablation_figure, write_table as write

    def err(key: str):
        def cell(r):
            if key not in r:
                return "-"
            std = r.get(f"{key}_std")
            paper = r.get("paper_" + key)
            return (f"{r[key]:.1f}{f' ± {std:.1f}' if std is not None else ''}"
                    + (f" ({paper})" if paper is not None else ""))
        return cell

    # test columns when some variant was scored on the test split (train eval_test=true)
    test = [("test top-1", err("test_top1_err")), ("test top-5", err("test_top5_err"))] \
        if any("test_top1_err" in r for r in rows) else []
    write(rows, run_dir, "table3",
          title="Table 3: architecture ablation (error %, ours (paper))",
          columns=[("variant", lambda r: r["label"]),
                   ("parameters", lambda r: f"{r['parameters']:,}"),
                   ("train top-1", err("train_top1_err")), ("val top-1", err("val_top1_err")),
                   ("val top-5", err("val_top5_err")), *test,
                   ("seeds", lambda r: str(r.get("seeds", 1)))],
          notes=["Train top-1 error is the running error over the last epoch's training batches "
                 "(dropout and augmentation on); val and test errors are after the last epoch, "
                 "centre crop. The paper's numbers are ZFNet-size models on ImageNet (val; it "
                 "gives no test error per variant).",
                 "With several seeds each error is the mean ± std (sample std) over them; "
                 "seeds = n. A row with n = 1 is a single run."])
    if plot and rows:
        ablation_figure(rows, run_dir / "figures" / "table3.png")


def run(cfg: AblateConfig, run_dir: str | Path, *, compose_train: Callable[[list[str]], object],
        describe_run: Callable[[object, Path], None], dist_info: Dist | None = None,
        overrides: Sequence[str] = ()) -> dict:
    """Train each variant of ``cfg.variants`` into ``run_dir/variants/<name>`` (skipping finished
    ones, resuming interrupted ones) and write Table 3.

    Args:
        cfg: the ablation config.
        run_dir: the ablation folder (new, or the one ``cfg.resume`` names).
        compose_train: ``overrides -> TrainConfig`` (the config layer's ``compose("train", .)``).
        describe_run: ``(train_cfg, folder)`` writes a new variant folder's description
            (config.yaml, command.txt, run.json).
        dist_info: DDP ranks; every rank trains, rank 0 writes.

    Returns:
        dict: ``rows`` (Table 3 rows of every finished variant in the folder, in the table's
        order, each over its finished seeds), ``trained`` and ``skipped`` variant folders
        (``<name>``, or ``<name>_seed<S>`` for the further seeds).

    Raises:
        ValueError: an unknown variant, or ``seeds`` below 1.
    """
    d = dist_info or Dist()
    run_dir = Path(run_dir)
    names = check_variants(cfg.variants)
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be >= 1 (trainings per variant), got {cfg.seeds}")
    train_overrides = list(cfg.train) + list(cfg.train_extra) + [
        f"output_root={cfg.output_root}", f"device={cfg.device}"]
    base_models: dict[str, object] = {}

    def base_model(preset: str):
        if preset not in base_models:
            base_models[preset] = compose_train(train_overrides + [f"model={preset}"]).model
        return base_models[preset]

    plans = {n: train_overrides + variant_overrides(VARIANTS[n], cfg.presets, base_model)
             for n in names}
    # composed up front, so a bad override fails before any training
    configs = {n: compose_train(plans[n]) for n in names}
    # (variant, seed) jobs, variant by variant; seed S0 is the variants' own train seed
    jobs = [(n, configs[n].seed + k) for n in names for k in range(cfg.seeds)]
    rows: list[dict] = []
    trained, skipped = [], []
    for i, (name, seed) in enumerate(jobs, 1):
        folder = seed_folder(name, seed, configs[name].seed)
        vdir = run_dir / "variants" / folder
        done = vdir / "metrics.json"
        step = f"[{i}/{len(jobs)}] {folder}"
        if done.is_file():
            skipped.append(folder)
            if d.main:
                print(f"zfnet ablate: {step}: finished earlier, skipped")
        else:
            extra = [f"seed={seed}"] if seed != configs[name].seed else []
            ovr = list(plans[name]) + extra
            last = vdir / "checkpoints" / "last.pt"
            if last.is_file():
                ovr.append(f"resume={last}")
            tcfg = replace(configs[name], seed=seed,
                           **({"resume": str(last)} if last.is_file() else {}))
            if not vdir.exists():
                if d.main:
                    vdir.mkdir(parents=True)
                    describe_run(tcfg, vdir)
            if d.main:
                print(f"zfnet ablate: {step} ({VARIANTS[name].label}, seed {seed})"
                      f"{', resumed' if last.is_file() else ''}: "
                      f"{' '.join(plans[name][len(train_overrides):] + extra)}")
            experiment_train.run(tcfg, vdir, dist_info=d, overrides=ovr)
            trained.append(folder)
        if d.main:
            # every finished variant in the folder, in Table 3's order: processes that train
            # different variants into one folder (one per GPU) converge on the whole table
            rows = table_rows(run_dir)
            write_table(rows, run_dir, plot=cfg.plot)
    metrics = {"variants": names, "trained": trained, "skipped": skipped, "rows": rows}
    if d.main:
        write_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
