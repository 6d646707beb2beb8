"""``zfnet prepare``: decode ImageNet once into a pack of memory-mappable uint8 shards.

Paper §3's fixed preprocessing (short side to 256, centre 256x256 crop) is applied to every image
once, in parallel on all cores; ``zfnet train data=packed data.root=OUT`` then only crops, flips
and subtracts the mean per batch (see :mod:`zfnet_cli.data.packed` for the format, resuming,
failures and verification). Running the same command again resumes an interrupted preparation;
on a finished pack it only verifies it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from zfnet_cli.schemas import PrepareConfig
from zfnet_cli.data.images import UnreadableFiles
from zfnet_cli.data.imagenet import DataLayoutError
from zfnet_cli.data.packed import prepare
from zfnet_cli.engine import Dist
from zfnet_cli.files import write_atomic

SHOWN_FAILURES = 20  # failures printed; all of them are in metrics.json and the manifest


def pack_folder(cfg: PrepareConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.output_root) / "packed" / f"{cfg.dataset}_{cfg.image_size}"


def run(cfg: PrepareConfig, run_dir: str | Path, *, dist_info: Dist | None = None,
        overrides: Sequence[str] = ()) -> dict:
    """Prepare (or resume, or re-verify) the pack ``cfg`` describes; the summary goes to
    ``run_dir/metrics.json`` and is returned: per split files / images / failures / shards
    written and skipped, every failure (path, wnid, reason), seconds and images/s."""
    if cfg.dataset != "imagenet":
        raise ValueError(f"unknown dataset '{cfg.dataset}'; zfnet prepare knows 'imagenet' "
                         "(the ImageFolder layout ROOT/{train,val}/<wnid>/*.JPEG)")
    if not cfg.root:
        raise DataLayoutError("zfnet prepare needs the ImageNet folder: zfnet prepare imagenet ROOT "
                              "(ROOT/train/<wnid>/*.JPEG, ROOT/val/<wnid>/*.JPEG)")
    if dist_info is not None and dist_info.enabled:
        raise ValueError("run zfnet prepare as one process, not under torchrun: it uses every "
                         "core itself (workers=N)")
    out = pack_folder(cfg)
    summary = prepare(cfg.root, out, image_size=cfg.image_size, splits=cfg.splits,
                      shard_size=cfg.shard_size, workers=cfg.workers, chunk_size=cfg.chunk_size,
                      verify=cfg.verify, progress=cfg.progress, max_broken=cfg.max_broken)
    run_dir = Path(run_dir)
    write_atomic(run_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")

    # The one policy for unreadable files (zfnet_cli.data.images.UnreadableFiles): skipped,
    # counted and named here as in training; past max_broken prepare() has already stopped.
    unreadable = UnreadableFiles(0, max_broken=1.0)
    unreadable.merge({f["path"]: f["reason"] for f in summary["failures"]})
    for line in unreadable.lines("zfnet prepare: ", SHOWN_FAILURES, str(run_dir / "metrics.json")):
        print(line)
    counts = "; ".join(f"{s}: {v['images']} of {v['files']} images in {v['shards']} shards "
                       f"({v['shards_written']} written, {v['shards_skipped']} already done), "
                       f"{v['failures']} unreadable" for s, v in summary["splits"].items())
    print(f"zfnet prepare: {counts}; {summary['images_written']} images decoded in "
          f"{summary['seconds']['decode']:.1f} s ({summary['images_per_s']:.0f} images/s, "
          f"{summary['workers']} workers){', verified' if summary['verified'] else ''}; pack in {out}")
    return summary
