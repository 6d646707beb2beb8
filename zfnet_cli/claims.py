"""The paper's qualitative claims as data: one row per claim, each tested on the runs under an
output root, with our value, its spread over seeds, the paper's value and a verdict.

Every claim is written as "A > B" for two measured quantities (e.g. A = the random squares'
Delta, B = the parts' Delta at layer 5: "parts below random"). Each *replicate* is one trained
model, i.e. one seed: several ``zfnet occlude`` runs on the same checkpoint count once (the
newest, a test-split run before any val-split one: see "Which split" below), and an ablation
variant counts once per seed. A replicate gives one value of A and one of B (a run's own mean
over its folds, draws or images); over the replicates each side is summarised as mean ± std
(sample std, ddof = 1) and n. A side that several runs compute identically is one replicate:
``zfnet transfer`` runs whose from-scratch nets started from the same seeds (``scratch_seeds``;
runs made before that key, when the seeds were the folds' alone) repeat one scratch
computation, which counts once (the Tables 4/5 and Fig 9 rows then say "single run" and why).

**The rule.** A claim *holds* when ``mean(A) - mean(B) > std(A) + std(B)`` with at least two
replicates on each side: the two intervals mean ± std, as the table prints them, do not touch.
Why this rule and not another:

* it can be checked by eye from the printed table (no hidden test statistic);
* it assumes neither normality nor pairing (the ablation's variants are independent trainings;
  the Table 1 parts and the random squares of one model are not), so one rule serves every row;
* it is not lenient: with n replicates on each side it implies Welch's
  ``t = d / sqrt(s_A^2/n + s_B^2/n) >= sqrt(n) (s_A + s_B) / sqrt(s_A^2 + s_B^2) >= sqrt(n)``,
  i.e. t > 1.73 for n = 3 seeds (t > 2.45 when both spreads are equal).

It is a screening rule, not a significance test: at n = 3 noise alone passes it now and then
(one-sided p of a few percent up to about 0.1, depending on the two spreads), so among the
fourteen rows one "holds" on its own is a reason to add seeds, not a proof.

Otherwise the verdict is *does not hold* (the detail says whether the difference is within the
spread, which does not rule out "at least as good", or beyond it in the opposite direction);
*single run* when a side has one replicate only (no spread to compare with: the detail gives the
difference and its sign, never a verdict on it); *not measured* when the runs it needs are not
under the root (or predate the keys it reads).

Where each claim is read from (``<root>/<command>/<run>/...``):

======================  ======================================================================
claim                   source and keys
======================  ======================================================================
Fig 7 localisation      ``occlude``: ``metrics.json`` ``localisation.fraction_inside`` against
                        ``localisation.chance_inside``
Table 1 (layer 5, 7)    ``correspond``: ``metrics.json`` ``table.<row>.<conv5|fc7>.mean``
Fig 5 (translate,       ``invariance``: ``metrics.json`` ``transforms.<kind>.distance_conv1``,
scale)                  ``distance_fc7`` at the small amounts (see :data:`SMALL`)
Fig 6                   ``visualize`` (mode filters): ``metrics.json``
                        ``models.<name>.{kernel,stride,renorm,dead,filters,dominance,
                        spectral_energy.mid}``
Table 3                 ``ablate``: ``variants/<name>[_seed<S>]/metrics.json``
                        ``final.test_top1`` where every variant replicate has it
                        (``zfnet train eval_test=true``), else ``final.val_top1``; ``seed``
Table 7                 ``transfer``: ``metrics.json`` ``per_layer[].{classifier,layer,mean}``
Tables 4/5, Fig 9       ``transfer``: ``metrics.json`` ``rows[].{shots,pretrained_mean,
                        scratch_mean}``
======================  ======================================================================

**Which network.** Each row says which network it was measured on (``network``): our ZFNet at
small scale (:data:`OURS`: runs of our own checkpoints, and runs that predate the
``model_kind`` key) or another model the runs loaded, such as the real ImageNet network,
EfficientNet-Lite0 with its ImageNet weights (``make claims-real``). A network that is not ours
is one trained model, so its replicates are not seeds: Fig 5 and Fig 7 are read per photo (the
newest run's images: each photo one value of A and one of B), Table 7 and Tables 4/5 / Fig 9
per fold (the seeds over the sampled training images). Its rows are Fig 7, Fig 5 (first against
last layer under small translations and scalings, and the output's probability under rotation
against small translations) and the transfer rows; the same rule judges them. Table 7 on such a
network reads the last of the run's layers against the best of its first four.

**Which split.** Choices are tuned on the validation split and the claims are read on the test
split (so the claims are not read on the data the choices were fitted to). For Fig 7, Table 1 and Fig 5 a run's ``metrics.json`` ``split`` says which
split its images came from (``zfnet occlude|correspond|invariance split=test``; runs without
the key read val): per checkpoint a test-split run is preferred over any val-split run, and
only where a checkpoint has none is its val run read. Each row says which split it was read on
(``split``, and at the end of ``source``: "(test split)", "(val split)" or the mix); so does
Table 3's.

Example:
    >>> from zfnet_cli.claims import evaluate
    >>> rows = evaluate("outputs/paper-small")          # doctest: +SKIP
    >>> [(r.key, r.verdict) for r in rows]              # doctest: +SKIP
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from zfnet_cli import paper
from zfnet_cli.runs import run_folders
from zfnet_cli.data.photos import REAL_NETWORK
from zfnet_cli.transfer import fold_summary

HOLDS, FAILS, SINGLE, UNMEASURED = "holds", "does not hold", "single run", "not measured"
VERDICTS = (HOLDS, FAILS, SINGLE, UNMEASURED)
RULE = ("A claim holds when mean(A) - mean(B) > std(A) + std(B) over at least 2 seeds on each "
        "side (the intervals mean ± std do not touch); with one seed the verdict is 'single run'.")

# Fig 5's "small" transforms: the half of each sweep nearest the identity, identity excluded
# (translation up to half the largest shift: 30 px of the paper's +-60 at 224; scale up to 1.4
# of the sweep 1..1.8).
# (1e-6: the sweeps are float linspaces, whose midpoints may land a rounding error outside)
SMALL = {"translate": lambda a, sweep: 0 < abs(a) <= max(abs(x) for x in sweep) / 2 + 1e-6,
         "scale": lambda a, sweep: 1.0 < a <= 1.0 + (max(sweep) - 1.0) / 2 + 1e-6}
TABLE1_PARTS = ("right_eye", "left_eye", "nose")
TABLE7_LOWER = ("conv1", "conv2", "conv3", "conv4")  # "layers 1-4" of Table 7

OURS = "ZFNet, small scale (ours)"
# the networks other than ours that have a name here (others are named by their checkpoint)
NETWORKS = {REAL_NETWORK: "EfficientNet-Lite0, ImageNet weights"}


def network_of(m: dict) -> str:
    """The network a run measured, from its ``metrics.json``: :data:`OURS` for our own
    checkpoints (``model_kind`` ``zfnet``, or no such key: runs written before it were all of
    ours), else the model's name (:data:`NETWORKS`) or its ``checkpoint``."""
    if m.get("model_kind", "zfnet") == "zfnet":
        return OURS
    checkpoint = str(m.get("checkpoint", ""))
    return NETWORKS.get(checkpoint, checkpoint)


@dataclass
class Side:
    """One side of a claim: a quantity over the replicates (``mean ± std``, ``n``)."""

    label: str
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return fold_summary(self.values)["mean"] if self.values else None

    @property
    def std(self) -> Optional[float]:
        return fold_summary(self.values)["std"] if self.values else None

    def text(self, fmt: str) -> str:
        if not self.values:
            return f"{self.label}: -"
        spread = f" ± {self.std:{fmt}}" if self.n > 1 else ""
        return f"{self.label} {self.mean:{fmt}}{spread}"


@dataclass
class Claim:
    """One row of the claims table. ``a`` > ``b`` is what the paper says."""

    key: str  # a stable id, e.g. "table1_layer5"
    where: str  # the paper's figure or table
    claim: str  # the claim in words
    measure: str  # the quantity that tests it, as "A > B"
    source: str  # the runs and keys it is read from
    paper: str  # the paper's value(s)
    a: Side = field(default_factory=lambda: Side("A", []))
    b: Side = field(default_factory=lambda: Side("B", []))
    fmt: str = ".3f"
    runs: list[str] = field(default_factory=list)  # the run folders the values came from
    note: str = ""  # why it is not measured, or what the values mean
    split: str = ""  # the data split the values were read on: "test", "val", a mix, "" (n/a)
    network: str = OURS  # the network it was measured on (see "Which network")
    unit: str = "seeds"  # what a replicate is: seeds (trained models), photos, folds
    verdict: str = UNMEASURED
    detail: str = ""
    difference: Optional[float] = None  # mean(A) - mean(B)
    spread: Optional[float] = None  # std(A) + std(B)

    @property
    def n(self) -> int:
        return min(self.a.n, self.b.n)

    @property
    def ours(self) -> str:
        if not self.n:
            return "-"
        n = f"n={self.n}" if self.a.n == self.b.n else f"n={self.a.n} / {self.b.n}"
        n += f" {self.unit}" if self.unit != "seeds" else ""
        return f"{self.a.text(self.fmt)} vs {self.b.text(self.fmt)} ({n})"

    def as_row(self) -> dict:
        """A flat dict for claims.json / claims.csv."""
        d = {k: v for k, v in asdict(self).items() if k not in ("a", "b", "fmt")}
        for side in ("a", "b"):
            s = getattr(self, side)
            d.update({f"{side}_label": s.label, f"{side}_mean": s.mean, f"{side}_std": s.std,
                      f"{side}_n": s.n, f"{side}_values": s.values})
        d.update(n=self.n, ours=self.ours)
        return d


def judge(claim: Claim) -> Claim:
    """Apply the module's rule to ``claim`` (A > B): sets ``verdict``, ``detail``,
    ``difference`` and ``spread``, and returns the claim.

    Args:
        claim: a claim whose sides hold one value per replicate (seed).

    Returns:
        Claim: the same object, judged.

    Example:
        >>> c = judge(Claim("k", "Fig 0", "A beats B", "A > B", "-", "-",
        ...                 Side("A", [3.0, 3.2, 2.9]), Side("B", [1.0, 1.1, 0.9])))
        >>> c.verdict, round(c.difference, 2)
        ('holds', 2.03)
    """
    a, b = claim.a, claim.b
    if not a.n or not b.n:
        claim.verdict = UNMEASURED
        claim.detail = claim.note or "no finished run under the root"
        return claim
    d = a.mean - b.mean
    claim.difference = d
    if a.n < 2 or b.n < 2:
        claim.verdict = SINGLE
        claim.spread = None
        way = "the claimed direction" if d > 0 else "the opposite direction" if d < 0 else "no difference"
        claim.detail = (f"difference {d:+{claim.fmt}} ({way}); one seed on a side, so no spread "
                        "to judge it against")
        return claim
    s = a.std + b.std
    claim.spread = s
    if d > s:
        claim.verdict, claim.detail = HOLDS, f"difference {d:+{claim.fmt}} > spread {s:{claim.fmt}}"
    elif d < -s:
        claim.verdict = FAILS
        claim.detail = f"difference {d:+{claim.fmt}}: the opposite, beyond the spread {s:{claim.fmt}}"
    else:
        claim.verdict = FAILS
        claim.detail = (f"difference {d:+{claim.fmt}} within the spread {s:{claim.fmt}}: no "
                        "difference shown (an equal footing is not ruled out)")
    return claim


# ---------------------------------------------------------------- reading the runs

def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def split_of(m: dict) -> str:
    """The data split a run's images came from: its ``split``; runs that predate the key
    read the validation split."""
    return str(m.get("split") or "val")


def replicates(root: str | Path, command: str,
               key: Callable[[dict], object] = lambda m: m.get("checkpoint"),
               keep: Callable[[dict], bool] = lambda m: True,
               prefer_test: bool = False, network: Optional[str] = OURS
               ) -> list[tuple[Path, dict]]:
    """The finished runs of ``command`` under ``root`` (a readable ``metrics.json``) that
    ``keep`` accepts and that measured ``network`` (:func:`network_of`; ``None``: any), one per
    ``key(metrics)`` (the newest; by default one per checkpoint, so a rerun on the same model
    is not a second seed), oldest first. With ``prefer_test`` a run on the test split
    (:func:`split_of`) is kept over any val-split run of the same key, however new: the claims
    are read on test, val is for tuning."""
    newest: dict = {}
    for run in run_folders(Path(root) / command):
        m = _read(run / "metrics.json")
        if m is not None and keep(m) and (network is None or network_of(m) == network):
            k = key(m)
            if (prefer_test and k in newest and split_of(newest[k][1]) == "test"
                    and split_of(m) != "test"):
                continue
            newest.pop(k, None)  # re-insert: the dict's order is the newest run's order
            newest[k] = (run, m)
    return list(newest.values())


def _mark_split(claim: Claim, runs: Sequence[tuple[Path, dict]]) -> Claim:
    """Say on ``claim`` which split the runs it read (``claim.runs``) looked at: ``split`` and
    a tail on ``source``, "(test split)", "(val split)" or "(test split: 2, val split: 1)"."""
    of = {str(r): split_of(m) for r, m in runs}
    used = [of[r] for r in claim.runs if r in of]
    if not used:
        return claim
    counts = {s: used.count(s) for s in sorted(set(used), key=lambda s: (s != "test", s))}
    claim.split = "+".join(counts)
    claim.source += (f" ({next(iter(counts))} split)" if len(counts) == 1 else
                     " (" + ", ".join(f"{s} split: {n}" for s, n in counts.items()) + ")")
    return claim


_SEED_SUFFIX = re.compile(r"_seed\d+$")


def ablation_replicates(root: str | Path) -> dict[str, list[tuple[Path, dict]]]:
    """Every finished ablation variant under ``root``: variant name -> [(folder, metrics)], one
    per seed (the newest when several ablations trained the same variant and seed).

    Variant folders are ``<ablation>/variants/<name>`` and, with ``seeds=N``,
    ``<name>_seed<S>`` (see :mod:`zfnet_cli.experiments.ablate`)."""
    out: dict[str, dict[object, tuple[Path, dict]]] = {}
    for run in run_folders(Path(root) / "ablate"):
        variants = run / "variants"
        if not variants.is_dir():
            continue
        for folder in sorted(variants.iterdir()):
            m = _read(folder / "metrics.json")
            if m is None or "final" not in m:
                continue
            name = _SEED_SUFFIX.sub("", folder.name)
            out.setdefault(name, {})[m.get("seed")] = (folder, m)
    return {name: list(seeds.values()) for name, seeds in out.items()}


# ---------------------------------------------------------------- the paper's side, as text
# Each claim's row shows the paper's values it compares; they are read from zfnet_cli.paper,
# where every published number is written once.

def _top1(variant: str) -> str:
    """Table 3's val top-1 error of ``variant``."""
    return f"{paper.TABLE3[variant][1]:.1f}"


def paper_table1(layer: str) -> str:
    """Table 1 at ``layer``: the parts' range and mean of Delta against random squares'."""
    parts = [paper.TABLE1[p][layer][0] for p in TABLE1_PARTS]
    return (f"parts {min(parts):.3f}-{max(parts):.3f} (mean {sum(parts) / len(parts):.3f}) vs "
            f"random {paper.TABLE1['random'][layer][0]:.3f}")


def paper_table7() -> str:
    """Table 7's SVM accuracy at layer 7 against layer 4, both Caltech sets."""
    c101, c256 = paper.TABLE7["caltech101"], paper.TABLE7["caltech256"]
    return (f"Caltech-101: {c101[('hinge', 'fc7')]:.1f} (layer 7) vs "
            f"{c101[('hinge', 'conv4')]:.1f} (layer 4); Caltech-256: "
            f"{c256[('hinge', 'fc7')]:.1f} vs {c256[('hinge', 'conv4')]:.1f}")


_SHOTS = {"few": {"caltech101": 15, "caltech256": 15}, "many": {"caltech101": 30, "caltech256": 60}}


def _accuracies(dataset: str, n: int) -> tuple[float, float]:
    """Tables 4 and 5: (pretrained, scratch) mean per-class accuracy at ``n`` images per class."""
    rows = paper.FEWSHOT[dataset]
    return rows["pretrained"][n][0], rows["scratch"][n][0]


def paper_shots(which: str) -> str:
    """Tables 4 and 5, pretrained against scratch at the ``"few"`` or ``"many"`` images per
    class the paper reports."""
    (a, b), (c, d) = (_accuracies(d, _SHOTS[which][d]) for d in ("caltech101", "caltech256"))
    n101, n256 = _SHOTS[which]["caltech101"], _SHOTS[which]["caltech256"]
    return (f"Caltech-101 at {n101}/class: {a:.1f} vs {b:.1f}; Caltech-256 at {n256}: "
            f"{c:.1f} vs {d:.1f}")


def paper_gain() -> str:
    """Fig 9: pretrained minus scratch at few against many images per class."""
    def gain(dataset, which):
        n = _SHOTS[which][dataset]
        a, b = _accuracies(dataset, n)
        return f"{a - b:.1f} at {n}"
    return (f"Caltech-101: {gain('caltech101', 'few')} vs {gain('caltech101', 'many')}; "
            f"Caltech-256: {gain('caltech256', 'few')} vs {gain('caltech256', 'many')}")


# ---------------------------------------------------------------- the claims

def _fill(claim: Claim, pairs: Iterable[tuple[Path, Optional[float], Optional[float]]]) -> Claim:
    """Put each replicate's (run, A, B) into the claim; replicates missing either are left out."""
    for run, a, b in pairs:
        if a is None or b is None:
            continue
        claim.a.values.append(float(a))
        claim.b.values.append(float(b))
        claim.runs.append(str(run))
    return judge(claim)


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def fig7_localisation(root) -> list[Claim]:
    c = Claim("fig7_localisation", "Fig 7",
              "Occlusion localises the object: the occluder that hurts the correct class most "
              "lies on the object",
              "A = share of images whose most damaging occluder is centred in the object's box > "
              "B = share of occluder positions inside the box (chance)",
              "occlude/*/metrics.json: localisation.fraction_inside, localisation.chance_inside",
              "qualitative (Fig 7 examples: the probability drops when the object is covered)",
              Side("on object", []), Side("chance", []), fmt=".2f",
              note="no `zfnet occlude localise=true` run (with chance_inside) under the root")
    runs = replicates(root, "occlude", keep=lambda m: bool(m.get("localisation")),
                      prefer_test=True)
    return [_mark_split(_fill(c, ((r, m["localisation"].get("fraction_inside"),
                                   m["localisation"].get("chance_inside")) for r, m in runs)),
                        runs)]


def table1(root) -> list[Claim]:
    out = []
    runs = replicates(root, "correspond", prefer_test=True)
    for layer, n in (("conv5", 5), ("fc7", 7)):
        c = Claim(f"table1_layer{n}", "Table 1",
                  f"Correspondence: occluding the same part in every image changes layer-{n} "
                  "features more consistently than occluding random spots",
                  f"A = Delta of random squares > B = mean Delta of the parts ({', '.join(TABLE1_PARTS)}) "
                  f"at {layer}",
                  f"correspond/*/metrics.json: table.<row>.{layer}.mean",
                  paper_table1(layer), Side("random", []), Side("parts", []), fmt=".3f",
                  note=f"no `zfnet correspond` run with {layer} under the root")

        def values(m, layer=layer):
            t = m.get("table", {})
            parts = [t[p][layer]["mean"] for p in TABLE1_PARTS if layer in t.get(p, {})]
            rnd = t.get("random", {}).get(layer, {}).get("mean")
            return rnd, (_mean(parts) if len(parts) == len(TABLE1_PARTS) else None)

        out.append(_mark_split(_fill(c, ((r, *values(m)) for r, m in runs)), runs))
    return out


def fig5(root) -> list[Claim]:
    out = []
    # the paper's protocol only (the whole image transformed), not method=render's re-drawn scenes
    runs = replicates(root, "invariance", keep=lambda m: m.get("method", "image") == "image",
                      prefer_test=True)
    for kind, words in (("translate", "small vertical translations"), ("scale", "small scalings")):
        c = Claim(f"fig5_{kind}", "Fig 5",
                  f"Invariance: layer 7 changes less than layer 1 under {words}",
                  f"A = relative distance norm(f(x) - f(x')) / norm(f(x)) at conv1 > B = the same at "
                  f"fc7, mean over images and the {kind} amounts "
                  + ("0 < |t| <= half the largest shift (30 px at 224)" if kind == "translate"
                     else "1 < s <= 1.4"),
                  f"invariance/*/metrics.json: transforms.{kind}.amounts, distance_conv1, "
                  "distance_fc7",
                  "qualitative (Fig 5 a2/a3, b2/b3: layer 1 very sensitive, layer 7 quasi-linear)",
                  Side("conv1", []), Side("fc7", []), fmt=".3f",
                  note="no `zfnet invariance` run (method=image) with conv1, fc7 and a small "
                       f"{kind} amount in its sweep under the root")

        def values(m, kind=kind):
            t = m.get("transforms", {}).get(kind, {})
            amounts = t.get("amounts") or []
            if "distance_conv1" not in t or "distance_fc7" not in t or not amounts:
                return None, None
            pick = [j for j, a in enumerate(amounts) if SMALL[kind](a, amounts)]
            if not pick:
                return None, None
            per = {l: _mean([img[j] for img in t[f"distance_{l}"] for j in pick])
                   for l in ("conv1", "fc7")}
            return per["conv1"], per["fc7"]

        out.append(_mark_split(_fill(c, ((r, *values(m)) for r, m in runs)), runs))
    return out


def _fig6_models(m: dict) -> dict[str, dict]:
    """The models of a ``visualize --filters`` run by role: ``alexnet`` (conv1 11x11/4),
    ``zfnet`` (7x7/2 with renorm) and ``norenorm`` (7x7/2 without)."""
    roles: dict[str, dict] = {}
    for stats in (m.get("models") or {}).values():
        ks = (stats.get("kernel"), stats.get("stride"))
        if ks == (11, 4):
            roles.setdefault("alexnet", stats)
        elif ks == (7, 2):
            roles.setdefault("norenorm" if stats.get("renorm") is False else "zfnet", stats)
    return roles


def fig6(root) -> list[Claim]:
    runs = replicates(root, "visualize", keep=lambda m: m.get("mode") == "filters",
                      key=lambda m: tuple(sorted(s.get("checkpoint", "") for s in
                                                 (m.get("models") or {}).values())))
    roles = [(r, _fig6_models(m)) for r, m in runs]
    src = "visualize/*/metrics.json (mode filters): models.<name>."

    def pick(role_a, role_b, get):
        for r, ms in roles:
            if role_a in ms and role_b in ms:
                yield r, get(ms[role_a]), get(ms[role_b])

    def dead(s):
        return s["dead"] / s["filters"] if s.get("filters") else None

    dead_c = Claim("fig6_dead_filters", "Fig 6",
                   "The 11x11/4 first layer has more dead filters than ZFNet's 7x7/2",
                   "A = share of dead conv1 filters (RMS < 0.1 x the largest), 11x11/4 > "
                   "B = the same, 7x7/2",
                   src + "{kernel,stride,dead,filters}", "qualitative (Fig 6 b vs c)",
                   Side("11x11/4", []), Side("7x7/2", []), fmt=".2f",
                   note="no `zfnet visualize --filters --compare` of an 11x11/4 and a 7x7/2 model")
    mid_c = Claim("fig6_mid_frequency", "Fig 6",
                  "ZFNet's 7x7/2 first layer keeps more mid-frequency energy than the 11x11/4 one",
                  "A = mean share of a live conv1 filter's spectral energy at 1/8-1/4 cycles per "
                  "pixel, 7x7/2 > B = the same, 11x11/4",
                  src + "spectral_energy.mid", "qualitative (Fig 6 b: little mid frequency)",
                  Side("7x7/2", []), Side("11x11/4", []), fmt=".3f",
                  note=dead_c.note)
    dom_c = Claim("fig6_renorm", "Fig 6",
                  "Without the RMS renormalisation one first-layer filter dominates",
                  "A = largest / median conv1 filter RMS without renorm > B = the same with it",
                  src + "{renorm,dominance}", "qualitative (Fig 6 a)",
                  Side("no renorm", []), Side("renorm", []), fmt=".2f",
                  note="no `make fig6` comparison (7x7/2 with and without optim.renorm)")
    return [_fill(dead_c, pick("alexnet", "zfnet", dead)),
            _fill(mid_c, pick("zfnet", "alexnet", lambda s: s.get("spectral_energy", {}).get("mid"))),
            _fill(dom_c, pick("norenorm", "zfnet", lambda s: s.get("dominance")))]


def table3(root) -> list[Claim]:
    variants = ablation_replicates(root)
    # the test split's top-1 (train eval_test=true) only when every replicate has it: errors
    # from two splits must not be compared with each other
    every = [m for runs in variants.values() for _, m in runs]
    split = "test" if every and all("test_top1" in m["final"] for m in every) else "val"

    def err(m: dict) -> float:
        return 100.0 - m["final"][f"{split}_top1"]

    src = (f"ablate/*/variants/<name>[_seed<S>]/metrics.json: final.{split}_top1 (error = 100 - "
           "it), seed" + (f" ({split} split)" if every else ""))
    zf = Claim("table3_zfnet_vs_alexnet", "Table 3",
               "ZFNet is at least as good as the AlexNet replica (the paper: better)",
               f"A = {split} top-1 error of the AlexNet replica > B = ZFNet's",
               src, f"{_top1('alexnet')} vs {_top1('zfnet')}", Side("AlexNet", []), Side("ZFNet", []), fmt=".1f",
               note="the ablation has no alexnet and zfnet variants")
    for name, side in (("alexnet", zf.a), ("zfnet", zf.b)):
        for folder, m in variants.get(name, []):
            side.values.append(err(m))
            zf.runs.append(str(folder))
    worst = Claim("table3_no_conv34_fc67_worst", "Table 3",
                  "Removing layers 3, 4, 6 and 7 hurts most",
                  f"A = {split} top-1 error without conv3, conv4, fc6, fc7 > B = the next-worst "
                  "variant's (highest mean error among the others)",
                  src, f"{_top1('alexnet_no_conv34_fc67')} vs {_top1('alexnet_no_conv34')} "
                  "(- layers 3,4)", Side("- layers 3,4,6,7", []),
                  Side("next worst", []), fmt=".1f",
                  note="the ablation has no alexnet_no_conv34_fc67 variant or nothing to compare")
    target = variants.get("alexnet_no_conv34_fc67", [])
    others = {n: [err(m) for _, m in v] for n, v in variants.items()
              if n != "alexnet_no_conv34_fc67" and v}
    if target and others:
        runner_up = max(others, key=lambda n: _mean(others[n]))
        worst.a.values = [err(m) for _, m in target]
        worst.b = Side(f"next worst ({runner_up})", others[runner_up])
        worst.runs = [str(f) for f, _ in target] + [str(f) for f, _ in variants[runner_up]]
    for c in (zf, worst):
        c.split = split if every else ""
    return [judge(zf), judge(worst)]


def _fewshot_runs(root) -> dict[str, list[tuple[Path, dict]]]:
    """Few-shot transfer runs by target name, one per (checkpoint, target)."""
    by_target: dict[str, list] = {}
    for run, m in replicates(root, "transfer", keep=lambda m: m.get("task") == "fewshot",
                             key=lambda m: (m.get("checkpoint"), m.get("target"))):
        by_target.setdefault(str(m.get("target")), []).append((run, m))
    return by_target


SCRATCH_REPEATED = ("the scratch side is one computation repeated: the transfer runs trained "
                    "their scratch nets from the same seeds on the same images (runs made before "
                    "the seeds moved with the pretraining seed), so they count as one "
                    "replicate, and a verdict needs a spread over scratch seeds these runs lack")


def _scratch_repeated(runs: Sequence[tuple[Path, dict]]) -> bool:
    """Whether several transfer runs' from-scratch results are one computation repeated: the
    runs' ``scratch_seeds`` (the fold nets' seeds, :func:`zfnet_cli.experiments.transfer.
    scratch_seed`) are all the same. Runs without the key predate it, when the scratch nets were
    seeded by the folds alone, so the transfer runs on N pretraining seeds repeated one scratch
    computation, which must not count as N seeds."""
    seeds = {tuple(m["scratch_seeds"]) if m.get("scratch_seeds") else None for _, m in runs}
    return len(runs) > 1 and len(seeds) == 1


def table7(root) -> list[Claim]:
    out = []
    targets = _fewshot_runs(root) or {"": []}
    for target, runs in targets.items():
        c = Claim("table7_depth" + (f" ({target})" if target else ""), "Table 7",
                  "Accuracy rises with depth: the top layer's features beat those of layers 1-4",
                  "A = SVM (hinge) accuracy on fc7 > B = the best SVM accuracy of conv1-conv4",
                  "transfer/*/metrics.json: per_layer[].{classifier,layer,mean}",
                  paper_table7(), Side("fc7", []), Side("best of conv1-4", []), fmt=".1f",
                  note="no `zfnet transfer` run with --per-layer under the root")

        def values(m):
            acc = {r["layer"]: r["mean"] for r in m.get("per_layer") or []
                   if r.get("classifier") == "hinge"}
            lower = [acc[l] for l in TABLE7_LOWER if l in acc]
            return acc.get("fc7"), (max(lower) if lower else None)

        out.append(_fill(c, ((r, *values(m)) for r, m in runs)))
    return out


def transfer(root) -> list[Claim]:
    out = []
    targets = _fewshot_runs(root) or {"": []}
    src = "transfer/*/metrics.json: rows[].{shots,pretrained_mean,scratch_mean}"
    for target, runs in targets.items():
        suffix = f" ({target})" if target else ""
        scratch_runs = [(r, m) for r, m in runs
                        if any(row.get("scratch_mean") is not None for row in m.get("rows", []))]
        shots = sorted({row["shots"] for _, m in scratch_runs for row in m["rows"]})
        few, many = (shots[0], shots[-1]) if shots else (None, None)
        note = "no `zfnet transfer` run with the scratch rows under the root"
        repeated = _scratch_repeated(scratch_runs)

        def at(m, n):
            row = next((r for r in m.get("rows", []) if r.get("shots") == n), None)
            if row is None or row.get("scratch_mean") is None:
                return None, None
            return row["pretrained_mean"], row["scratch_mean"]

        rows = []
        for n, which, published in ((few, "few", paper_shots("few")),
                                    (many, "many", paper_shots("many"))):
            c = Claim(f"transfer_{which}_shots{suffix}", "Tables 4, 5",
                      f"Pretrained features beat training from scratch with {which} training "
                      "images per class",
                      f"A = mean per-class accuracy, frozen fc7 + softmax > B = the same net "
                      f"from scratch, at {n if n is not None else 'the fewest/most'} images per "
                      "class (each run: mean over its folds)",
                      src, published, Side("pretrained", []), Side("scratch", []), fmt=".1f",
                      note=note)
            c = _fill(c, ((r, *at(m, n)) for r, m in scratch_runs) if n else ())
            if repeated and c.b.n > 1:  # one computation, counted once
                c.b.values = c.b.values[:1]
                judge(c)
                c.detail += f"; {SCRATCH_REPEATED}"
            rows.append(c)
        gain = Claim(f"fig9_gain{suffix}", "Fig 9",
                     "Pretraining helps most when there are few training images",
                     f"A = pretrained - scratch at {few} images per class > B = the same at "
                     f"{many}" if shots else "A = gain at the fewest images per class > B = "
                     "gain at the most",
                     src, paper_gain(), Side(f"gain at {few}", []), Side(f"gain at {many}", []),
                     fmt=".1f", note=note if len(shots) != 1 else "one number of shots only")

        def gains(m):
            (p0, s0), (p1, s1) = at(m, few), at(m, many)
            if None in (p0, s0, p1, s1):
                return None, None
            return p0 - s0, p1 - s1

        gain = _fill(gain, ((r, *gains(m)) for r, m in scratch_runs) if len(shots) > 1 else ())
        if repeated and gain.difference is not None:  # the gains vary with the pretrained side only
            gain.verdict, gain.spread = SINGLE, None
            gain.detail = f"difference {gain.difference:+{gain.fmt}}; {SCRATCH_REPEATED}"
        rows.append(gain)
        out += rows
    return out


CLAIMS: tuple[Callable[[Path], list[Claim]], ...] = (fig7_localisation, table1, fig5, fig6,
                                                     table3, table7, transfer)


# ---------------------------------------------------------------- a network that is not ours
# One trained model: the replicates are its photos (Fig 5, Fig 7) and folds (transfer).

def _newest(root, command: str, network: str, keep: Callable[[dict], bool]
            ) -> Optional[tuple[Path, dict]]:
    runs = replicates(root, command, keep=keep, network=network, key=lambda m: None)
    return runs[-1] if runs else None


def _per_item(claim: Claim, run: Optional[tuple[Path, dict]], pairs, unit: str) -> Claim:
    """Fill ``claim`` with one (A, B) pair per photo or fold of one run, and judge it."""
    claim.unit = unit
    if run is not None:
        for a, b in pairs:
            if a is not None and b is not None:
                claim.a.values.append(float(a))
                claim.b.values.append(float(b))
        claim.runs = [str(run[0])] if claim.a.values else []
    return judge(claim)


def real_fig7(root, network: str) -> list[Claim]:
    c = Claim("fig7_localisation", "Fig 7",
              "Occlusion localises the object: the occluder that hurts the correct class most "
              "lies on the object",
              "A = 1 where the photo's most damaging occluder is centred in its hand-drawn box, "
              "else 0 > B = the share of occluder positions inside the box (chance), per photo",
              "occlude/*/localisation.json: per_image[].inside, per_image[].chance",
              "qualitative (Fig 7 examples: the probability drops when the object is covered)",
              Side("on object", []), Side("chance", []), fmt=".2f", network=network,
              split="photos", note="no `zfnet occlude localise=true` run on boxed photos")
    run = _newest(root, "occlude", network, lambda m: bool(m.get("localisation")))
    per = (_read(run[0] / "localisation.json") or {}).get("per_image", []) if run else []
    return [_per_item(c, run, ((float(r["inside"]), r["chance"]) for r in per), "photos")]


def real_fig5(root, network: str) -> list[Claim]:
    run = _newest(root, "invariance", network, lambda m: m.get("method", "image") == "image")
    m = run[1] if run else {}
    layers = m.get("layers") or ["first layer", "last layer"]
    first, last = layers[0], layers[-1]
    out = []
    for kind, words in (("translate", "small vertical translations"), ("scale", "small scalings")):
        c = Claim(f"fig5_{kind}", "Fig 5",
                  f"Invariance: the top layer changes less than the first under {words}",
                  f"A = relative distance norm(f(x) - f(x')) / norm(f(x)) at {first} > B = the "
                  f"same at {last}, per photo, mean over the small {kind} amounts",
                  f"invariance/*/metrics.json: transforms.{kind}.distance_<layer>",
                  "qualitative (Fig 5 a2/a3, b2/b3: layer 1 very sensitive, layer 7 quasi-linear)",
                  Side(first, []), Side(last, []), fmt=".3f", network=network, split="photos",
                  note="no `zfnet invariance` run (method=image) on photos")
        t = m.get("transforms", {}).get(kind, {})
        amounts = t.get("amounts") or []
        pick = [j for j, a in enumerate(amounts) if SMALL[kind](a, amounts)]
        pairs = []
        if pick and f"distance_{first}" in t and f"distance_{last}" in t:
            pairs = [(_mean([da[j] for j in pick]), _mean([db[j] for j in pick]))
                     for da, db in zip(t[f"distance_{first}"], t[f"distance_{last}"])]
        out.append(_per_item(c, run, pairs, "photos"))
    c = Claim("fig5_output_rotation", "Fig 5",
              "The output is stable under small translations, less so under rotation",
              "A = mean fall of p(true class) from the untransformed photo over the rotations > "
              "B = the same over the small translations, per photo",
              "invariance/*/metrics.json: transforms.{rotate,translate}.p_true",
              "qualitative (Fig 5 a4, c4: stable for translation, not for rotation except at "
              "symmetric angles)", Side("rotation", []), Side("small translation", []),
              fmt=".3f", network=network, split="photos",
              note="no `zfnet invariance` run (method=image) on photos")
    tr, ro = (m.get("transforms", {}).get(k, {}) for k in ("translate", "rotate"))
    pairs = []
    # the untransformed photo's p: the sweep's amount 0 (an even step count has none)
    ident = [next((j for j, a in enumerate(t.get("amounts") or []) if abs(a) < 1e-6), None)
             for t in (tr, ro)]
    if tr.get("p_true") and ro.get("p_true") and None not in ident:
        t_id, r_id = ident
        small = [j for j, a in enumerate(tr["amounts"]) if SMALL["translate"](a, tr["amounts"])]
        for pt, pr in zip(tr["p_true"], ro["p_true"]):
            pairs.append((_mean([pr[r_id] - p for j, p in enumerate(pr) if j != r_id]),
                          _mean([pt[t_id] - pt[j] for j in small])))
    out.append(_per_item(c, run, pairs, "photos"))
    return out


def real_transfer(root, network: str) -> list[Claim]:
    run = _newest(root, "transfer", network, lambda m: m.get("task") == "fewshot")
    m = run[1] if run else {}
    src = "transfer/*/metrics.json: "
    out = []
    hinge = [r for r in m.get("per_layer") or [] if r.get("classifier") == "hinge"]
    top = hinge[-1] if hinge else None
    best = max(hinge[:4], key=lambda r: r["mean"]) if len(hinge) > 4 else None
    c = Claim("table7_depth", "Table 7",
              "Accuracy rises with depth: the top layer's features beat those of the lower layers",
              f"A = SVM (hinge) accuracy on {top['layer'] if top else 'the last layer'} > B = the "
              "best SVM accuracy of the first four layers measured, per fold",
              src + "per_layer[].{classifier,layer,accuracies}",
              paper_table7(), Side(top["layer"] if top else "top", []),
              Side(f"best of first four ({best['layer']})" if best else "best of first four", []),
              fmt=".1f", network=network, note="no `zfnet transfer` run with 5 or more layers")
    out.append(_per_item(c, run, zip(top["accuracies"], best["accuracies"]) if best else (),
                         "folds"))
    rows = [r for r in m.get("rows", []) if r.get("scratch_accuracies")]
    few, many = (rows[0], rows[-1]) if rows else (None, None)
    note = "no `zfnet transfer` run with the scratch rows (scratch_checkpoint=...)"
    arch = m.get("scratch_architecture") or "our ZFNet"
    for which, r, published in (("few", few, paper_shots("few")),
                                ("many", many, paper_shots("many"))):
        c = Claim(f"transfer_{which}_shots", "Tables 4, 5",
                  f"Pretrained features beat training from scratch with {which} training "
                  "images per class",
                  f"A = mean per-class accuracy, frozen {m.get('layer', 'top layer')} + softmax > "
                  f"B = a net trained from scratch ({arch}), at "
                  f"{r['shots'] if r else 'the fewest/most'} images per class, per fold",
                  src + "rows[].{shots,pretrained_accuracies,scratch_accuracies}", published,
                  Side("pretrained", []), Side("scratch", []), fmt=".1f", network=network,
                  note=note)
        out.append(_per_item(c, run, zip(r["pretrained_accuracies"], r["scratch_accuracies"])
                             if r else (), "folds"))
    gain = Claim("fig9_gain", "Fig 9", "Pretraining helps most when there are few training images",
                 f"A = pretrained - scratch at {few['shots'] if few else 'the fewest'} images per "
                 f"class > B = the same at {many['shots'] if many else 'the most'}, per fold",
                 src + "rows[].{shots,pretrained_accuracies,scratch_accuracies}",
                 paper_gain(), Side(f"gain at {few['shots'] if few else '-'}", []),
                 Side(f"gain at {many['shots'] if many else '-'}", []), fmt=".1f",
                 network=network, note=note if len(rows) != 1 else "one number of shots only")
    pairs = ()
    if len(rows) > 1:
        pairs = [(p0 - s0, p1 - s1) for p0, s0, p1, s1 in
                 zip(few["pretrained_accuracies"], few["scratch_accuracies"],
                     many["pretrained_accuracies"], many["scratch_accuracies"])]
    out.append(_per_item(gain, run, pairs, "folds"))
    return out


REAL_CLAIMS: tuple[Callable[[Path, str], list[Claim]], ...] = (real_fig7, real_fig5,
                                                               real_transfer)


def networks(root: str | Path) -> list[str]:
    """The networks measured by the runs under ``root``: :data:`OURS` first when present, then
    the others in the order their first run was made."""
    seen: dict[str, None] = {}
    for command in ("occlude", "invariance", "transfer", "correspond", "visualize", "ablate"):
        for run in run_folders(Path(root) / command):
            m = _read(run / "metrics.json")
            if m is not None:
                seen.setdefault(network_of(m))
    return sorted(seen, key=lambda n: n != OURS)


def evaluate(root: str | Path) -> list[Claim]:
    """Every claim of :data:`CLAIMS`, judged on the finished runs of our ZFNet under ``root``,
    in the order of the brief (Fig 7, Table 1, Fig 5, Fig 6, Table 3, Table 7, Tables 4/5 and
    Fig 9); then, for each other network the runs measured (the real ImageNet network), the
    claims of :data:`REAL_CLAIMS` on it (see "Which network").

    Args:
        root: an output root (e.g. ``outputs/paper-small``) holding ``<command>/<run>/`` folders.

    Returns:
        list[Claim]: one judged row per claim and network; our network's claims without runs
        are ``not measured`` (and are listed when no other network was measured).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no output root {root} (run the experiments first, e.g. "
                                "make paper-small)")
    found = networks(root)
    rows = [c for make in CLAIMS for c in make(root)] if OURS in found or not found else []
    return rows + [c for net in found if net != OURS for make in REAL_CLAIMS
                   for c in make(root, net)]
