"""ImageNet decoded once into memory-mappable uint8 shards (``zfnet prepare``).

Paper §3's per-image steps (short side to 256, centre 256x256 crop) are fixed, so they are done
once, here, for every image: training then reads raw pixels and only takes the random 224 crop,
the flip and the mean subtraction per batch (:class:`zfnet_cli.data.transforms.BatchPreprocess`,
on the GPU when there is one). No JPEG is decoded while training.

A pack is one folder::

    OUT/manifest.json            format, version, image size, classes (wnids), and per split its
                                 shards (file, count, sha256), counts and failures
    OUT/train_00000.u8           raw uint8 (n, 3, S, S) RGB, C order, no header (np.memmap-able)
    OUT/train_00000.labels.npy   (n,) int16 class indices (int32 past 32767 classes)
    OUT/train_00000.json         the shard's record; written last, it marks the shard finished
    OUT/mean.npy                 float32 (3, S, S): the per-pixel mean over the packed train images
    OUT/val_00000.u8 ...

Any program reads a shard without this module: ``np.memmap(path, np.uint8, mode="r").reshape(-1,
3, S, S)`` and ``np.load(labels_path)``.

Shard k of a split holds that split's files ``k * shard_size .. (k + 1) * shard_size - 1`` in
:class:`~zfnet_cli.data.imagenet.ImageFolderData` order (sorted wnid, then file name), each decoded
by :func:`~zfnet_cli.data.images.load_image` (EXIF orientation applied, greyscale / CMYK / 16-bit
to RGB, transparency over mid-grey).

**Unreadable images** (truncated, corrupt, not an image, too large) are left out: no slot is
filled with something that looks like data. Each is listed (path relative to the source root,
wnid, one-line reason) in its shard's record and in the manifest, and counted in the summary; the
labels file lists only the images written, so images and labels stay aligned. A split's count is
therefore its number of files minus its failures, which verification checks. The one policy for
unreadable files (:class:`~zfnet_cli.data.images.UnreadableFiles`) bounds them: once more than
``max_broken`` of a split's files are unreadable, preparation stops with one line and writes no
manifest (finished shards are kept: the same command with a higher ``max_broken`` resumes), so a
pack never silently leaves out a large share; the manifest records the threshold it was made
under beside each split's failures.

**Writing** (:func:`prepare`) runs a process pool over all cores: small chunks of images are
decoded in parallel and written straight into their shard's temporary file (``.train_00000.u8.tmp``);
when a shard's chunks are done a worker closes its gaps (failures), hashes it, writes its labels,
renames it into place and writes its record. **Resuming** after an interruption: a shard whose
record exists and matches (same source files, labels, image size and class list) and whose files
have the recorded sizes is skipped; everything else is redone. **Verification** at the end re-reads
every shard, recomputes its sha256 and compares it with the record, and checks the counts; in the
same pass it sums the train images (exactly, in int64) into the mean image. A shard that fails
verification loses its record, so the next run redoes exactly that shard.

**Reading** (:class:`PackedData`) maps every shard copy-on-write and gathers a batch of global
indices across shards with one copy per image; a slice within one shard is a zero-copy view.
Nothing is read until touched: the operating system pages in only the images a process gathers.
On several machines, each process maps the pack and reads what its batches touch. ``zfnet
train``'s in-memory batching gathers the whole global batch on every rank (so N ranks see what one
process would), so every machine then touches every shard: keep the pack on a shared file system
or copy it whole to each machine. A job that gives each machine its own shards opens
``PackedData(root, split, shards=range(node, n_shards, nodes))`` there and copies only those files.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import mmap
import os
import re
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from zfnet_cli.data.imagenet import DataLayoutError, ImageFolderData
from zfnet_cli.data.images import ImageError, UnreadableFiles, load_image
from zfnet_cli.files import write_atomic

FORMAT = "zfnet-packed"
VERSION = 1
MANIFEST = "manifest.json"
MEAN = "mean.npy"
_BLOCK_BYTES = 8 << 20  # read size while hashing / summing a shard


class PackError(DataLayoutError):
    """A pack folder that is missing, incomplete, of another format, or fails verification;
    the message is one line."""


# ---------------------------------------------------------------- small helpers

def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _write_atomically(path: Path, data: bytes) -> None:
    """Write beside ``path`` under a temporary name, then rename: readers see all or nothing
    (:func:`zfnet_cli.files.write_atomic`)."""
    write_atomic(path, data)


def _write_json(path: Path, obj) -> None:
    _write_atomically(path, (json.dumps(obj, indent=1) + "\n").encode())


def _read_json(path: Path) -> Optional[dict]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or cut short by a crash: treat as absent
        return None
    return obj if isinstance(obj, dict) else None


def _one_line(err: BaseException, path: str) -> str:
    """An exception as a one-line reason, without the file name the caller already records."""
    if isinstance(err, ImageError):
        return err.reason
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    text = text[len(path) + 2:] if text.startswith(f"{path}: ") else text
    return text if isinstance(err, ImageError) else f"{type(err).__name__}: {text}"


def _label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max else np.dtype(np.int32)


# ---------------------------------------------------------------- worker side

def _init_worker() -> None:
    # Ctrl-C goes to the whole process group: the parent alone stops the pool, so the
    # workers do not each print a traceback. One torch thread: the pool already fills the cores.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _decode_chunk(tmp: str, first: int, paths: Sequence[str], size: int) -> list[tuple[int, str]]:
    """Decode ``paths`` into slots ``first, first + 1, ...`` of the shard file ``tmp``.
    Returns ``(slot, reason)`` for each image that could not be used; its slot stays empty."""
    item = 3 * size * size
    failed = []
    fd = os.open(tmp, os.O_WRONLY)
    try:
        for j, path in enumerate(paths):
            try:
                image = load_image(path, size).numpy()  # (3, S, S) uint8, C-contiguous
            except Exception as err:  # never fatal: recorded, counted, reported
                failed.append((first + j, _one_line(err, path)))
                continue
            os.pwrite(fd, image.data, (first + j) * item)
    finally:
        os.close(fd)
    return failed


def _finish_shard(tmp: str, out: str, name: str, size: int, slots: int, labels: Sequence[int],
                  label_dtype: str, failed: Sequence[int], record: dict) -> dict:
    """Close the gaps left by failed images, hash the shard, write its labels, rename it into
    place and write its record (last: the record marks the shard finished)."""
    item = 3 * size * size
    failed_set = set(failed)
    keep = [s for s in range(slots) if s not in failed_set]
    with open(tmp, "r+b") as f:
        for new, old in enumerate(keep):  # only moves anything after the first failure
            if new != old:
                os.pwrite(f.fileno(), os.pread(f.fileno(), item, old * item), new * item)
        f.truncate(len(keep) * item)
        f.flush()
        os.fsync(f.fileno())
    sha, _ = _scan(tmp, size, want_hash=True, want_sum=False)
    kept_labels = np.asarray([labels[s] for s in keep], dtype=label_dtype)
    folder = Path(out)
    buf = io.BytesIO()
    np.save(buf, kept_labels)
    _write_atomically(folder / f"{name}.labels.npy", buf.getvalue())
    os.replace(tmp, folder / f"{name}.u8")
    record = dict(record, count=len(keep), sha256=sha)
    _write_json(folder / f"{name}.json", record)
    return record


def _scan(path: str, size: int, *, want_hash: bool,
          want_sum: bool) -> tuple[Optional[str], Optional[np.ndarray]]:
    """One read of a shard file: its sha256 and / or the int64 (3, S, S) sum of its images."""
    item = 3 * size * size
    per_block = max(1, _BLOCK_BYTES // item)
    h = hashlib.sha256() if want_hash else None
    total = np.zeros((3, size, size), np.int64) if want_sum else None
    buf = bytearray(per_block * item)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            view = memoryview(buf)[:n]
            if h is not None:
                h.update(view)
            if total is not None:
                total += np.frombuffer(view, np.uint8).reshape(-1, 3, size, size).sum(0, dtype=np.int64)
    return (h.hexdigest() if h is not None else None), total


# ---------------------------------------------------------------- planning

def _fingerprint(samples: Sequence[tuple[str, int]], root: Path, size: int,
                 classes_sha1: str) -> str:
    """What a shard's content depends on: its source files (relative to the root), their
    labels, the image size and the class list."""
    h = hashlib.sha1(f"{FORMAT}/{VERSION}|{size}|{classes_sha1}\n".encode())
    for path, label in samples:
        h.update(f"{os.path.relpath(path, root)}\t{label}\n".encode())
    return h.hexdigest()


def _shard_is_done(out: Path, name: str, fingerprint: str, size: int) -> Optional[dict]:
    record = _read_json(out / f"{name}.json")
    if not record or record.get("source_sha1") != fingerprint:
        return None
    try:
        data_bytes = (out / f"{name}.u8").stat().st_size
        labels = np.load(out / f"{name}.labels.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if data_bytes != record.get("count", -1) * 3 * size * size or len(labels) != record["count"]:
        return None
    return record


_OUR_FILE = re.compile(r"^\.?(?P<split>[A-Za-z0-9-]+)_(?P<k>\d{5})\.(u8|labels\.npy|json)(\..*\.tmp|\.tmp)?$")
_OUR_TMP = re.compile(rf"^\.({re.escape(MANIFEST)}|{re.escape(MEAN)})\.\d+\.tmp$")


def _remove_stale(out: Path, split: str, n_shards: int) -> None:
    """Delete temporary files left by an interruption, and this split's shards past the current
    shard count (the source tree shrank); only names this module writes are touched."""
    for p in out.iterdir():
        m = _OUR_FILE.match(p.name)
        if (m and m["split"] == split and (p.name.endswith(".tmp") or int(m["k"]) >= n_shards)) \
                or _OUR_TMP.match(p.name):
            p.unlink()


# ---------------------------------------------------------------- writing

def prepare(
    root: Union[str, Path],
    out: Union[str, Path],
    *,
    image_size: int = 256,
    splits: Sequence[str] = ("train", "val"),
    shard_size: int = 2048,
    workers: int = 0,
    chunk_size: int = 16,
    verify: bool = True,
    progress: bool = True,
    max_broken: float = 0.01,
) -> dict:
    """Decode an ImageFolder tree once into a pack (see the module docstring), resuming any
    earlier, interrupted run into the same ``out``.

    Args:
        root: the ImageNet folder holding ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``.
        out: the pack folder (created if needed).
        image_size: S, the side of the stored images (paper §3: 256).
        splits: sub-folders of ``root`` to pack; all must have the same class folders.
        shard_size: source files per shard (the last shard of a split holds the rest). 2048
            images of 256 px are 403 MB.
        workers: decoding processes; 0 = every core this process may use.
        chunk_size: images per task handed to a worker.
        verify: re-read every shard at the end and compare its sha256 with the one recorded when
            it was written; check the counts.
        progress: tqdm bars.
        max_broken: the fraction of a split's files that may be unreadable (left out); one more
            stops the preparation. ``0``: strict. Default: 0.01, as ``data.max_broken``.

    Returns:
        A summary: per split the files listed, images packed, failures and shards (written now /
        skipped as already done), the failures themselves, whether it was verified, timings.

    Raises:
        DataLayoutError: ``root`` is not an ImageFolder tree (one line).
        PackError: ``out`` holds a pack of another image size or class list; verification
            failed (the shards concerned lose their records, so a second run redoes them).
        TooManyUnreadable: more unreadable files in a split than ``max_broken`` allows.

    >>> prepare("/data/imagenet", "outputs/packed/imagenet_256")   # doctest: +SKIP
    """
    root, out = Path(root), Path(out)
    size = int(image_size)
    if size < 1 or shard_size < 1 or chunk_size < 1:
        raise ValueError(f"image_size, shard_size and chunk_size must be >= 1, got {size}, "
                         f"{shard_size}, {chunk_size}")
    if not splits:
        raise ValueError("no splits to prepare (splits=[train,val])")
    sources = {split: ImageFolderData(root, split, resize=size) for split in splits}
    classes = sources[splits[0]].classes
    for split, ds in sources.items():
        if ds.classes != classes:
            raise DataLayoutError(f"class folders of {root / split} differ from {root / splits[0]}")
    classes_sha1 = hashlib.sha1("\n".join(classes).encode()).hexdigest()
    # human names where the source has them (torchvision's ImageNet root: meta.bin / devkit)
    class_names = getattr(sources[splits[0]], "class_names", None)

    out.mkdir(parents=True, exist_ok=True)
    old = _read_json(out / MANIFEST)
    if old is not None and (old.get("image_size") != size or old.get("classes") != classes):
        raise PackError(f"{out} already holds a pack of {old.get('image_size')} px images over "
                        f"{len(old.get('classes', []))} classes, not {size} px over {len(classes)}; "
                        "choose another out= or remove that folder")
    workers = workers or default_workers()
    label_dtype = _label_dtype(len(classes)).str

    # Plan: which shards are finished, which are (re)done.
    plan: dict[str, list[dict]] = {}
    for split, ds in sources.items():
        n_shards = math.ceil(len(ds.samples) / shard_size)
        _remove_stale(out, split, n_shards)
        plan[split] = []
        for k in range(n_shards):
            samples = ds.samples[k * shard_size:(k + 1) * shard_size]
            name = shard_name(split, k)
            fp = _fingerprint(samples, root, size, classes_sha1)
            done = _shard_is_done(out, name, fp, size)
            if done is None:
                (out / f"{name}.json").unlink(missing_ok=True)  # before its data is replaced
            plan[split].append({"name": name, "samples": samples, "record": done,
                                "base": {"format": FORMAT, "version": VERSION, "split": split,
                                         "shard": k, "image_size": size, "first": k * shard_size,
                                         "files": len(samples), "source_sha1": fp,
                                         "file": f"{name}.u8", "labels": f"{name}.labels.npy"}})

    summary: dict = {"out": str(out), "root": str(root), "image_size": size, "workers": workers,
                     "shard_size": shard_size, "splits": {}}
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(workers, initializer=_init_worker)
    try:
        written = 0
        for split in splits:
            unreadable = UnreadableFiles(len(sources[split].samples), max_broken, split,
                                         key="max_broken")
            written += _write_split(pool, out, root, classes, split, plan[split], size,
                                    chunk_size, workers, label_dtype, progress, unreadable)
        t_decode = time.perf_counter() - t0
        manifest = _finish(pool, out, root, plan, classes, class_names, size, shard_size, old,
                           verify, progress, max_broken)
    except KeyboardInterrupt:
        print(f"\nprepare: interrupted; the same command resumes it (finished shards in {out} are "
              "kept)", file=sys.stderr)
        raise
    except BrokenProcessPool:
        raise PackError("a decoding process died (out of memory, or a decoder crashed on a file); "
                        "run prepare again to resume: finished shards are kept") from None
    except OSError as err:  # disk full, permissions: one line; the work done so far is kept
        raise PackError(f"cannot write the pack in {out}: {err}; free the problem and run "
                        "prepare again to resume") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - t0

    for split in splits:
        info = manifest["splits"][split]
        summary["splits"][split] = {
            "files": info["files"], "images": info["count"], "failures": len(info["failures"]),
            "shards": len(info["shards"]), "shards_written": sum(s.get("written", False) for s in plan[split]),
            "shards_skipped": sum(not s.get("written", False) for s in plan[split])}
    summary["failures"] = [dict(f, split=s) for s in splits for f in manifest["splits"][s]["failures"]]
    summary["verified"] = bool(verify)
    summary["images_written"] = written
    summary["seconds"] = {"decode": t_decode, "total": seconds}
    summary["images_per_s"] = written / t_decode if t_decode > 0 else 0.0
    return summary


def _write_split(pool: ProcessPoolExecutor, out: Path, root: Path, classes: list[str], split: str,
                 shards: list[dict], size: int, chunk_size: int, workers: int, label_dtype: str,
                 progress: bool, unreadable: UnreadableFiles) -> int:
    """Decode and write the unfinished shards of one split; returns the number of files read.
    Each unreadable file goes to ``unreadable`` (those of shards finished earlier first), which
    raises past its threshold."""
    for shard in shards:
        for f in (shard["record"] or {}).get("failures", []):
            unreadable.add(str(root / f["path"]), f["reason"])
    todo = [s for s in shards if s["record"] is None]
    total = sum(len(s["samples"]) for s in shards)
    skipped = total - sum(len(s["samples"]) for s in todo)
    bar = tqdm(total=total, initial=skipped, desc=f"prepare {split}", unit="img",
               disable=not progress, dynamic_ncols=True)

    def chunks() -> Iterable[tuple[dict, int, list[str]]]:
        for shard in todo:
            shard["tmp"] = str(out / f".{shard['name']}.u8.tmp")
            with open(shard["tmp"], "wb") as f:  # sparse: one empty slot per listed file
                f.truncate(len(shard["samples"]) * 3 * size * size)
            shard["pending"], shard["failed"] = 0, []
            starts = range(0, len(shard["samples"]), chunk_size)
            shard["unsubmitted"] = len(starts)
            for a in starts:
                yield shard, a, [p for p, _ in shard["samples"][a:a + chunk_size]]

    tasks = iter(chunks())
    running: dict[Future, tuple[str, dict, int]] = {}
    limit = 4 * workers  # bounded: little memory, little work lost to an interruption
    exhausted = False
    try:
        while running or not exhausted:
            while not exhausted and len(running) < limit:
                item = next(tasks, None)
                if item is None:
                    exhausted = True
                    break
                shard, first, paths = item
                shard["unsubmitted"] -= 1
                shard["pending"] += 1
                running[pool.submit(_decode_chunk, shard["tmp"], first, paths, size)] = (
                    "chunk", shard, len(paths))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                kind, shard, n = running.pop(fut)
                result = fut.result()
                if kind == "shard":
                    shard["record"], shard["written"] = result, True
                    continue
                bar.update(n)
                shard["failed"] += result
                for slot, reason in result:
                    unreadable.add(shard["samples"][slot][0], reason)
                shard["pending"] -= 1
                if shard["pending"] == 0 and shard["unsubmitted"] == 0:
                    _submit_finish(pool, running, out, root, classes, shard, size, label_dtype)
    finally:
        bar.close()
    return total - skipped


def _submit_finish(pool: ProcessPoolExecutor, running: dict, out: Path, root: Path,
                   classes: list[str], shard: dict, size: int, label_dtype: str) -> None:
    failures = [{"path": os.path.relpath(shard["samples"][slot][0], root),
                 "label": classes[shard["samples"][slot][1]], "reason": reason}
                for slot, reason in sorted(shard["failed"])]
    record = dict(shard["base"], failures=failures)
    labels = [label for _, label in shard["samples"]]
    fut = pool.submit(_finish_shard, shard["tmp"], str(out), shard["name"], size,
                      len(shard["samples"]), labels, label_dtype,
                      [slot for slot, _ in shard["failed"]], record)
    running[fut] = ("shard", shard, 0)


def _finish(pool: ProcessPoolExecutor, out: Path, root: Path, plan: dict[str, list[dict]],
            classes: list[str], class_names: Optional[list[str]], size: int, shard_size: int,
            old: Optional[dict], verify: bool, progress: bool, max_broken: float) -> dict:
    """Verify the shards, compute the mean image, write the manifest (last)."""
    item = 3 * size * size
    splits: dict = dict(old.get("splits", {})) if old else {}
    for split, shards in plan.items():
        records = [s["record"] for s in shards]
        entries, failures, count = [], [], 0
        for r in records:
            entries.append({"file": r["file"], "labels": r["labels"], "count": r["count"],
                            "sha256": r["sha256"], "first": r["first"], "files": r["files"]})
            failures += r["failures"]
            count += r["count"]
            if r["count"] != r["files"] - len(r["failures"]):
                raise PackError(f"{out / r['file']}: {r['count']} images but {r['files']} files "
                                f"listed and {len(r['failures'])} failures")
        # failures: what was left out (path, label, reason), under the threshold max_broken
        splits[split] = {"files": sum(r["files"] for r in records), "count": count,
                         "shard_size": shard_size, "shards": entries,
                         "left_out": len(failures), "max_broken": max_broken,
                         "failures": failures}

    train = splits.get("train") if "train" in plan else None
    train_key = hashlib.sha256("".join(s["sha256"] for s in train["shards"]).encode()).hexdigest() \
        if train else None
    old_mean = (old or {}).get("mean") or {}
    need_mean = train is not None and not (old_mean.get("train_sha256") == train_key
                                           and (out / MEAN).is_file())
    # One read per shard: the hash (verify) and, for train, the sum (mean image).
    jobs = []
    for split in plan:
        for e in splits[split]["shards"]:
            want_sum = need_mean and split == "train"
            if verify or want_sum:
                jobs.append((split, e, pool.submit(_scan, str(out / e["file"]), size,
                                                   want_hash=verify, want_sum=want_sum)))
    total = np.zeros((3, size, size), np.int64) if need_mean else None
    bad = []
    for split, e, fut in tqdm(jobs, desc="verify" if verify else "mean image", unit="shard",
                              disable=not progress or not jobs, dynamic_ncols=True):
        sha, s = fut.result()
        if verify:
            labels = np.load(out / e["labels"], mmap_mode="r")
            size_ok = (out / e["file"]).stat().st_size == e["count"] * item
            if sha != e["sha256"] or not size_ok or len(labels) != e["count"]:
                bad.append(e["file"])
        if s is not None:
            total += s
    if bad:
        for f in bad:  # the next run redoes exactly these
            (out / f.replace(".u8", ".json")).unlink(missing_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)
        raise PackError(f"verification failed for {len(bad)} shard(s) of {out}: {', '.join(bad[:5])} "
                        "(sha256 or size differs from the record written with it); their records "
                        "were removed, so running prepare again redoes exactly those shards")

    mean = old_mean if old_mean and "train" not in plan else None
    if train is not None:
        if need_mean:
            if train["count"] == 0:
                raise PackError(f"no readable train image in {root / 'train'}: no mean image")
            buf = io.BytesIO()
            np.save(buf, (total / train["count"]).astype(np.float32))
            _write_atomically(out / MEAN, buf.getvalue())
        mean = {"file": MEAN, "images": train["count"], "train_sha256": train_key}
    manifest = {"format": FORMAT, "version": VERSION, "image_size": size,
                "layout": "uint8 (n, 3, S, S) RGB, C order, no header",
                "classes": classes, "class_names": list(class_names) if class_names else None,
                "source": str(root.resolve()), "mean": mean, "splits": splits,
                "verified": bool(verify),
                "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _write_json(out / MANIFEST, manifest)
    return manifest


def verify_pack(root: Union[str, Path], *, shards: Optional[Iterable[str]] = None,
                progress: bool = True) -> int:
    """Recompute every shard's sha256 (or only the files named in ``shards``, e.g. the part
    copied to this machine) and compare with the manifest; returns the number checked.

    Raises:
        PackError: a shard is missing, has the wrong size or a different sha256 (one line).
    """
    root = Path(root)
    manifest = read_manifest(root)
    size = manifest["image_size"]
    wanted = set(shards) if shards is not None else None
    entries = [e for s in manifest["splits"].values() for e in s["shards"]
               if wanted is None or e["file"] in wanted]
    bad = []
    for e in tqdm(entries, desc="verify", unit="shard", disable=not progress):
        path = root / e["file"]
        if not path.is_file() or path.stat().st_size != e["count"] * 3 * size * size:
            bad.append(f"{e['file']} (missing or wrong size)")
            continue
        sha, _ = _scan(str(path), size, want_hash=True, want_sum=False)
        if sha != e["sha256"]:
            bad.append(f"{e['file']} (sha256 differs)")
    if bad:
        raise PackError(f"{root}: {len(bad)} shard(s) fail verification: {', '.join(bad[:5])}")
    return len(entries)


# ---------------------------------------------------------------- reading

def read_manifest(root: Union[str, Path]) -> dict:
    """The manifest of the pack in ``root``; :class:`PackError` when there is none (not a pack,
    or one whose preparation has not finished) or it is of another format."""
    root = Path(root)
    if not root.is_dir():
        raise PackError(f"no pack folder {root} (write one with `zfnet prepare imagenet ROOT`)")
    manifest = _read_json(root / MANIFEST)
    if manifest is None:
        raise PackError(f"{root} has no {MANIFEST}: not a pack, or `zfnet prepare` has not finished "
                        "(run it again to resume)")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise PackError(f"{root / MANIFEST}: format {manifest.get('format')} v{manifest.get('version')}, "
                        f"expected {FORMAT} v{VERSION}")
    return manifest


def _map(path: Path, count: int, size: int) -> np.ndarray:
    """A shard file as a writable (n, 3, S, S) uint8 array backed by a copy-on-write mapping:
    torch tensors can view it without a copy, and nothing a caller writes reaches the file."""
    if count == 0:
        return np.empty((0, 3, size, size), np.uint8)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), count * 3 * size * size, access=mmap.ACCESS_COPY)
    return np.frombuffer(mm, np.uint8).reshape(count, 3, size, size)


class PackedImages:
    """The images of a split across its shards, indexed like a (N, 3, S, S) uint8 tensor.

    ``images[i]`` (3, S, S); ``images[a:b]`` (zero-copy within one shard); ``images[idx]`` with a
    LongTensor / list / array of global indices: (B, 3, S, S), gathered with one copy per image
    from the mapped shards (into pinned memory when ``pin_memory``, so ``.to('cuda',
    non_blocking=True)`` overlaps; torch's pinned-memory cache makes this cheap after the first
    batches).
    """

    def __init__(self, arrays: Sequence[np.ndarray], size: int, pin_memory: bool = False):
        self._arrays = list(arrays)
        counts = [len(a) for a in self._arrays]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.size = int(size)
        self.pin_memory = bool(pin_memory)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), 3, self.size, self.size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def _locate(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {n} packed images "
                             f"(min {idx.min()}, max {idx.max()})")
        idx = np.where(idx < 0, idx + n, idx)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        return shard, idx - self._starts[shard]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.dim() == 0):
            (s,), (i,) = self._locate(np.asarray([int(index)], np.int64))
            return torch.from_numpy(self._arrays[s][i])
        if isinstance(index, slice):
            rng = range(*index.indices(len(self)))
            if rng.step == 1 and len(rng):
                (s0, s1), (i0, _) = self._locate(np.asarray([rng.start, rng.stop - 1], np.int64))
                if s0 == s1:  # one shard: a view, no copy
                    return torch.from_numpy(self._arrays[s0][i0:i0 + len(rng)])
            index = np.arange(rng.start, rng.stop, rng.step, dtype=np.int64)
        if torch.is_tensor(index):
            assert index.dtype not in (torch.bool, torch.uint8), "boolean masks are not supported"
            index = index.cpu().numpy()
        idx = np.asarray(index, dtype=np.int64)
        assert idx.ndim == 1, f"expected a 1-D index, got shape {idx.shape}"
        shard, local = self._locate(idx)
        out = torch.empty((len(idx), 3, self.size, self.size), dtype=torch.uint8,
                          pin_memory=self.pin_memory)
        dst = out.numpy()
        arrays = self._arrays
        for j, (s, i) in enumerate(zip(shard.tolist(), local.tolist())):
            dst[j] = arrays[s][i]  # one copy, straight from the mapped file
        return out

    def __repr__(self) -> str:
        return f"PackedImages({len(self)} x 3 x {self.size} x {self.size}, {len(self._arrays)} shards)"


class PackedData:
    """One split of a pack written by :func:`prepare`, as a data set of ``(uint8 (3, S, S), label)``.

    Args:
        root: the pack folder (holding ``manifest.json``).
        split: ``"train"`` or ``"val"`` (any split the pack holds).
        shards: indices of the split's shards to open (default: all); global indices then run
            over those shards only, in the order given.
        pin_memory: gather batches into pinned memory; ``None``: when CUDA is available.

    Attributes:
        images: :class:`PackedImages`, indexable by a LongTensor of indices -> (B, 3, S, S) uint8.
        labels: int64 (N,) tensor.
        classes: the wnids, in label order.
        class_names: their human names where the source tree had them (torchvision's ImageNet
            root), else the wnids, as :class:`ImageFolderData` gives them.
        image_size: S. ``resize`` is the same (as :class:`ImageFolderData` names it).
        failures: the split's unreadable source images (path, label, reason).
        mean_image: float32 (3, S, S), the per-pixel mean over the packed train images (paper
            §3), read from ``mean.npy`` on first use: no pass over the data.

    Raises:
        PackError: not a finished pack, no such split or shard, a shard file missing or of the
            wrong size (one line).

    >>> val = PackedData("outputs/packed/imagenet_256", "val")     # doctest: +SKIP
    >>> val.images[torch.tensor([0, 5000])].shape                 # doctest: +SKIP
    torch.Size([2, 3, 256, 256])
    """

    def __init__(self, root: Union[str, Path], split: str, *, shards: Optional[Iterable[int]] = None,
                 pin_memory: Optional[bool] = None) -> None:
        self.root = Path(root)
        self.split = split
        manifest = read_manifest(self.root)
        if split not in manifest["splits"]:
            raise PackError(f"the pack {self.root} has no '{split}' split "
                            f"(it has {', '.join(manifest['splits']) or 'none'})")
        info = manifest["splits"][split]
        entries = info["shards"]
        chosen = list(range(len(entries))) if shards is None else [int(k) for k in shards]
        wrong = [k for k in chosen if not 0 <= k < len(entries)]
        if wrong:
            raise PackError(f"the '{split}' split of {self.root} has shards 0..{len(entries) - 1}, "
                            f"not {wrong[:5]}")
        self.image_size = self.resize = int(manifest["image_size"])
        self.classes: list[str] = list(manifest["classes"])
        self.class_names: list[str] = list(manifest.get("class_names") or self.classes)
        self.failures: list[dict] = list(info["failures"])
        self.shards = chosen
        self._mean_entry = manifest.get("mean")
        self._mean: Optional[torch.Tensor] = None

        item = 3 * self.image_size * self.image_size
        arrays, labels = [], []
        for k in chosen:
            e = entries[k]
            path = self.root / e["file"]
            if not path.is_file() or path.stat().st_size != e["count"] * item:
                raise PackError(f"{path}: missing or not {e['count']} images of "
                                f"{self.image_size} px (copy it again or rerun zfnet prepare)")
            lab = np.load(self.root / e["labels"])
            if len(lab) != e["count"]:
                raise PackError(f"{self.root / e['labels']}: {len(lab)} labels for {e['count']} images")
            arrays.append(_map(path, e["count"], self.image_size))
            labels.append(lab)
        if pin_memory is None:
            pin_memory = torch.cuda.is_available()
        self.images = PackedImages(arrays, self.image_size, pin_memory)
        self.labels = torch.from_numpy(np.concatenate(labels).astype(np.int64)) if labels \
            else torch.zeros(0, dtype=torch.int64)

    @property
    def mean_image(self) -> torch.Tensor:
        if self._mean is None:
            if not self._mean_entry:
                raise PackError(f"the pack {self.root} has no mean image (it holds no train split)")
            self._mean = torch.from_numpy(np.load(self.root / self._mean_entry["file"]))
        return self._mean

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """``(image, label)``: uint8 (3, S, S) RGB (a view of the mapped shard) and the class."""
        return self.images[int(i)], int(self.labels[i])

    def __reduce__(self):
        # pickled (a DataLoader worker under spawn) as what to open, never as the mapped pixels
        return (_reopen, (self.root, self.split, self.shards, self.images.pin_memory))

    def __repr__(self) -> str:
        return (f"PackedData(root={str(self.root)!r}, split={self.split!r}, "
                f"image_size={self.image_size}, classes={len(self.classes)}, samples={len(self)}, "
                f"shards={len(self.shards)})")


def _reopen(root: Path, split: str, shards: list[int], pin_memory: bool) -> PackedData:
    return PackedData(root, split, shards=shards, pin_memory=pin_memory)
