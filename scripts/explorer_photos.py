"""Write N photos (224 x 224 PNG) for timing ``zfnet explore`` on a real network: seeded random
square crops (side 35-100 % of the photo's short side, anywhere in the photo), resized to 224 px,
half of them flipped left-right, of 13 real photographs that ship with installed packages:

* the 8 of ``zfnet_cli/data/photos.json`` (scikit-image's chelsea, coffee, rocket, camera
  (grey, as RGB), motorcycle_left; matplotlib's grace_hopper; scikit-learn's china, flower);
* 5 more colour photographs of scikit-image: astronaut, hubble_deep_field, ihc,
  motorcycle_right, retina.

Photo i comes from source ``i % 13``, so the N images are crops of 13 scenes, not N scenes: a
stand-in for a photo folder of that size (timing), not a data set. ``crops.json`` beside them
records each file's source, box (x0, y0, x1, y1 in the source's pixels) and flip.

    python scripts/explorer_photos.py [--out outputs/photos100] [--n 100] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from zfnet_cli.data.photos import photo_specs
from zfnet_cli.files import write_atomic

SKIMAGE_MORE = ("astronaut.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_right.png",
                "retina.jpg")


def sources() -> list[tuple[str, Path]]:
    """(name, path) of the 13 source photographs."""
    import skimage

    out = [(p.name, p.path()) for p in photo_specs()]
    data = Path(skimage.__file__).parent / "data"
    return out + [(Path(f).stem, data / f) for f in SKIMAGE_MORE]


def write(out: Path, n: int = 100, seed: int = 0, size: int = 224) -> list[dict]:
    rng = np.random.default_rng(seed)
    srcs = [(name, Image.open(path).convert("RGB")) for name, path in sources()]
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        name, im = srcs[i % len(srcs)]
        w, h = im.size
        side = int(round(min(w, h) * rng.uniform(0.35, 1.0)))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        flip = bool(rng.random() < 0.5)
        crop = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BICUBIC)
        if flip:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        file = f"{i:03d}_{name}.png"
        crop.save(out / file)
        entries.append({"file": file, "source": name, "box": [x0, y0, x0 + side, y0 + side],
                        "flip": flip})
    write_atomic(out / "crops.json", json.dumps({"seed": seed, "size": size, "crops": entries},
                                                indent=1) + "\n")
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/photos100")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    entries = write(Path(args.out), args.n, args.seed)
    print(f"{len(entries)} photos in {args.out} (crops.json: source, box, flip of each)")


if __name__ == "__main__":
    main()
