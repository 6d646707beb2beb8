"""Fuzzing: hostile input through every place zfnet reads it, counted, with each escape saved.

Targets (``--images N`` etc. say how many cases of each):

* ``images``: small valid files of every format PIL reads here (JPEG baseline / progressive /
  EXIF / CMYK, PNG RGB / RGBA / palette / 16-bit / interlaced, animated GIF, BMP, TIFF raw /
  LZW / deflate / packbits / 16-bit / with tags, WebP lossy / lossless, PPM / PGM / PBM, ICO,
  TGA, PCX, JPEG 2000), each case one to four mutations (byte and bit flips, boundary values,
  insertions, deletions, duplicated runs, truncation, the tail of another file) read by
  ``zfnet_cli.load_image``. Allowed: a uint8 (3, S, S) image, or one ``ImageError`` line naming
  the file; at most one ``DamagedImageWarning`` and no other warning.
* ``overrides``: random override sets (known keys with values of the wrong type, lists, dicts,
  nulls, huge and non-finite numbers, unicode, interpolations, sweep syntax; unknown keys; odd
  group choices; ``+`` / ``~`` / ``@`` forms) through ``zfnet_cli.config.compose`` of every
  command (Hydra composition, the typed schema and the bounds). Allowed: a config, or one
  ``ConfigError`` line.
* ``checkpoints``: mutated checkpoints of ours, torchvision state dicts, a state dict of no known
  architecture, and TorchScript files through ``zfnet_cli.load_model``. Allowed: a model, or one
  ``CheckpointError`` line.
* ``prepare`` and ``train`` (command level, slow: a few cases): a small ImageNet-style tree whose
  files are partly mutated through ``zfnet prepare`` and ``zfnet train data=imagenet`` with
  DataLoader workers, as subprocesses. Allowed: exit 0, or exit 1 with one ``error:`` line; no
  traceback, no stray warning; the pack / run of an earlier good run is left as it was.

Each case runs in a worker process under a time limit (``--limit`` seconds; a hang is an escape)
and an address-space limit (``--memory-mb``; a file that makes a decoder allocate past it must
still be a one-line error). Cases are numbered and each draws from its own generator seeded by
``(seed, target, number)``, so any case is reproduced alone (``--only TARGET:N``). An escape's
input is saved under ``--out``/escapes (the file, or the override list as JSON) and listed in the
report, ``--out``/report.json: counts per target (cases, refused, accepted, escapes), seconds,
cases per second, seed, commit, machine.

    python scripts/fuzz.py --images 2000 --overrides 300 --checkpoints 40 --out /tmp/fuzz
    python scripts/fuzz.py --only images:1234 --seed 0 --out /tmp/one     # one case again
    make fuzz                                  # the long run (see the Makefile for its counts)

Exit status: 0 with no escape, 1 otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 2000  # cases per worker process before it is replaced (bounds what a process accumulates)
# what a worker of each target imports, loaded once in the parent so that each fork has it
PRELOAD = {"images": ["zfnet_cli.data.images"], "overrides": ["zfnet_cli.config"],
           "checkpoints": ["zfnet_cli.loading", "zfnet_cli.config", "torchvision"]}

# ---------------------------------------------------------------- seeds: small valid files


def image_seeds() -> list[tuple[str, bytes]]:
    """``(suffix, bytes)`` of small valid files, one per format and variant worth reaching."""
    import numpy as np
    from PIL import Image, features

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (12, 16, 3), np.uint8))
    grey = rgb.convert("L")
    rgba = Image.fromarray(rng.integers(0, 255, (12, 16, 4), np.uint8), "RGBA")
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=8)
    deep = Image.fromarray(rng.integers(0, 65535, (12, 16), np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    exif[0x010F] = "fuzz"  # make

    def save(im, fmt, **kw) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        return buf.getvalue()

    def gif_animation() -> bytes:
        buf = io.BytesIO()
        pal.save(buf, "GIF", save_all=True, append_images=[pal.rotate(90)], duration=50, loop=0)
        return buf.getvalue()

    pal_t = pal.copy()
    pal_t.info["transparency"] = 0
    seeds = [(".jpg", save(rgb, "JPEG", quality=80)),
             (".jpg", save(rgb, "JPEG", progressive=True, exif=exif)),
             (".jpg", save(grey, "JPEG")),
             (".jpg", save(rgb.convert("CMYK"), "JPEG")),
             (".png", save(rgb, "PNG")),
             (".png", save(rgba, "PNG")),
             (".png", save(pal_t, "PNG")),
             (".png", save(deep, "PNG")),
             (".png", save(rgb, "PNG", interlace=1)),  # Adam7
             (".gif", gif_animation()),
             (".bmp", save(rgb, "BMP")),
             (".bmp", save(pal, "BMP")),
             (".tif", save(rgb, "TIFF")),
             (".tif", save(rgb, "TIFF", compression="tiff_lzw", dpi=(72, 72))),
             (".tif", save(rgba, "TIFF", compression="tiff_adobe_deflate")),
             (".tif", save(grey, "TIFF", compression="packbits", exif=exif)),
             (".tif", save(deep, "TIFF")),
             (".ppm", save(rgb, "PPM")),
             (".pgm", save(grey, "PPM")),
             (".pbm", save(grey.convert("1"), "PPM")),
             (".ico", save(rgb, "ICO")),
             (".tga", save(rgb, "TGA")),
             (".pcx", save(rgb, "PCX"))]
    if features.check("webp"):
        seeds += [(".webp", save(rgb, "WEBP", quality=70)),
                  (".webp", save(rgba, "WEBP", lossless=True))]
    if features.check("jpg_2000"):
        seeds.append((".jp2", save(rgb, "JPEG2000")))
    return seeds


_BOUNDARY = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x7f\xff",
             b"\x80\x00", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
             b"\x00\x00\x00\x80", b"\x01\x00", b"\x00\x01", b"\x05\x00", b"\x00\x05"]


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """One to four mutations of ``data``; headers (the first 256 bytes) take half the hits."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        if not b:
            b = bytearray(rng.choice(others))
        n = len(b)
        pos = rng.randrange(min(n, 256)) if rng.random() < 0.5 else rng.randrange(n)
        op = rng.randrange(8)
        if op == 0:  # random bytes
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(n)] = rng.randrange(256)
        elif op == 1:  # one bit
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 2:  # a boundary value
            v = rng.choice(_BOUNDARY)
            b[pos:pos + len(v)] = v
        elif op == 3:  # insertion
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == 4:  # deletion
            del b[pos:pos + rng.randint(1, 64)]
        elif op == 5:  # truncation
            del b[rng.randrange(n):]
        elif op == 6:  # a run repeated
            run = b[pos:pos + rng.randint(1, 32)]
            b[pos:pos] = run * rng.randint(1, 16)
        else:  # the tail of another file spliced in
            other = rng.choice(others)
            b[pos:] = other[rng.randrange(len(other)):]
    return bytes(b)


# ---------------------------------------------------------------- targets


def _one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "Traceback" not in text


def images_setup(work: Path) -> dict:
    return {"seeds": image_seeds()}


def images_make(ctx: dict, rng: random.Random) -> dict:
    suffix, data = rng.choice(ctx["seeds"])
    return {"suffix": suffix, "bytes": mutate(data, rng, [d for _, d in ctx["seeds"]])}


def images_check(ctx: dict, saved: dict, number: int, work: Path):
    from zfnet_cli.data.images import DamagedImageWarning, ImageError, load_image

    data = saved["bytes"]
    path = work / f"case{number}{saved['suffix']}"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings(record=True) as heard:
            warnings.simplefilter("always")
            try:
                x = load_image(path, 24)
            except ImageError as err:
                msg = str(err)
                if not (_one_line(msg) and msg.startswith(f"{path}: ")):
                    return "escape", f"ImageError not one line naming the file: {msg!r}"
                outcome, detail = "refused", ""
            else:
                if tuple(x.shape) != (3, 24, 24) or str(x.dtype) != "torch.uint8":
                    return "escape", f"decoded to {tuple(x.shape)} {x.dtype}"
                outcome, detail = "accepted", ""
        other = [w for w in heard if not issubclass(w.category, DamagedImageWarning)]
        damaged = [w for w in heard if issubclass(w.category, DamagedImageWarning)]
        if other:
            w = other[0]
            return "escape", f"warning {w.category.__name__}: {str(w.message)[:300]}"
        if len(damaged) > 1 or (damaged and not _one_line(str(damaged[0].message))):
            return "escape", f"{len(damaged)} DamagedImageWarnings for one file"
        if path.read_bytes() != data:
            return "escape", "the file was changed by reading it"
        return outcome, detail
    finally:
        path.unlink(missing_ok=True)


def _schema_keys(schema, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, default)`` of every leaf of a config dataclass."""
    keys = []
    for f in dataclasses.fields(schema):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        t = f.type if isinstance(f.type, type) else None
        if dataclasses.is_dataclass(default):
            keys += _schema_keys(type(default), prefix + f.name + ".")
        elif t is not None and dataclasses.is_dataclass(t):
            keys += _schema_keys(t, prefix + f.name + ".")
        else:
            keys.append((prefix + f.name, default))
    return keys


def overrides_setup(work: Path) -> dict:
    from zfnet_cli.config import COMMANDS, CONFIG_DIR, schema

    groups = {p.name: sorted(q.stem for q in p.glob("*.yaml"))
              for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name != "experiment"}
    experiments = {c: sorted(q.stem for q in (CONFIG_DIR / "experiment" / c).glob("*.yaml"))
                   for c in COMMANDS if (CONFIG_DIR / "experiment" / c).is_dir()}
    return {"commands": sorted(COMMANDS), "keys": {c: _schema_keys(schema(c)) for c in COMMANDS},
            "groups": groups, "experiments": experiments}


_VALUES = ["0", "-1", "1", "2", "-0", "007", "2147483648", "9223372036854775808",
           "-9223372036854775809", "1" + "0" * 40, "1e308", "-1e308", "1e309", "1e-320", "nan",
           "inf", "-inf", ".inf", "-.inf", "0.5", "-0.5", "1_000", "0x10", "true", "false", "True",
           "yes", "null", "Null", "~", "''", '""', "'null'", "abc", "ünïcødé", "日本語",
           "\u202eevil", "😀", "a b", "' a '", "\\", "\\'", "%s", "{}", "[]", "[1,2]", "[a,b]",
           "[[1]]", "[null]", "[1,[2,[3]]]", "{a:1}", "{a:{b:[1]}}", "${oc.env:HOME}",
           "${oc.env:ZFNET_FUZZ_UNSET}", "${missing}", "${now:%Y}", "${oc.decode:'[1]'}", "???",
           "1,2", "range(1,3)", "choice(a,b)", "glob(*)", "interval(0,1)", "shuffle(1,2)",
           "str(1)", "int(2.5)", "float(nan)", "/nonexistent", "/etc/passwd", "../../..", "/",
           ".", "x" * 300, "a=b", "a:b", "$(echo hi)", "`id`", "-1.5e3", "+5", "1.", ".5", "1e3"]
_KEYS = ["nosuchkey", "model.nosuch", "data..root", ".epochs", "epochs.", "a.b.c.d.e",
         "ünï", "0", "model.0", "optim.lr.x", "hydra.run.dir", "hydra", "defaults", "_target_",
         "data.root.x", "__class__", "self"]


def _value(rng: random.Random, default) -> str:
    r = rng.random()
    if r < 0.15 and isinstance(default, (int, float)) and not isinstance(default, bool):
        return repr(type(default)(default) * rng.choice([-1, 0, 10 ** rng.randint(1, 30)]))
    if r < 0.25:
        return repr(rng.uniform(-1e6, 1e6)) if rng.random() < 0.5 else str(rng.randint(-10 ** 9, 10 ** 9))
    if r < 0.35:  # a list of values
        return "[" + ",".join(rng.choice(_VALUES) for _ in range(rng.randint(0, 4))) + "]"
    if r < 0.4:
        return "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 12)))
    return rng.choice(_VALUES)


def overrides_make(ctx: dict, rng: random.Random) -> dict:
    command = rng.choice(ctx["commands"])
    keys = ctx["keys"][command]
    ovr = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.55:
            key, default = rng.choice(keys)
            ovr.append(f"{key}={_value(rng, default)}")
        elif r < 0.7:  # a group choice: real, odd, or null
            group = rng.choice(sorted(ctx["groups"]) + ["experiment"])
            choices = ctx["experiments"].get(command, []) if group == "experiment" \
                else ctx["groups"][group]
            pick = rng.choice(choices + ["null", "nosuch", "", "../train", "model/zfnet", "[a,b]",
                                         _value(rng, None)]) if choices else rng.choice(
                ["null", "nosuch", _value(rng, None)])
            ovr.append(f"{group}={pick}")
        elif r < 0.8:  # unknown keys
            ovr.append(f"{rng.choice(_KEYS)}={_value(rng, None)}")
        else:  # the other override forms
            key, default = rng.choice(keys)
            form = rng.choice(["+{k}={v}", "++{k}={v}", "~{k}", "~{k}={v}", "{k}@pkg={v}", "{k}=",
                               "{k}", "={v}", "{k}=={v}", " {k} = {v} ", "{k}={v}={v}", ""])
            ovr.append(form.format(k=key, v=_value(rng, default)))
    return {"command": command, "overrides": ovr}


def overrides_check(ctx: dict, saved: dict, number: int, work: Path):
    from zfnet_cli.config import ConfigError, compose

    try:
        compose(saved["command"], saved["overrides"])
    except ConfigError as err:
        if not _one_line(str(err)):
            return "escape", f"ConfigError not one line: {str(err)!r}"
        return "refused", ""
    return "accepted", ""


def checkpoints_setup(work: Path) -> dict:
    """Seed files: a checkpoint of ours (the smoke model, untrained), torchvision state dicts,
    a state dict of no known architecture, a TorchScript file."""
    import torch
    import torchvision
    from dataclasses import asdict

    from zfnet_cli.config import compose
    from zfnet_cli.model import ZFNet

    warnings.simplefilter("ignore")  # torch's deprecation notes while making the seeds
    torch.manual_seed(0)
    cfg = compose("train", ["experiment=smoke"])
    model = ZFNet(cfg.model, num_classes=10)
    classes = [f"c{i}" for i in range(10)]
    ours = {"model": model.state_dict(), "model_cfg": asdict(cfg.model), "num_classes": 10,
            "classes": classes, "class_names": classes, "epoch": 1, "overrides": [],
            "mean": torch.zeros(3, cfg.data.image_size, cfg.data.image_size),
            "config": asdict(cfg)}
    seeds = []

    def add(name: str, obj, save=torch.save) -> None:
        path = work / name
        save(obj, path)
        seeds.append((path.suffix, path.read_bytes()))

    add("ours.pt", ours)
    add("squeezenet.pth", torchvision.models.squeezenet1_1(num_classes=10).state_dict())
    add("wrapped.pth", {"state_dict": {f"module.{k}": v for k, v in
                                       torchvision.models.squeezenet1_1(num_classes=10)
                                       .state_dict().items()}})
    add("unknown.pth", {"w": torch.zeros(3, 3), "b": torch.ones(3)})
    add("script.pt", torch.jit.script(torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1), torch.nn.Linear(3, 5))),
        save=lambda m, p: torch.jit.save(m, str(p)))
    for p in work.iterdir():
        p.unlink()
    return {"seeds": seeds}


def checkpoints_make(ctx: dict, rng: random.Random) -> dict:
    suffix, data = rng.choice(ctx["seeds"])
    # a zip archive's structure sits at its two ends; the middle is tensor bytes
    n = len(data)
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        pos = rng.randrange(min(n, 4096)) if rng.random() < 0.4 else (
            n - 1 - rng.randrange(min(n, 4096)) if rng.random() < 0.6 else rng.randrange(n))
        cut = bytes(mutate(bytes(b[pos:pos + 64]), rng, [bytes(b[:64])]))
        b[pos:pos + 64] = cut
        if rng.random() < 0.1:
            del b[rng.randrange(len(b)):]
    return {"suffix": suffix, "bytes": bytes(b)}


def checkpoints_check(ctx: dict, saved: dict, number: int, work: Path):
    from zfnet_cli.checkpoint import CheckpointError
    from zfnet_cli.loading import load_model

    path = work / f"case{number}{saved['suffix']}"
    path.write_bytes(saved["bytes"])
    try:
        try:
            load_model(str(path))
        except CheckpointError as err:
            if not _one_line(str(err)):
                return "escape", f"CheckpointError not one line: {str(err)!r}"
            return "refused", ""
        return "accepted", ""
    finally:
        path.unlink(missing_ok=True)


# command level: a tree of files, some mutated, through `zfnet prepare` / `zfnet train`

def _tree(work: Path, rng: random.Random, seeds: list, classes: int = 2, per_class: int = 6,
          broken: int = 2) -> tuple[Path, list[Path]]:
    import numpy as np
    from PIL import Image

    root = work / "tree"
    mutated = []
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                a = np.random.default_rng(rng.randrange(2 ** 32)).integers(0, 255, (40, 48, 3), np.uint8)
                Image.fromarray(a).save(folder / f"img{k}.jpg")
    files = sorted(root.rglob("*.jpg"))
    for f in rng.sample(files, broken):
        suffix, data = rng.choice(seeds)
        f.write_bytes(mutate(data, rng, [d for _, d in seeds]))
        mutated.append(f)
    return root, mutated


def _run(args: list[str], limit: float, cwd: Path) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("ZFNET_DEBUG", None)
    res = subprocess.run([sys.executable, "-m", "zfnet_cli", *args], capture_output=True, text=True,
                         timeout=limit, env=env, cwd=cwd)
    return res.returncode, res.stdout + res.stderr


def _command_output_ok(code: int, out: str) -> str:
    """'' when ``out`` is what a command may print, else what is wrong."""
    if "Traceback" in out:
        return "a traceback"
    if code not in (0, 1):
        return f"exit status {code}"
    errors = [line for line in out.splitlines() if "error:" in line]
    if code == 1 and len(errors) != 1:
        return f"{len(errors)} error lines"
    if code == 0 and errors:
        return "error lines with exit 0"
    stray = [line for line in out.splitlines() if "Warning" in line and "zfnet: warning:" not in line]
    if stray:
        return f"a stray warning: {stray[0][:200]}"
    return ""


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def prepare_setup(work: Path) -> dict:
    return {"seeds": image_seeds()}


def _tree_make(ctx: dict, rng: random.Random, per_class: int, max_broken: list[str]) -> dict:
    """A tree's recipe: its seed, its mutated files (path -> bytes) and data.max_broken."""
    work = Path(tempfile.mkdtemp(prefix="fuzz-tree-"))
    try:
        tree_seed = rng.randrange(2 ** 32)
        root, mutated = _tree(work, random.Random(tree_seed), ctx["seeds"], per_class=per_class,
                              broken=rng.randint(1, 3))
        return {"tree_seed": tree_seed, "per_class": per_class, "max_broken": rng.choice(max_broken),
                "files": {str(p.relative_to(root)): p.read_bytes() for p in mutated}}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tree_build(ctx: dict, saved: dict, case: Path) -> Path:
    root, _ = _tree(case, random.Random(saved["tree_seed"]), ctx["seeds"],
                    per_class=saved["per_class"], broken=0)
    for name, data in saved["files"].items():
        (root / name).write_bytes(data)
    return root


def prepare_make(ctx: dict, rng: random.Random) -> dict:
    return _tree_make(ctx, rng, 6, ["0", "0.1", "0.5"])


def prepare_check(ctx: dict, saved: dict, number: int, work: Path):
    case = work / f"prepare{number}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    try:
        root = _tree_build(ctx, saved, case)
        # an earlier good pack in the same output root must be left as it was
        good = _tree(case / "good", random.Random(0), ctx["seeds"], broken=0)[0]
        code, out = _run(["prepare", "imagenet", str(good), f"output_root={case / 'out'}",
                          f"out={case / 'out' / 'good'}", "workers=1", "progress=false"], 120, case)
        if code != 0:
            return "escape", f"the good tree failed: {out[-300:]}"
        before = _snapshot(case / "out" / "good")
        code, out = _run(["prepare", "imagenet", str(root), f"output_root={case / 'out'}",
                          f"out={case / 'out' / 'fuzzed'}", "workers=2", "chunk_size=2",
                          f"max_broken={saved['max_broken']}", "progress=false"], 120, case)
        wrong = _command_output_ok(code, out)
        if wrong:
            return "escape", f"zfnet prepare: {wrong}: {out[-400:]}"
        if _snapshot(case / "out" / "good") != before:
            return "escape", "the earlier pack changed"
        return ("accepted" if code == 0 else "refused"), ""
    finally:
        shutil.rmtree(case, ignore_errors=True)


def train_setup(work: Path) -> dict:
    return {"seeds": image_seeds()}


def train_make(ctx: dict, rng: random.Random) -> dict:
    return _tree_make(ctx, rng, 8, ["0", "0.2", "0.5"])


def train_check(ctx: dict, saved: dict, number: int, work: Path):
    case = work / f"train{number}"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    try:
        root = _tree_build(ctx, saved, case)
        common = ["experiment=smoke", "data=imagenet", f"data.root={root}", "data.image_size=72",
                  "data.crop=64", "model=tiny", "epochs=1", "batch_size=4",
                  "data.workers=2", f"output_root={case / 'out'}", "progress=false"]
        code, out = _run(["train", *common, f"data.max_broken={saved['max_broken']}"], 240, case)
        wrong = _command_output_ok(code, out)
        if wrong:
            return "escape", f"zfnet train: {wrong}: {out[-400:]}"
        latest = case / "out" / "train" / "latest"
        if code == 1 and latest.exists() and not (latest / "error.txt").is_file():
            return "escape", "a failed run left a run folder without error.txt as latest"
        return ("accepted" if code == 0 else "refused"), ""
    finally:
        shutil.rmtree(case, ignore_errors=True)


# target -> (setup(work) -> context, make(context, rng) -> input, check(context, input, number,
# work) -> (outcome, detail)); outcome: "refused", "accepted" or "escape"; make is deterministic
TARGETS = {"images": (images_setup, images_make, images_check),
           "overrides": (overrides_setup, overrides_make, overrides_check),
           "checkpoints": (checkpoints_setup, checkpoints_make, checkpoints_check),
           "prepare": (prepare_setup, prepare_make, prepare_check),
           "train": (train_setup, train_make, train_check)}
IN_PROCESS = ("images", "overrides", "checkpoints")


def case_rng(seed: int, target: str, number: int) -> random.Random:
    return random.Random(f"{seed}:{target}:{number}")


# ---------------------------------------------------------------- running cases in a worker


def _worker(target: str, seed: int, numbers: range, work: str, memory_mb: int, current,
            results) -> None:
    """Run cases ``numbers`` of ``target``; ``current`` holds the case being run (for the
    watchdog); each case's outcome goes to ``results``."""
    if memory_mb:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    setup, make, check = TARGETS[target]
    work_dir = Path(work)
    ctx = setup(work_dir)
    # What an in-process case prints to stderr (C libraries write there directly) reaches a
    # user as it is: any byte of it is an escape. fd 2 goes to a file, checked after each case.
    stderr = open(work_dir / f"stderr{os.getpid()}", "w+b")
    if target in IN_PROCESS:
        sys.stderr.flush()
        os.dup2(stderr.fileno(), 2)
    for number in numbers:
        current.value = number
        saved = make(ctx, case_rng(seed, target, number))
        printed = os.fstat(stderr.fileno()).st_size
        try:
            with warnings.catch_warnings(record=True) as heard:
                warnings.simplefilter("always")
                outcome, detail = check(ctx, saved, number, work_dir)
            if heard and outcome != "escape":
                w = heard[0]
                outcome, detail = "escape", f"warning {w.category.__name__}: {str(w.message)[:300]}"
        except BaseException as err:  # noqa: BLE001 - the escape being looked for
            outcome = "escape"
            detail = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            detail += " | " + " <- ".join(f"{Path(f.filename).name}:{f.lineno}"
                                          for f in traceback.extract_tb(err.__traceback__)[-4:])
        sys.stderr.flush()
        if os.fstat(stderr.fileno()).st_size > printed and outcome != "escape":
            stderr.seek(printed)
            outcome, detail = "escape", f"printed to stderr: {stderr.read(300).decode('utf-8', 'replace')!r}"
        results.put((number, outcome, detail, saved if outcome == "escape" else None))
    current.value = -1


def _save_escape(out: Path, target: str, number: int, saved: dict) -> str:
    folder = out / "escapes"
    folder.mkdir(parents=True, exist_ok=True)
    if "bytes" in saved:
        path = folder / f"{target}_{number}{saved['suffix']}"
        path.write_bytes(saved["bytes"])
    elif "files" in saved:  # a tree: its mutated files, and the recipe of the rest
        path = folder / f"{target}_{number}"
        for name, data in saved["files"].items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
        (path / "recipe.json").write_text(json.dumps(
            {k: v for k, v in saved.items() if k != "files"}) + "\n")
    else:
        path = folder / f"{target}_{number}.json"
        path.write_text(json.dumps(saved, ensure_ascii=False, indent=1) + "\n")
    return str(path)


def run_target(target: str, seed: int, numbers: list[int], out: Path, limit: float,
               memory_mb: int, progress: bool, on_progress=None) -> tuple[dict, list]:
    """Run the cases of one target in worker processes, one at a time, each ``CHUNK`` cases
    long; a case past ``limit`` seconds, or one whose worker dies, is an escape.
    ``on_progress(counts, escapes)`` is called after each worker's chunk."""
    import importlib

    for module in PRELOAD.get(target, []):
        importlib.import_module(module)
    if target == "overrides":  # every command's schema module
        from zfnet_cli.config import COMMANDS, schema

        for command in COMMANDS:
            schema(command)
    ctx = mp.get_context("fork")
    counts = {"cases": 0, "refused": 0, "accepted": 0, "escapes": 0}
    escapes = []
    t0 = time.perf_counter()
    todo = list(numbers)
    last_report = t0
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as work:
        while todo:
            chunk, todo = todo[:CHUNK], todo[CHUNK:]
            current, results = ctx.Value("q", -2), ctx.Queue()
            proc = ctx.Process(target=_worker, args=(target, seed, chunk, work, memory_mb, current,
                                                     results), daemon=True)
            proc.start()
            done: set[int] = set()
            seen, since = -2, time.perf_counter()
            while len(done) < len(chunk):
                try:
                    number, outcome, detail, saved = results.get(timeout=0.2)
                except Exception:  # queue.Empty: check the worker
                    number = None
                if number is not None:
                    done.add(number)
                    counts["cases"] += 1
                    counts["refused" if outcome == "refused" else
                           "accepted" if outcome == "accepted" else "escapes"] += 1
                    if outcome == "escape":
                        escapes.append({"target": target, "case": number, "what": detail,
                                        "saved": _save_escape(out, target, number, saved)})
                        print(f"fuzz: ESCAPE {target}:{number}: {detail}", flush=True)
                    continue
                now_case = current.value
                if now_case != seen:
                    seen, since = now_case, time.perf_counter()
                hung = now_case >= 0 and time.perf_counter() - since > limit and now_case not in done
                dead = not proc.is_alive() and results.empty()
                if hung or dead:
                    stuck = now_case if now_case >= 0 else next(n for n in chunk if n not in done)
                    proc.kill()
                    proc.join()
                    why = (f"no answer within {limit:g} s" if hung else
                           f"the worker died (exit status {proc.exitcode})")
                    saved = _regenerate(target, seed, stuck, Path(work))
                    counts["cases"] += 1
                    counts["escapes"] += 1
                    escapes.append({"target": target, "case": stuck, "what": why,
                                    "saved": _save_escape(out, target, stuck, saved)})
                    print(f"fuzz: ESCAPE {target}:{stuck}: {why}", flush=True)
                    done.add(stuck)
                    rest = [n for n in chunk if n not in done]
                    todo = rest + todo
                    break
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
            if on_progress is not None:
                elapsed = time.perf_counter() - t0
                on_progress(dict(counts, seconds=round(elapsed, 2),
                                 cases_per_s=round(counts["cases"] / elapsed, 2) if elapsed else 0.0),
                            escapes)
            if progress and time.perf_counter() - last_report > 30:
                last_report = time.perf_counter()
                rate = counts["cases"] / (last_report - t0)
                print(f"fuzz: {target}: {counts['cases']} of {len(numbers)} cases, "
                      f"{counts['escapes']} escapes, {rate:.1f} cases/s", flush=True)
    seconds = time.perf_counter() - t0
    return dict(counts, seconds=round(seconds, 2),
                cases_per_s=round(counts["cases"] / seconds, 2) if seconds else 0.0), escapes


def _regenerate(target: str, seed: int, number: int, work: Path) -> dict:
    """The input of a case whose worker hung or died, made again (cases are deterministic)."""
    setup, make, _ = TARGETS[target]
    return make(setup(work), case_rng(seed, target, number))


def _machine() -> str:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()} {cpu} ({os.cpu_count()} cores), {platform.system()}"


def _commit() -> str | None:
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return (rev + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("images", 0), ("overrides", 0), ("checkpoints", 0), ("prepare", 0),
                          ("train", 0)):
        p.add_argument(f"--{name}", type=int, default=default, help=f"cases of the {name} target")
    p.add_argument("--first", type=int, default=0, help="number of the first case (to split a "
                   "long run into parts with disjoint cases)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", action="append", default=[], metavar="TARGET:N",
                   help="run case N of TARGET alone (repeatable)")
    # A file may declare up to max_pixels (100 megapixels) in a few hundred bytes, and decoding
    # and resizing that many pixels legitimately takes tens of seconds on a loaded 2-core CPU
    # (a 565-byte TIFF of 16 x 4194316 pixels: 27 s): the limit sits above that, a hang beyond.
    p.add_argument("--limit", type=float, default=120.0, help="seconds per in-process case "
                   "(command-level cases get their own, longer limits)")
    p.add_argument("--memory-mb", type=int, default=6000, help="address-space limit of a worker")
    p.add_argument("--out", type=Path, required=True, help="folder for report.json and escapes/")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    plan: dict[str, list[int]] = {}
    for item in a.only:
        target, number = item.split(":")
        plan.setdefault(target, []).append(int(number))
    if not a.only:
        for target in TARGETS:
            n = getattr(a, target)
            if n:
                plan[target] = list(range(a.first, a.first + n))
    report = {"seed": a.seed, "first": a.first, "commit": _commit(), "machine": _machine(),
              "python": platform.python_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "limit_s": a.limit, "memory_mb": a.memory_mb, "argv": sys.argv if argv is None else argv,
              "targets": {}, "escapes": []}
    path = a.out / "report.json"
    for target, numbers in plan.items():
        limit = a.limit if target in IN_PROCESS else 600.0
        def partial(counts: dict, escapes: list, target=target) -> None:  # while it runs
            report["targets"][target] = dict(counts, running=True)
            path.write_text(json.dumps(dict(report, escapes=report["escapes"] + escapes),
                                       indent=1) + "\n")

        counts, escapes = run_target(target, a.seed, numbers, a.out, limit, a.memory_mb,
                                     progress=not a.quiet, on_progress=partial)
        report["targets"][target] = counts
        report["escapes"] += escapes
        path.write_text(json.dumps(report, indent=1) + "\n")  # after each target: partial results
        if not a.quiet:
            print(f"fuzz: {target}: {counts['cases']} cases, {counts['refused']} refused, "
                  f"{counts['accepted']} accepted, {counts['escapes']} escapes, "
                  f"{counts['cases_per_s']} cases/s", flush=True)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"fuzz: report in {path}; {len(report['escapes'])} escapes")
    return 1 if report["escapes"] else 0


if __name__ == "__main__":
    sys.exit(main())
