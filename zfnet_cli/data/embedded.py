"""The embedded data set: an object-recognition task this package draws itself, nothing downloaded.

Why it exists: every experiment of the paper (top-9 projections, occlusion, correspondence,
invariance, transfer) needs a trained network and labelled images; this set lets all of them run
on a 2-core CPU in minutes, deterministically, with ground-truth object and part boxes that
ImageNet lacks.

What a sample is. One object of one of :data:`OBJECT_CLASSES` (15 classes that differ by shape and
structure: a car has wheels under a body, a lamp a shade over a pole, a key a holed bow and
teeth), drawn with PIL polygons and strokes at ``SUPERSAMPLE`` times the final resolution and
box-filtered down (antialiasing). What varies from scene to scene, all drawn from the scene seed:

- the object's shape parameters (proportions, number of petals, windows, teeth, sails, sub-type
  such as round or conifer tree), its colours (random hues, so colour alone never gives the
  class; faces use a skin-tone palette), and a left-right mirror (never for faces);
- its pose: longest side ``OBJECT_SIZE`` (55-80%) of the image, centred anywhere that keeps it
  mostly inside, rotated by up to +-15 deg (objects stand upright, as in photographs; +-12 deg
  for faces; any angle for the rotationally symmetric star and ring, so the Fig 5 rotation
  experiment has both kinds);
- the background: a two-colour gradient plus, at random, stripes, smooth colour noise and soft
  blobs; ``DISTRACTORS`` (1-5) pieces of clutter behind the object (rectangles, triangles, small
  ellipses, thick segments, irregular polygons: simple shapes that are no class); Gaussian pixel
  noise on the final image.

A body colour too close to the background's mean luminance under the object is pushed lighter
or darker, so the object is always visible: the task is hard through clutter, pose and shape
variation, not through invisible objects. The difficulty knobs (``OBJECT_SIZE``,
``DISTRACTORS``, ``DISTRACTOR_RADIUS``, background probabilities) were tuned with
``scripts/tune_embedded.py``: the small CPU ZFNet reaches about 93-95% val top-1 on the
pretrain classes at 96 px in 7-8 epochs (~4 min on 2 cores), and about 20-25% after one.

The rich set (``class_set="rich"``) adds :data:`COMPOSED_CLASSES`: 90 classes named
``body-part-texture`` (:data:`BODIES` x :data:`COMPOSED_PARTS` x :data:`TEXTURES`), each factor
drawn alike wherever it appears, at random colours, in the same scenes; :data:`COMPOSED_HELD_OUT`
keeps 15 of them (and the objects' 5) out of pretraining, each sharing its body, part and texture
with pretraining classes. :data:`ALL_CLASSES` is every class the generator draws (objects first).

Conventions.

- Pixel coordinates are continuous: the image spans [0, S] x [0, S], pixel (row i, col j) covers
  [j, j+1) x [i, i+1); a box is ``(x0, y0, x1, y1)`` float32 in final-image pixels, the tight
  box of the drawn object (without its 1 px outline) clipped to the image.
- ``PARTS`` of a face are named **as seen from the face**: the face's ``right_eye`` is on the
  image's left, as for the paper's Fig 8 dogs. Faces are frontal and upright (+-12 deg), never
  mirrored, with white eyeballs, a darker-skin triangular nose and a red mouth at jittered
  positions, so a part looks alike across faces (what Table 1's correspondence measure needs).
  An eye's box covers eyeball and iris, not the brow.
- ``render_scene(..., shift_y, scale, angle)`` re-renders the same scene (same background,
  distractors, object shape and colours) with only the object moved: ``shift_y`` px down,
  ``scale`` times larger about its centre, ``angle`` degrees more counter-clockwise (as seen on
  screen): the paper's Fig 5 transforms.
- Scene seeds come from ``numpy.random.SeedSequence((tag, seed, split, class, index))`` with the
  class's index in ``ALL_CLASSES``: a class's images do not depend on which other classes are
  loaded, the first n of a larger ``per_class`` are the same n images, and the splits draw from
  disjoint streams. Caches are one ``.npz`` per (split, class), so "pretrain", "heldout" and
  "all" share them.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import math
import multiprocessing
import os
import zipfile
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from zfnet_cli.files import write_atomic

# Bump whenever a change alters any generated pixel or box: it is part of the cache key.
GENERATOR_VERSION = 6

OBJECT_CLASSES: tuple[str, ...] = (
    "face", "car", "house", "tree", "flower", "fish", "star", "ring", "arrow", "bird",
    "cup", "umbrella", "key", "boat", "lamp",
)
PART_CLASS = "face"
PARTS: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth")
# Held out from pretraining, the later transfer target (paper §5.2 removes Caltech's classes
# from ImageNet). "face" stays in pretraining: the correspondence experiment needs a network
# that knows faces.
DEFAULT_HELD_OUT: tuple[str, ...] = ("cup", "umbrella", "key", "boat", "lamp")
SPLITS: tuple[str, ...] = ("train", "val", "test")
USES: tuple[str, ...] = ("pretrain", "heldout", "all")
# Images per class when ``per_class`` is not given.
DEFAULT_PER_CLASS = {"train": 800, "val": 150, "test": 100}
DEFAULT_IMAGE_SIZE = 128
SUPERSAMPLE = 2  # draw at 2x and box-filter down: antialiased edges for little cost
# Difficulty knobs, tuned so the small CPU model reaches >= 90% val top-1 in minutes but not in
# one epoch (scripts/tune_embedded.py). Fractions of the image side.
OBJECT_SIZE = (0.55, 0.8)  # longest side of the object
DISTRACTORS = (1, 5)  # how many, inclusive
DISTRACTOR_RADIUS = (0.03, 0.10)
_SEED_TAG = 0x5A46  # "ZF": keeps these streams apart from other SeedSequence users

# --------------------------------------------------------------------------------------------
# Object drawing: every class is a list of primitives in object coordinates (x right, y down,
# roughly [-1, 1]), normalised to a unit box and then posed by one similarity transform, so the
# box and part boxes are exact functions of the transformed points.
# --------------------------------------------------------------------------------------------

# kind: "poly" filled polygon | "line" stroked polyline (width in object units) | "hole" polygon
# cut out of the object drawn so far (color = its rim colour). part: a PARTS name or None.
_Prim = namedtuple("_Prim", "kind pts color width part")


def _P(pts, color, part=None) -> _Prim:
    return _Prim("poly", np.asarray(pts, np.float64), color, 0.0, part)


def _L(pts, width, color, part=None) -> _Prim:
    return _Prim("line", np.asarray(pts, np.float64), color, float(width), part)


def _H(pts, rim) -> _Prim:
    return _Prim("hole", np.asarray(pts, np.float64), rim, 0.0, None)


def _ellipse(cx, cy, rx, ry, n=28, a0=0.0, a1=2 * math.pi) -> np.ndarray:
    """Points on an ellipse arc from angle a0 to a1 (radians; y down, so pi/2 is the bottom)."""
    full = abs(a1 - a0) >= 2 * math.pi - 1e-9
    t = np.linspace(a0, a1, n, endpoint=not full)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _rect(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _rot(pts, deg, cx=0.0, cy=0.0) -> np.ndarray:
    """Rotate points counter-clockwise on screen (y down) by ``deg`` about (cx, cy)."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    p = np.asarray(pts, np.float64) - (cx, cy)
    return np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1]], 1) + (cx, cy)


def _hsv(h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def _color(rng, s=(0.35, 1.0), v=(0.35, 1.0)) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(*s), rng.uniform(*v))


def _shade(c, f) -> np.ndarray:
    """f < 1 darkens towards black, f > 1 lightens towards white."""
    c = np.asarray(c, np.float64)
    return c * f if f <= 1 else c + (255.0 - c) * (f - 1.0)


def _face(rng) -> list[_Prim]:
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.08)
    rx, ry = rng.uniform(0.66, 0.76), rng.uniform(0.86, 0.96)
    prims = []
    if rng.random() < 0.6:  # ears, behind the head
        for sx in (-rx * 0.97, rx * 0.97):
            prims.append(_P(_ellipse(sx, 0.0, 0.12, 0.2, 16), _shade(skin, 0.92)))
    prims.append(_P(_ellipse(0.0, 0.0, rx, ry, 40), skin))
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2)
    if rng.random() < 0.8:  # a hair cap down to a straight fringe well above the eyes
        line = ry * rng.uniform(0.45, 0.6)
        d = math.asin(line / (ry * 1.04))
        prims.append(_P(_ellipse(0.0, 0.0, rx * 1.04, ry * 1.04, 30, math.pi + d, 2 * math.pi - d),
                        hair))
    ex, ey = rng.uniform(0.27, 0.33), rng.uniform(-0.22, -0.14)
    ew, eh = rng.uniform(0.12, 0.15), rng.uniform(0.075, 0.095)
    iris = _color(rng, s=(0.4, 0.9), v=(0.15, 0.5))
    gaze = rng.uniform(-0.03, 0.03)
    brows = rng.random() < 0.5
    # The face's right eye is on the image's left (x < 0): parts are named as seen from the face.
    for part, sx in (("right_eye", -ex), ("left_eye", ex)):
        prims.append(_P(_ellipse(sx, ey, ew, eh, 20), np.array([245.0, 245.0, 240.0]), part))
        prims.append(_P(_ellipse(sx + gaze, ey, 0.055, 0.055, 14), iris, part))
        if brows:
            prims.append(_L([[sx - ew, ey - eh - 0.07], [sx + ew, ey - eh - 0.09]], 0.04, hair))
    ny = rng.uniform(0.18, 0.28)
    nw = rng.uniform(0.07, 0.11)
    prims.append(_P([[0.0, ey + 0.08], [nw, ny], [-nw, ny]], _shade(skin, 0.72), "nose"))
    my, mw, mh = rng.uniform(0.45, 0.56), rng.uniform(0.2, 0.3), rng.uniform(0.06, 0.12)
    mouth = np.array([175.0, 45.0, 55.0]) * rng.uniform(0.8, 1.1)
    prims.append(_P(_ellipse(0.0, my, mw, mh, 16, 0.0, math.pi), mouth, "mouth"))
    return prims


def _car(rng) -> list[_Prim]:
    body, glass = _color(rng), _shade(_hsv(0.58, 0.25, 0.85), rng.uniform(0.85, 1.1))
    bl, top = rng.uniform(0.92, 1.0), rng.uniform(-0.05, 0.1)
    bottom, wr = 0.45, rng.uniform(0.21, 0.27)
    x0, x1 = rng.uniform(-0.6, -0.4), rng.uniform(0.25, 0.5)
    ct = top - rng.uniform(0.3, 0.45)
    t0, t1 = x0 + rng.uniform(0.1, 0.25), x1 - rng.uniform(0.1, 0.25)
    mid = 0.5 * (t0 + t1)
    prims = [
        _P([[x0, top + 0.02], [t0, ct], [t1, ct], [x1, top + 0.02]], body),  # cabin
        _P([[-bl, top + 0.08], [-bl + 0.1, top], [bl - 0.15, top], [bl, top + 0.12],
            [bl, bottom], [-bl, bottom]], body),
        _P([[x0 + 0.08, top], [t0 + 0.04, ct + 0.06], [mid - 0.03, ct + 0.06], [mid - 0.03, top]],
           glass),
        _P([[mid + 0.03, top], [mid + 0.03, ct + 0.06], [t1 - 0.04, ct + 0.06], [x1 - 0.08, top]],
           glass),
        _P(_rect(bl - 0.12, top + 0.16, bl - 0.01, top + 0.24), _hsv(0.14, 0.6, 1.0)),  # headlight
    ]
    tyre, hub = _hsv(0, 0, rng.uniform(0.05, 0.15)), _hsv(0, 0, rng.uniform(0.7, 0.9))
    for wx in (-0.58 * bl, 0.58 * bl):
        prims.append(_P(_ellipse(wx, bottom, wr, wr, 24), tyre))
        prims.append(_P(_ellipse(wx, bottom, wr * 0.45, wr * 0.45, 14), hub))
    return prims


def _house(rng) -> list[_Prim]:
    wall, roof = _color(rng), _color(rng)
    w, h = rng.uniform(0.55, 0.75), rng.uniform(0.7, 1.0)
    rh, oh = rng.uniform(0.45, 0.75), rng.uniform(0.08, 0.18)
    prims = []
    if rng.random() < 0.5:  # chimney, behind the roof
        cx = rng.uniform(0.2, 0.45) * w
        prims.append(_P(_rect(cx, -rh * 0.95, cx + 0.14, -rh * 0.2), _shade(roof, 0.7)))
    prims.append(_P(_rect(-w, 0.0, w, h), wall))
    prims.append(_P([[-w - oh, 0.0], [0.0, -rh], [w + oh, 0.0]], roof))
    dx, dw = rng.uniform(-0.45, 0.45) * w, rng.uniform(0.1, 0.14)
    prims.append(_P(_rect(dx - dw, h - rng.uniform(0.4, 0.5), dx + dw, h), _color(rng)))
    frame = _shade(wall, 1.6)
    glass = _shade(_hsv(0.58, 0.3, 0.8), rng.uniform(0.7, 1.1))
    wy, ws = rng.uniform(0.12, 0.25), rng.uniform(0.09, 0.13)
    for wx in (-0.55 * w, 0.55 * w):
        if abs(wx - dx) < dw + ws + 0.04:  # no window over the door
            continue
        prims.append(_P(_rect(wx - ws, wy - ws, wx + ws, wy + ws), glass))
        prims.append(_L([[wx - ws, wy], [wx + ws, wy]], 0.03, frame))
        prims.append(_L([[wx, wy - ws], [wx, wy + ws]], 0.03, frame))
    return prims


def _tree(rng) -> list[_Prim]:
    trunk = _shade(_hsv(0.07 + rng.uniform(-0.03, 0.03), rng.uniform(0.4, 0.8), 0.5),
                   rng.uniform(0.6, 1.2))
    if rng.random() < 0.4:
        crown = _color(rng)
    else:  # mostly greens
        crown = _hsv(rng.uniform(0.2, 0.42), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.85))
    tw = rng.uniform(0.11, 0.18)
    if rng.random() < 0.55:  # round-crowned tree: a cluster of discs on a tall trunk
        prims = [_P(_rect(-tw, 0.0, tw, 1.0), trunk)]
        for _ in range(rng.integers(3, 7)):
            r = rng.uniform(0.28, 0.45)
            prims.append(_P(_ellipse(rng.uniform(-0.3, 0.3), -0.35 + rng.uniform(-0.25, 0.2), r, r,
                                     24), _shade(crown, rng.uniform(0.85, 1.15))))
        return prims
    # conifer: stacked triangles on a short trunk
    prims = [_P(_rect(-tw, 0.5, tw, 1.0), trunk)]
    tiers = int(rng.integers(2, 4))
    for k in range(tiers):
        base = 0.6 - k * (1.3 / tiers)
        half = rng.uniform(0.5, 0.7) * (1.0 - 0.2 * k)
        prims.append(_P([[-half, base], [0.0, base - rng.uniform(0.7, 0.9)], [half, base]], crown))
    return prims


def _flower(rng) -> list[_Prim]:
    stem = _hsv(rng.uniform(0.22, 0.4), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.7))
    petal, heart = _color(rng, s=(0.5, 1.0)), _color(rng)
    bend = rng.uniform(-0.15, 0.15)
    prims = [_L([[0.0, -0.3], [bend, 0.35], [0.0, 1.0]], 0.07, stem)]
    side = rng.choice([-1.0, 1.0])
    leaf = _rot(_ellipse(side * 0.22, 0.5, 0.22, 0.08, 16), side * -30,
                side * 0.02 + bend * 0.5, 0.5)
    prims.append(_P(leaf, stem))
    k = int(rng.integers(5, 10))
    pl, pw = rng.uniform(0.28, 0.4), rng.uniform(0.1, 0.17)
    phase = rng.uniform(0, 360)
    for j in range(k):
        a = phase + 360.0 * j / k
        prims.append(_P(_rot(_ellipse(pl * 0.9, -0.45, pl, pw, 18), a, 0.0, -0.45), petal))
    r = rng.uniform(0.12, 0.18)
    prims.append(_P(_ellipse(0.0, -0.45, r, r, 20), heart))
    return prims


def _fish(rng) -> list[_Prim]:
    body, fin = _color(rng), _color(rng)
    ry, tail = rng.uniform(0.28, 0.42), rng.uniform(0.35, 0.5)
    prims = [
        _P([[0.45, 0.0], [1.0, -tail], [0.78, 0.0], [1.0, tail]], fin),  # forked tail
        _P([[-0.1, -ry * 0.8], [0.05, -ry - rng.uniform(0.15, 0.25)], [0.3, -ry * 0.7]], fin),
        _P(_ellipse(0.0, 0.0, 0.62, ry, 32), body),
        _L(_ellipse(-0.3, 0.0, 0.1, ry * 0.6, 10, -1.2, 1.2), 0.03, _shade(body, 0.6)),  # gill
        _P(_ellipse(-0.42, -ry * 0.25, 0.08, 0.08, 14), np.array([245.0, 245.0, 240.0])),
        _P(_ellipse(-0.44, -ry * 0.25, 0.04, 0.04, 10), np.array([20.0, 20.0, 20.0])),
    ]
    return prims


def _star(rng) -> list[_Prim]:
    k = 5 if rng.random() < 0.7 else 6
    inner = rng.uniform(0.38, 0.5)
    a = np.linspace(0, 2 * math.pi, 2 * k, endpoint=False) - math.pi / 2
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    prims = [_P(np.stack([r * np.cos(a), r * np.sin(a)], 1), _color(rng))]
    if rng.random() < 0.3:
        prims.append(_P(_ellipse(0.0, 0.0, inner * 0.5, inner * 0.5, 16), _color(rng)))
    return prims


def _ring(rng) -> list[_Prim]:
    metal = _color(rng)
    ry, hole = rng.uniform(0.85, 1.0), rng.uniform(0.5, 0.7)
    prims = [_P(_ellipse(0.0, 0.0, 1.0, ry, 40), metal),
             _H(_ellipse(0.0, 0.0, hole, hole * ry, 32), _shade(metal, 0.5))]
    if rng.random() < 0.35:  # a stone on the band
        g = rng.uniform(0.14, 0.2)
        prims.append(_P([[0.0, -ry - g], [g, -ry], [0.0, -ry + g], [-g, -ry]], _color(rng)))
    return prims


def _arrow(rng) -> list[_Prim]:
    c = _color(rng)
    sw, hx, hh = rng.uniform(0.08, 0.14), rng.uniform(0.2, 0.45), rng.uniform(0.3, 0.45)
    prims = [_P(_rect(-1.0, -sw, hx + 0.02, sw), c), _P([[hx, -hh], [1.0, 0.0], [hx, hh]], c)]
    if rng.random() < 0.5:  # fletching
        f = _color(rng)
        for s in (-1.0, 1.0):
            prims.append(_P([[-1.0, s * sw], [-0.75, s * sw], [-0.9, s * (sw + 0.2)],
                             [-1.1, s * (sw + 0.2)]], f))
    return prims


def _bird(rng) -> list[_Prim]:
    body, wing = _color(rng), _color(rng)
    beak = _hsv(rng.uniform(0.05, 0.15), 0.8, 0.95)
    hr = rng.uniform(0.2, 0.26)
    legs = _hsv(0.08, 0.5, 0.4)
    prims = [
        _L([[-0.05, 0.3], [-0.1, 0.7], [-0.2, 0.72]], 0.045, legs),
        _L([[0.12, 0.3], [0.1, 0.7], [0.0, 0.72]], 0.045, legs),
        _P([[-0.4, 0.0], [-1.0, -rng.uniform(0.1, 0.3)], [-0.95, rng.uniform(0.1, 0.25)]], wing),
        _P(_rot(_ellipse(0.0, 0.05, rng.uniform(0.5, 0.6), rng.uniform(0.3, 0.36), 32), -15), body),
        _P(_ellipse(0.5, -0.3, hr, hr, 24), body),
        _P([[0.5 + hr * 0.8, -0.36], [0.5 + hr + rng.uniform(0.15, 0.28), -0.29],
            [0.5 + hr * 0.8, -0.22]], beak),
        _P(_ellipse(0.56, -0.36, 0.045, 0.045, 10), np.array([15.0, 15.0, 15.0])),
        _P(_rot(_ellipse(-0.08, 0.02, 0.36, 0.15, 20), rng.uniform(-25, -5), -0.08, 0.02), wing),
    ]
    return prims


def _cup(rng) -> list[_Prim]:
    c = _color(rng)
    bw = rng.uniform(0.32, 0.45)
    prims = []
    if rng.random() < 0.5:  # saucer
        prims.append(_P(_ellipse(0.0, 0.62, 0.8, 0.1, 28), _color(rng)))
    prims.append(_L(_ellipse(0.5, 0.02, 0.28, 0.3, 16, -1.4, 1.4), 0.11, c))  # handle
    prims.append(_P([[-0.5, -0.5], [0.5, -0.5], [bw, 0.6], [-bw, 0.6]], c))
    prims.append(_P(_ellipse(0.0, -0.5, 0.5, 0.08, 24), _shade(c, 0.55)))  # dark inside at the rim
    if rng.random() < 0.5:  # a band
        band = [[-0.46, -0.15], [0.46, -0.15], [0.44, -0.02], [-0.44, -0.02]]
        prims.append(_P(band, _color(rng)))
    return prims


def _umbrella(rng) -> list[_Prim]:
    c, pole = _color(rng), _hsv(0, 0, rng.uniform(0.1, 0.35))
    ry, k = rng.uniform(0.5, 0.65), int(rng.integers(4, 8))
    y0 = -0.1
    canopy = [_ellipse(0.0, y0, 1.0, ry, 32, math.pi, 2 * math.pi)]
    w = 2.0 / k
    for j in range(k):  # scalloped hem: small arcs bulging up into the canopy, right to left
        cx = 1.0 - (j + 0.5) * w
        t = np.linspace(0, math.pi, 8)
        canopy.append(np.stack([cx + 0.5 * w * np.cos(t), y0 - 0.12 * np.sin(t)], 1))
    prims = [_L([[0.0, y0 - ry - 0.1], [0.0, 0.75]], 0.05, pole),
             _L(_ellipse(-0.14, 0.75, 0.14, 0.14, 12, 0.0, math.pi), 0.05, pole),
             _P(np.concatenate(canopy), c)]
    if rng.random() < 0.5:  # ribs
        for j in range(1, k):
            prims.append(_L([[0.0, y0 - ry], [1.0 - j * w, y0]], 0.025, _shade(c, 0.6)))
    return prims


def _key(rng) -> list[_Prim]:
    c = _color(rng, s=(0.1, 0.8))
    ro = rng.uniform(0.3, 0.38)
    sh = rng.uniform(0.06, 0.09)
    prims = [_P(_ellipse(-0.62, 0.0, ro, ro, 28), c),
             _H(_ellipse(-0.62, 0.0, ro * rng.uniform(0.35, 0.5), ro * 0.42, 18), _shade(c, 0.5)),
             _P(_rect(-0.36, -sh, 1.0, sh), c)]
    x = 0.95
    for _ in range(rng.integers(2, 4)):
        tw = rng.uniform(0.08, 0.14)
        prims.append(_P(_rect(x - tw, sh - 0.01, x, sh + rng.uniform(0.12, 0.25)), c))
        x -= tw + rng.uniform(0.03, 0.1)
    return prims


def _boat(rng) -> list[_Prim]:
    hull, sail = _color(rng), _shade(_color(rng, s=(0.0, 0.4)), 1.3)
    mast = _hsv(0.08, 0.4, 0.35)
    prims = [
        _L([[0.0, 0.35], [0.0, -1.0]], 0.045, mast),
        _P([[0.05, -0.95], [0.05, 0.25], [rng.uniform(0.55, 0.8), 0.25]], sail),
    ]
    if rng.random() < 0.6:  # jib
        prims.append(_P([[-0.05, -0.8], [-0.05, 0.25], [-rng.uniform(0.4, 0.6), 0.25]], sail))
    if rng.random() < 0.5:  # flag
        prims.append(_P([[0.0, -1.0], [-0.22, -0.93], [0.0, -0.86]], _color(rng)))
    prims.append(_P([[-1.0, 0.3], [1.0, 0.3], [0.72, 0.72], [-0.7, 0.72]], hull))
    return prims


def _lamp(rng) -> list[_Prim]:
    shade, metal = _color(rng), _color(rng, s=(0.0, 0.5))
    tw, bw = rng.uniform(0.25, 0.35), rng.uniform(0.55, 0.7)
    prims = [_L([[0.0, -0.4], [0.0, 0.85]], 0.07, metal)]
    if rng.random() < 0.5:  # bulb under the shade
        prims.append(_P(_ellipse(0.0, -0.3, 0.13, 0.13, 14), _hsv(0.15, 0.4, 1.0)))
    prims.append(_P([[-tw, -1.0], [tw, -1.0], [bw, -0.35], [-bw, -0.35]], shade))
    base = rng.uniform(0.3, 0.45)
    prims.append(_P([[-base * 0.6, 0.8], [base * 0.6, 0.8], [base, 1.0], [-base, 1.0]], metal))
    return prims


_SKIN = [np.array(c, np.float64) for c in
         ((255, 220, 185), (240, 195, 150), (225, 170, 125), (195, 135, 95), (160, 105, 70),
          (120, 80, 55))]
_HAIR = [np.array(c, np.float64) for c in
         ((30, 25, 20), (70, 45, 25), (120, 80, 40), (200, 160, 90), (150, 60, 30), (90, 90, 95))]

_SHAPES: dict[str, Callable[[np.random.Generator], list[_Prim]]] = {
    "face": _face, "car": _car, "house": _house, "tree": _tree, "flower": _flower,
    "fish": _fish, "star": _star, "ring": _ring, "arrow": _arrow, "bird": _bird, "cup": _cup,
    "umbrella": _umbrella, "key": _key, "boat": _boat, "lamp": _lamp,
}
assert tuple(_SHAPES) == OBJECT_CLASSES

# Base rotation range in degrees (uniform in [-a, a]); objects have an upright pose as in
# photographs, except the rotationally symmetric ones.
_MAX_ANGLE = {"face": 12.0, "star": 180.0, "ring": 180.0}
_DEFAULT_MAX_ANGLE = 15.0
_NO_MIRROR = {"face"}  # a mirrored face would swap which eye is which


# --------------------------------------------------------------------------------------------
# Composed classes (class_set="rich"): a body outline, an attached part and a surface texture.
# Each factor is drawn alike in every class that has it, so a held-out class shares its body,
# part and texture with pretraining classes but is itself never seen there (upper
# layers become general when many classes share parts; ten hand-drawn classes are too few).
# --------------------------------------------------------------------------------------------

def _regular(k: int, r: float, a0: float = -math.pi / 2) -> np.ndarray:
    a = a0 + np.arange(k) * 2 * math.pi / k
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _stadium(hw: float, hh: float) -> np.ndarray:
    """A rectangle with round ends: half-width hw (ends included), half-height hh."""
    right = _ellipse(hw - hh, 0.0, hh, hh, 12, -math.pi / 2, math.pi / 2)
    left = _ellipse(-(hw - hh), 0.0, hh, hh, 12, math.pi / 2, 3 * math.pi / 2)
    return np.concatenate([right, left])


# Every body is a convex polygon about the origin, roughly within [-0.7, 0.7].
_BODIES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "disc": lambda rng: _ellipse(0.0, 0.0, 0.62, 0.62 * rng.uniform(0.85, 1.0), 32),
    "block": lambda rng: _rect(-0.62, -0.42, 0.62, 0.42) * (1.0, rng.uniform(0.9, 1.25)),
    "wedge": lambda rng: np.array([[-0.68, 0.5], [0.68, 0.5],
                                   [0.0, -0.62 * rng.uniform(0.9, 1.1)]]),
    "hexagon": lambda rng: _regular(6, 0.64, 0.0) * (1.0, rng.uniform(0.85, 1.0)),
    "diamond": lambda rng: np.array([[0.0, -0.7], [0.56, 0.0], [0.0, 0.7], [-0.56, 0.0]])
    * (rng.uniform(0.9, 1.1), 1.0),
    "bar": lambda rng: _stadium(0.72, 0.3 * rng.uniform(0.9, 1.15)),
}
COMPOSED_PARTS: tuple[str, ...] = ("legs", "handle", "spikes", "antenna", "fins")
TEXTURES: tuple[str, ...] = ("plain", "stripes", "dots")
BODIES: tuple[str, ...] = tuple(_BODIES)


def _crossings(poly: np.ndarray, value: float, axis: int) -> tuple[float, float]:
    """Where the line ``coordinate[axis] == value`` crosses a convex polygon's outline: the
    (lowest, highest) other coordinate; the nearest vertex's if the line misses."""
    hits = []
    for p, q in zip(poly, np.roll(poly, -1, 0)):
        lo, hi = sorted((p[axis], q[axis]))
        if lo <= value <= hi and hi > lo:
            t = (value - p[axis]) / (q[axis] - p[axis])
            hits.append(p[1 - axis] + t * (q[1 - axis] - p[1 - axis]))
    if not hits:
        v = poly[np.argmin(np.abs(poly[:, axis] - value)), 1 - axis]
        return float(v), float(v)
    return float(min(hits)), float(max(hits))


def _inside(poly: np.ndarray, x: float, y: float, margin: float) -> bool:
    """Whether (x, y) lies inside a convex polygon at least ``margin`` from its outline."""
    y0, y1 = _crossings(poly, x, 0)
    x0, x1 = _crossings(poly, y, 1)
    return y0 + margin <= y <= y1 - margin and x0 + margin <= x <= x1 - margin


def _part(rng, name: str, body: np.ndarray, color) -> list[_Prim]:
    (x0, y0), (x1, y1) = body.min(0), body.max(0)
    w = x1 - x0
    if name == "legs":
        out = []
        for s in (-1.0, 1.0):
            x = s * w * rng.uniform(0.18, 0.26)
            top = _crossings(body, x, 0)[1] - 0.05
            foot = top + rng.uniform(0.35, 0.45)
            out += [_L([[x, top], [x, foot]], 0.1, color),
                    _P(_rect(x - 0.1, foot - 0.04, x + 0.1, foot + 0.05), color)]
        return out
    if name == "handle":
        r = rng.uniform(0.22, 0.3)
        right = _crossings(body, 0.0, 1)[1]
        return [_L(_ellipse(right - 0.04, 0.0, r, r * 1.1, 16, -math.pi / 2, math.pi / 2), 0.1,
                   color)]
    if name == "spikes":
        out, h = [], rng.uniform(0.26, 0.36)
        for x in np.array([-0.3, 0.0, 0.3]) * w:
            top = _crossings(body, x, 0)[0] + 0.04
            out.append(_P([[x - 0.12, top], [x + 0.12, top], [x, top - h]], color))
        return out
    if name == "antenna":
        top = _crossings(body, 0.0, 0)[0] + 0.03
        tip = top - rng.uniform(0.35, 0.45)
        return [_L([[0.0, top], [0.0, tip]], 0.06, color),
                _P(_ellipse(0.0, tip, 0.11, 0.11, 14), color)]
    # fins: a swept triangle on each side
    out, sweep = [], rng.uniform(0.25, 0.4)
    for s in (-1.0, 1.0):
        edge = _crossings(body, 0.0, 1)[1 if s > 0 else 0] - s * 0.04
        out.append(_P([[edge, -0.16], [edge + s * 0.34, 0.12 + sweep], [edge, 0.2]], color))
    return out


def _texture(rng, name: str, body: np.ndarray, color) -> list[_Prim]:
    (_, y0), (_, y1) = body.min(0), body.max(0)
    h, out = y1 - y0, []
    if name == "stripes":  # three bands across the body, each following its outline
        for c in np.linspace(y0 + 0.28 * h, y1 - 0.28 * h, 3):
            b0, b1 = c - 0.055 * h, c + 0.055 * h
            l0, r0 = _crossings(body, b0, 1)
            l1, r1 = _crossings(body, b1, 1)
            out.append(_P([[l0 + 0.07, b0], [r0 - 0.07, b0], [r1 - 0.07, b1], [l1 + 0.07, b1]],
                          color))
    elif name == "dots":  # a grid of spots, those that fit inside
        r = rng.uniform(0.065, 0.085)
        for y in np.linspace(-0.3, 0.3, 3) + (y0 + y1) / 2:
            for x in np.linspace(-0.3, 0.3, 3):
                if _inside(body, x, y, r + 0.04):
                    out.append(_P(_ellipse(x, y, r, r, 12), color))
    return out


def _composed(body: str, part: str, texture: str):
    def draw(rng) -> list[_Prim]:
        outline = _BODIES[body](rng)
        c = _color(rng)
        part_color = c if rng.random() < 0.5 else _color(rng)
        mark = _shade(c, 0.45) if _luminance(c) > 110 else _shade(c, 1.8)
        # the part first: it sits behind the body, whose outline then covers the joint
        return (_part(rng, part, outline, part_color) + [_P(outline, c)]
                + _texture(rng, texture, outline, mark))
    return draw


COMPOSED_CLASSES: tuple[str, ...] = tuple(f"{b}-{p}-{t}" for b in BODIES for p in COMPOSED_PARTS
                                          for t in TEXTURES)
# Held out: the 15 combinations with (body + part + texture) % 6 == 0 (indices in the tuples
# above): one body per (part, texture) pair, so every body, part and texture is still seen in
# pretraining, in other combinations.
COMPOSED_HELD_OUT: tuple[str, ...] = tuple(
    f"{b}-{p}-{t}" for i, b in enumerate(BODIES) for j, p in enumerate(COMPOSED_PARTS)
    for k, t in enumerate(TEXTURES) if (i + j + k) % len(BODIES) == 0)

_SHAPES.update({name: _composed(*name.split("-")) for name in COMPOSED_CLASSES})
# Every class the generator draws; a class's index here keys its scene seeds, so new classes
# go at the end.
ALL_CLASSES: tuple[str, ...] = OBJECT_CLASSES + COMPOSED_CLASSES
# data.class_set: "objects" the 15 hand-drawn classes (the demo's task), "rich" those and the
# 90 composed ones (85 pretraining classes, 20 held out).
CLASS_SETS: dict[str, tuple[str, ...]] = {"objects": OBJECT_CLASSES, "rich": ALL_CLASSES}
SET_HELD_OUT: dict[str, tuple[str, ...]] = {"objects": DEFAULT_HELD_OUT,
                                            "rich": DEFAULT_HELD_OUT + COMPOSED_HELD_OUT}


def _bounds(prims: list[_Prim]) -> np.ndarray:
    """(x0, y0, x1, y1) of the drawn primitives (holes lie inside their parent)."""
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    for p in prims:
        if p.kind == "hole":
            continue
        pad = p.width / 2
        lo = np.minimum(lo, p.pts.min(0) - pad)
        hi = np.maximum(hi, p.pts.max(0) + pad)
    return np.concatenate([lo, hi])


# --------------------------------------------------------------------------------------------
# Background and clutter
# --------------------------------------------------------------------------------------------

def _background(rng, n: int) -> np.ndarray:
    """(n, n, 3) float32 in 0..255: a gradient plus some of stripes, colour noise, soft blobs."""
    x = (np.arange(n, dtype=np.float32) + 0.5) / n
    xx, yy = x[None, :], x[:, None]
    a = rng.uniform(0, 2 * math.pi)
    t = np.cos(a) * xx + np.sin(a) * yy  # (n, n) by broadcasting
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0 = _color(rng, s=(0.0, 0.9), v=(0.15, 1.0)).astype(np.float32)
    c1 = _color(rng, s=(0.0, 0.9), v=(0.15, 1.0)).astype(np.float32)
    img = c0 + (c1 - c0) * t[..., None]
    if rng.random() < 0.35:  # stripes at a random angle and frequency, soft or hard
        a, f = rng.uniform(0, math.pi), rng.uniform(3, 14)
        m = 0.5 + 0.5 * np.sin(2 * math.pi * f * (np.cos(a) * xx + np.sin(a) * yy)
                               + rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:
            m = (m > 0.5).astype(np.float32)
        m = (rng.uniform(0.15, 0.45) * m)[..., None]
        img = img * (1 - m) + _color(rng).astype(np.float32) * m
    if rng.random() < 0.45:  # smooth colour noise: a coarse random grid, bicubically enlarged
        k = int(rng.integers(3, 9))
        grid = (rng.random((k, k, 3)) * 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(grid).resize((n, n), Image.BICUBIC), np.float32)
        alpha = np.float32(rng.uniform(0.2, 0.5))
        img = img * (1 - alpha) + big * alpha
    for _ in range(rng.integers(0, 4)):  # soft blobs; a Gaussian is separable: outer product
        cx, cy, s = rng.random(), rng.random(), rng.uniform(0.05, 0.25)
        gx = np.exp(-((x - cx) ** 2) / (2 * s * s))
        gy = np.exp(-((x - cy) ** 2) / (2 * s * s)) * np.float32(rng.uniform(0.4, 0.9))
        m = (gy[:, None] * gx[None, :])[..., None]
        img = img * (1 - m) + _color(rng).astype(np.float32) * m
    return img.astype(np.float32)


def _draw_distractors(rng, draw: ImageDraw.ImageDraw, n: int) -> None:
    """A few opaque pieces of simple geometric clutter that is no class."""
    for _ in range(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1)):
        kind = rng.integers(5)
        cx, cy = rng.uniform(0, n, 2)
        r = rng.uniform(*DISTRACTOR_RADIUS) * n
        color = tuple(int(v) for v in _color(rng, s=(0.0, 1.0), v=(0.1, 1.0)))
        if kind == 0:  # rotated rectangle
            pts = _rot(_rect(-r, -r * rng.uniform(0.3, 1.0), r, r * rng.uniform(0.3, 1.0)),
                       rng.uniform(0, 180)) + (cx, cy)
        elif kind == 1:  # triangle
            a = rng.uniform(0, 2 * math.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.4, 0.4, 3)
            pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
        elif kind == 2:  # small ellipse
            pts = _rot(_ellipse(0, 0, r * 0.6, r * rng.uniform(0.2, 0.6), 20),
                       rng.uniform(0, 180)) + (cx, cy)
        elif kind == 3:  # thick segment
            a = rng.uniform(0, math.pi)
            d = np.array([math.cos(a), math.sin(a)]) * r * 1.3
            draw.line([tuple(np.array([cx, cy]) - d), tuple(np.array([cx, cy]) + d)], fill=color,
                      width=max(1, int(r * rng.uniform(0.1, 0.3))))
            continue
        else:  # irregular convex-ish polygon
            a = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(4, 7))))
            rr = r * rng.uniform(0.6, 1.0, len(a))
            pts = np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], 1)
        draw.polygon(pts.ravel().tolist(), fill=color)


def _luminance(c) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


# --------------------------------------------------------------------------------------------
# One scene
# --------------------------------------------------------------------------------------------

def _check_class(class_name: str) -> None:
    if class_name not in _SHAPES:
        raise ValueError(f"unknown class {class_name!r}; valid: {', '.join(ALL_CLASSES)}")


def render_scene(class_name: str, seed: int, image_size: int = DEFAULT_IMAGE_SIZE, *,
                 shift_y: float = 0.0, scale: float = 1.0, angle: float = 0.0,
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Draw one scene of ``class_name`` from its scene seed.

    Args:
        class_name: one of :data:`ALL_CLASSES`.
        seed: scene seed (non-negative int); it fixes background, distractors, object shape,
            colours and pose.
        image_size: side S of the square output image, in pixels (default 128).
        shift_y: move the object this many final-image pixels down (negative: up); Fig 5.
        scale: multiply the object's size by this, about its centre (Fig 5 uses 1..1.8).
        angle: rotate the object by this many more degrees, counter-clockwise on screen (Fig 5
            uses 0..350). The three transforms touch the object only; the rest of the scene is
            pixel-identical.

    Returns:
        ``(image, box, parts)``: image (S, S, 3) uint8 RGB; box float32 (4,) ``(x0, y0, x1, y1)``
        of the object in pixels, clipped to [0, S]; parts ``{name: float32 (4,)}`` with a box per
        :data:`PARTS` name for a face (named as seen from the face), ``{}`` otherwise.

    >>> img, box, parts = render_scene("face", 7, 64)
    >>> img.shape, sorted(parts) == sorted(PARTS)
    ((64, 64, 3), True)
    """
    _check_class(class_name)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    S = int(image_size)
    n = S * SUPERSAMPLE
    # Every random draw happens here, in a fixed order, before the transform is applied, so
    # shift_y / scale / angle cannot change anything else in the scene.
    rng = np.random.default_rng(seed)
    # The background is smooth: render it at the final size and enlarge (4x fewer pixels).
    bg = _background(rng, S)
    canvas = Image.fromarray(np.clip(bg + 0.5, 0, 255).astype(np.uint8)).resize((n, n),
                                                                                Image.BILINEAR)
    _draw_distractors(rng, ImageDraw.Draw(canvas), n)
    prims = _SHAPES[class_name](rng)
    size = rng.uniform(*OBJECT_SIZE) * n  # longest side of the object, supersampled px
    r = size / 2
    cx, cy = rng.uniform(0.9 * r, n - 0.9 * r, 2)
    max_angle = _MAX_ANGLE.get(class_name, _DEFAULT_MAX_ANGLE)
    base_angle = rng.uniform(-max_angle, max_angle)
    mirror = class_name not in _NO_MIRROR and rng.random() < 0.5
    noise_sigma = rng.uniform(2.0, 6.0)
    noise = rng.standard_normal((S, S, 3)).astype(np.float32) * noise_sigma

    # Normalise the object to a box centred at 0 with half-side 1, mirror it if drawn so.
    b = _bounds(prims)
    centre, half = (b[:2] + b[2:]) / 2, max(b[2] - b[0], b[3] - b[1]) / 2
    sx = -1.0 if mirror else 1.0
    prims = [p._replace(pts=(p.pts - centre) / half * (sx, 1.0), width=p.width / half)
             for p in prims]

    def pose(pts, radius, ang, dy):
        return _rot(pts * radius, ang) + (cx, cy + dy)

    # Visibility: compare body colours with the scene's mean luminance under the base-pose box
    # (base pose, so a Fig 5 re-render keeps the same colours).
    arr = np.asarray(canvas)
    bb = _bounds([p._replace(pts=pose(p.pts, r, base_angle, 0.0), width=p.width * r)
                  for p in prims])
    x0, y0 = (int(np.clip(v, 0, n - 1)) for v in bb[:2])
    x1, y1 = (int(np.clip(v, 1, n)) for v in bb[2:])
    lum_bg = _luminance(arr[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)].reshape(-1, 3).mean(0))

    def visible(c):
        if abs(_luminance(c) - lum_bg) >= 70:
            return c
        return _shade(c, 0.4) if lum_bg > 110 else _shade(c, 1.7)

    r_final = r * scale
    ang = base_angle + angle
    dy = shift_y * SUPERSAMPLE
    # Face parts keep their colours (consistent parts for Table 1); holes have only a rim.
    posed = [p._replace(pts=pose(p.pts, r_final, ang, dy), width=p.width * r_final,
                        color=p.color if p.part is not None or p.kind == "hole"
                        else visible(p.color))
             for p in prims]

    layer = Image.new("RGB", (n, n))
    mask = Image.new("L", (n, n), 0)
    dl, dm = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    edge = SUPERSAMPLE  # 1 final px outline: objects have boundaries like real ones
    for p in posed:
        # PIL puts pixel k's centre at coordinate k; ours is at k + 0.5.
        xy = (p.pts - 0.5).ravel().tolist()
        color = tuple(int(v) for v in np.clip(np.asarray(p.color) + 0.5, 0, 255))
        if p.kind == "poly":
            dark = tuple(int(v) for v in _shade(color, 0.5))
            dl.polygon(xy, fill=color, outline=dark, width=edge)
            dm.polygon(xy, fill=255, outline=255, width=edge)
        elif p.kind == "line":
            w = max(1, int(round(p.width)))
            dl.line(xy, fill=color, width=w, joint="curve")
            dm.line(xy, fill=255, width=w, joint="curve")
        else:  # hole: the background shows through, with a rim
            dm.polygon(xy, fill=0)
            ring = xy + xy[:2]
            dl.line(ring, fill=color, width=edge)
            dm.line(ring, fill=255, width=edge)
    canvas = Image.composite(layer, canvas, mask).reduce(SUPERSAMPLE)
    image = np.clip(np.asarray(canvas, np.float32) + noise + 0.5, 0, 255).astype(np.uint8)

    def box_of(ps):
        bx = _bounds(ps) / SUPERSAMPLE
        return np.clip(bx, 0, S).astype(np.float32)

    box = box_of(posed)
    parts = {}
    if class_name == PART_CLASS:
        parts = {name: box_of([p for p in posed if p.part == name]) for name in PARTS}
    return image, box, parts


# --------------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------------

@dataclass
class EmbeddedData:
    """In-memory data set of rendered scenes; item ``i`` is ``(images[i], int(labels[i]))``."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64, index into `classes`
    boxes: torch.Tensor  # (N, 4) float32 (x0, y0, x1, y1) in pixels
    parts: dict[str, torch.Tensor]  # PARTS name -> (N, 4) float32, NaN rows for non-face samples
    classes: list[str]
    seeds: torch.Tensor  # (N,) int64 scene seed: render_scene(classes[labels[i]], seeds[i], S)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


def scene_seeds(split: str, class_name: str, count: int, seed: int = 0) -> np.ndarray:
    """(count,) int64 scene seeds of a split's class, from SeedSequence((tag, seed, split,
    class, index)): reproducible across machines (no Python ``hash``), disjoint across splits."""
    _check_split(split)
    _check_class(class_name)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    key = (_SEED_TAG, int(seed), SPLITS.index(split), ALL_CLASSES.index(class_name))
    out = np.empty(count, np.int64)
    for i in range(count):
        hi, lo = np.random.SeedSequence((*key, i)).generate_state(2, np.uint32)
        out[i] = ((int(hi) << 32) | int(lo)) & 0x7FFF_FFFF_FFFF_FFFF  # 63 bits: fits int64
    return out


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def resolve_classes(classes: Sequence[str] | None = None,
                    held_out: Sequence[str] | None = None, use: str = "pretrain",
                    class_set: str = "objects") -> list[str]:
    """Class names in label order: ``classes`` as given if not None, else by ``use`` within
    ``class_set`` (:data:`CLASS_SETS`): "pretrain" all but ``held_out``, "heldout" only those,
    "all" every class of the set (in :data:`ALL_CLASSES` order). ``held_out`` None: the set's
    own (:data:`SET_HELD_OUT`)."""
    if class_set not in CLASS_SETS:
        raise ValueError(f"unknown class set {class_set!r}; valid: {', '.join(CLASS_SETS)}")
    held_out = SET_HELD_OUT[class_set] if held_out is None else held_out
    for name in held_out:
        _check_class(name)
    if classes is not None:
        classes = list(classes)
        for name in classes:
            _check_class(name)
        if len(set(classes)) != len(classes) or not classes:
            raise ValueError(f"classes must be non-empty and without repeats, got {classes}")
        return classes
    universe = CLASS_SETS[class_set]
    if use == "pretrain":
        return [c for c in universe if c not in held_out]
    if use == "heldout":
        return [c for c in universe if c in held_out]
    if use == "all":
        return list(universe)
    raise ValueError(f"unknown use {use!r}; valid: {', '.join(USES)}")


def _render_task(task: tuple[str, int, int]):
    class_name, seed, size = task
    image, box, parts = render_scene(class_name, seed, size)
    part_boxes = np.full((len(PARTS), 4), np.nan, np.float32)
    for j, name in enumerate(PARTS):
        if name in parts:
            part_boxes[j] = parts[name]
    return image, box, part_boxes


def _cache_path(cache_dir: Path, split: str, class_name: str, size: int, count: int,
                seed: int) -> Path:
    # Everything that determines the pixels goes into the key; one file per (split, class) so
    # "pretrain", "heldout" and "all" share their files.
    params = dict(version=GENERATOR_VERSION, supersample=SUPERSAMPLE, split=split,
                  class_name=class_name, image_size=size, count=count, seed=seed,
                  class_index=ALL_CLASSES.index(class_name), parts=PARTS)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"embedded-{split}-{class_name}-{size}px-n{count}-s{seed}-{digest}.npz"


def _read_cache(path: Path, count: int, size: int):
    try:
        with np.load(path) as z:
            block = z["images"], z["boxes"], z["parts"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing or damaged: regenerate
    if block[0].shape != (count, size, size, 3):
        return None
    return block


def _write_cache(path: Path, images, boxes, parts) -> None:
    # atomic: readers see the old file or the whole new one
    write_atomic(path, lambda f: np.savez(f, images=images, boxes=boxes, parts=parts))


def _render_many(tasks: list[tuple[str, int, int]], workers: int, desc: str, progress: bool):
    """Render in task order; the result does not depend on ``workers``."""
    out = []
    with tqdm(total=len(tasks), desc=desc, unit="img", disable=not progress) as bar:
        if workers <= 1 or len(tasks) < 64:
            for t in tasks:
                out.append(_render_task(t))
                bar.update()
        else:
            # fork where available: workers start at once and need no re-import of torch
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            with ctx.Pool(workers) as pool:
                for r in pool.imap(_render_task, tasks, chunksize=16):
                    out.append(r)
                    bar.update()
    return out


def load_embedded(split: str, *, image_size: int = DEFAULT_IMAGE_SIZE, per_class: int | None = None,
                  classes: Sequence[str] | None = None, held_out: Sequence[str] | None = None,
                  use: str = "pretrain", class_set: str = "objects", seed: int = 0,
                  cache_dir: str | Path | None = None,
                  workers: int | None = None, progress: bool = True) -> EmbeddedData:
    """Render (or read from the cache) one split of the embedded data set.

    Args:
        split: "train", "val" or "test"; the three never share a scene seed.
        image_size: side S of the images in pixels (default 128).
        per_class: images per class; default ``DEFAULT_PER_CLASS[split]`` (800 / 150 / 100).
            A larger count keeps the smaller count's images as its first ones.
        classes: explicit class names in label order; overrides ``held_out`` and ``use``.
        held_out: classes kept out of pretraining; None: the class set's
            (:data:`SET_HELD_OUT`; :data:`DEFAULT_HELD_OUT` for "objects").
        use: "pretrain" (classes not held out), "heldout" (only those) or "all"; labels
            0..K-1 follow ``ALL_CLASSES`` order.
        class_set: "objects" (the 15 hand-drawn classes) or "rich" (those and the 90
            composed ones), see :data:`CLASS_SETS`.
        seed: data set seed (>= 0); every scene seed derives from it.
        cache_dir: folder for ``.npz`` caches, one per (split, class, size, count, seed,
            generator version); None: no caching.
        workers: rendering processes (default ``os.cpu_count()``); never changes the result.
        progress: show a tqdm bar while rendering.

    Returns:
        :class:`EmbeddedData`, samples grouped by class in label order.

    >>> val = load_embedded("val", image_size=64, per_class=2, progress=False)
    >>> len(val), val.images.shape[1:], val.classes[0]
    (20, torch.Size([3, 64, 64]), 'face')
    """
    _check_split(split)
    names = resolve_classes(classes, held_out, use, class_set)
    count = DEFAULT_PER_CLASS[split] if per_class is None else int(per_class)
    if count < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    S = int(image_size)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    cache = Path(cache_dir) if cache_dir is not None else None

    blocks: dict[str, tuple] = {}
    seeds = {c: scene_seeds(split, c, count, seed) for c in names}
    missing = []
    for c in names:
        block = None
        if cache is not None:
            block = _read_cache(_cache_path(cache, split, c, S, count, seed), count, S)
        if block is None:
            missing.append(c)
        else:
            blocks[c] = block
    if missing:
        tasks = [(c, int(s), S) for c in missing for s in seeds[c]]
        rendered = _render_many(tasks, workers, f"embedded {split} {S}px", progress)
        for k, c in enumerate(missing):
            chunk = rendered[k * count:(k + 1) * count]
            block = (np.stack([r[0] for r in chunk]), np.stack([r[1] for r in chunk]),
                     np.stack([r[2] for r in chunk]))
            if cache:
                _write_cache(_cache_path(cache, split, c, S, count, seed), *block)
            blocks[c] = block

    images = np.concatenate([blocks[c][0] for c in names])  # (N, S, S, 3)
    boxes = np.concatenate([blocks[c][1] for c in names])
    part_boxes = np.concatenate([blocks[c][2] for c in names])  # (N, len(PARTS), 4)
    return EmbeddedData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        labels=torch.arange(len(names), dtype=torch.int64).repeat_interleave(count),
        boxes=torch.from_numpy(boxes.astype(np.float32)),
        parts={name: torch.from_numpy(np.ascontiguousarray(part_boxes[:, j])) for j, name in
               enumerate(PARTS)},
        classes=names,
        seeds=torch.from_numpy(np.concatenate([seeds[c] for c in names])),
    )
