"""The claims report on hand-made output roots: one where every claim must hold (3 seeds, clear
differences), one where none may (3 seeds, differences inside the spread or reversed), one with
a single seed (never 'holds'), and an empty one (nothing measured); then the report's Claims
section and files built from them."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from zfnet_cli import claims
from zfnet_cli.runs import run_folders
from zfnet_cli.claims import Claim, Side, evaluate, judge
from zfnet_cli.experiments import report

TARGET = "embedded held-out (train)"


def _write(folder: Path, metrics: dict, config: dict | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if config is not None:  # the report's own sections read config.yaml
        import yaml

        (folder / "config.yaml").write_text(yaml.safe_dump(config))


def make_root(root: Path, seeds: int, good: bool) -> Path:
    """An output root as `make paper-small` with `seeds` seeds would leave it: per seed one
    occlude, correspond, invariance, visualize --filters and transfer run on that seed's ZFNet,
    and one ablation holding every seed of four variants. ``good``: every claim's A exceeds its B
    by far more than the seed-to-seed jitter; else A is at most B plus less than the jitter."""
    def ab(k: int, a: float, b: float, bad_b: float | None = None):
        """(A, B) for seed k: jitter +-0.01 * scale keeps a spread on both sides."""
        j = (k - (seeds - 1) / 2) * 0.01
        return (a + j * a, b - j * b) if good else (a + j * a, (bad_b if bad_b is not None else a) - j * b)

    abl = root / "ablate" / "2026-01-01_00-00-00"
    for k in range(seeds):
        run = f"2026-01-01_00-00-{k + 1:02d}"
        ck = f"{abl}/variants/zfnet{'' if k == 0 else f'_seed{k}'}/checkpoints/last.pt"
        inside, chance = ab(k, 0.80, 0.45)
        _write(root / "occlude" / run, {"checkpoint": ck, "localisation": {
            "images": 100, "fraction_inside": inside, "chance_inside": chance}})
        table = {}
        for layer in ("conv5", "fc7"):
            rnd, parts = ab(k, 0.36, 0.30)
            table.setdefault("random", {})[layer] = {"mean": rnd, "std": 0.01}
            for part in ("right_eye", "left_eye", "nose"):
                table.setdefault(part, {})[layer] = {"mean": parts, "std": 0.01}
        _write(root / "correspond" / run, {"checkpoint": ck, "table": table})
        c1, f7 = ab(k, 0.60, 0.20)
        # amounts -4..4 (small: +-2) and 1..1.8 (small: 1.2, 1.4): the large amounts carry
        # distances that would reverse every verdict if they were counted
        transforms = {
            "translate": {"amounts": [-4.0, -2.0, 0.0, 2.0, 4.0],
                          "distance_conv1": [[0.0, c1, 0.0, c1, 0.0]] * 5,
                          "distance_fc7": [[9.0, f7, 0.0, f7, 9.0]] * 5},
            "scale": {"amounts": [1.0, 1.2, 1.4, 1.6, 1.8],
                      "distance_conv1": [[0.0, c1, c1, 0.0, 0.0]] * 5,
                      "distance_fc7": [[0.0, f7, f7, 9.0, 9.0]] * 5}}
        _write(root / "invariance" / run, {"checkpoint": ck, "layers": ["conv1", "fc7"],
                                           "transforms": transforms})
        dead_a, dead_z = ab(k, 0.25, 0.05)
        mid_z, mid_a = ab(k, 0.28, 0.18)
        dom_n, dom_z = ab(k, 6.0, 1.5)

        def model(kernel, stride, renorm, dead, mid, dom, name):
            return {"kernel": kernel, "stride": stride, "renorm": renorm, "filters": 32,
                    "dead": round(dead * 32), "dominance": dom, "checkpoint": f"{ck}:{name}",
                    "spectral_energy": {"low": 0.2, "mid": mid, "high": 0.8 - mid}}

        _write(root / "visualize" / run, {"mode": "filters", "models": {
            "small_alexnet conv1 11x11/4": model(11, 4, True, dead_a, mid_a, 1.5, "a"),
            "small conv1 7x7/2": model(7, 2, True, dead_z, mid_z, dom_z, "z"),
            "small conv1 7x7/2, no renorm": model(7, 2, False, dead_z, mid_z, dom_n, "n")}},
            {"mode": "filters"})
        fc7, lower = ab(k, 80.0, 60.0)
        pre1, scr1 = ab(k, 50.0, 20.0)
        pre20, scr20 = ab(k, 72.0, 60.0, bad_b=72.0)
        if not good:  # the gain at 1 shot must not exceed the gain at 20 either
            pre1, scr1 = pre20, scr20
        per_layer = [{"classifier": "hinge", "layer": l, "mean": v} for l, v in
                     (("conv1", lower - 20), ("conv2", lower), ("conv3", lower - 5),
                      ("conv4", lower - 1), ("conv5", fc7), ("fc7", fc7))]
        per_layer.append({"classifier": "softmax", "layer": "conv1", "mean": 99.0})  # not the SVM
        _write(root / "transfer" / run, {
            "task": "fewshot", "target": TARGET, "checkpoint": ck, "per_layer": per_layer,
            "scratch_seeds": [1000 * k, 1000 * k + 1],  # each seed's own scratch nets
            "rows": [{"shots": 1, "pretrained_mean": pre1, "scratch_mean": scr1},
                     {"shots": 20, "pretrained_mean": pre20, "scratch_mean": scr20}]},
            {"target": "embedded", "task": "auto"})
        # Table 3: val errors; AlexNet > ZFNet, - layers 3,4,6,7 worst of all
        errs = {"alexnet": ab(k, 66.0, 60.0)[0], "zfnet": ab(k, 66.0, 60.0)[1],
                "alexnet_no_conv34": 70.0 + k * 0.3 if good else 90.5 - k * 0.3,
                "alexnet_no_conv34_fc67": 90.0 - k * 0.3}
        for name, err in errs.items():
            _write(abl / "variants" / (name if k == 0 else f"{name}_seed{k}"),
                   {"seed": k, "parameters": 1000, "epochs": 4, "num_classes": 85,
                    "final": {"val_top1": 100 - err, "val_top5": 99.0, "train_top1": 50.0}})
    return root


def test_the_rule_by_hand():
    # A = 3, 3.2, 2.9 (mean 3.0333, std 0.1528); B = 1, 1.1, 0.9 (mean 1, std 0.1)
    c = judge(Claim("k", "Fig 0", "A beats B", "A > B", "-", "-",
                    Side("A", [3.0, 3.2, 2.9]), Side("B", [1.0, 1.1, 0.9])))
    assert c.verdict == "holds"
    assert c.difference == pytest.approx(2.0333333, abs=1e-6)
    assert c.spread == pytest.approx(math.sqrt(0.07 / 3) + 0.1, abs=1e-6)
    # the same means with spreads that overlap: the difference 0.2 is inside 0.5 + 0.5
    c = judge(Claim("k", "", "", "", "", "", Side("A", [1.7, 1.2, 0.7]), Side("B", [1.5, 1.0, 0.5])))
    assert c.verdict == "does not hold" and "within the spread" in c.detail
    c = judge(Claim("k", "", "", "", "", "", Side("A", [0.0, 0.1]), Side("B", [5.0, 5.1])))
    assert c.verdict == "does not hold" and "opposite" in c.detail
    # one seed: never 'holds', however large the difference
    c = judge(Claim("k", "", "", "", "", "", Side("A", [100.0]), Side("B", [0.0])))
    assert c.verdict == "single run" and c.spread is None and "+100" in c.detail
    c = judge(Claim("k", "", "", "", "", "", Side("A", []), Side("B", []), note="why not"))
    assert c.verdict == "not measured" and c.detail == "why not"


def test_every_claim_holds_on_clear_differences(tmp_path):
    rows = evaluate(make_root(tmp_path, seeds=3, good=True))
    assert {r.verdict for r in rows} == {"holds"}, [(r.key, r.verdict, r.detail) for r in rows]
    keys = [r.key for r in rows]
    assert keys == ["fig7_localisation", "table1_layer5", "table1_layer7", "fig5_translate",
                    "fig5_scale", "fig6_dead_filters", "fig6_mid_frequency", "fig6_renorm",
                    "table3_zfnet_vs_alexnet", "table3_no_conv34_fc67_worst",
                    f"table7_depth ({TARGET})", f"transfer_few_shots ({TARGET})",
                    f"transfer_many_shots ({TARGET})", f"fig9_gain ({TARGET})"]
    assert all(r.n == 3 for r in rows)
    by = {r.key: r for r in rows}
    # by hand: Fig 5 reads only the small amounts (the 9.0 at large ones would reverse it)
    assert by["fig5_translate"].a.mean == pytest.approx(0.60) and by["fig5_translate"].b.mean == pytest.approx(0.20)
    # Table 7: the best SVM of conv1-4 (conv2 = 60), not the softmax's 99
    assert by[f"table7_depth ({TARGET})"].b.values == pytest.approx([60.6, 60.0, 59.4])
    # Table 3: the next-worst variant is found by its mean error
    assert by["table3_no_conv34_fc67_worst"].b.label == "next worst (alexnet_no_conv34)"
    assert by["fig9_gain (" + TARGET + ")"].a.mean == pytest.approx(30.0)
    assert "± " in by["fig7_localisation"].ours and "(n=3)" in by["fig7_localisation"].ours


def test_no_claim_holds_inside_the_spread(tmp_path):
    rows = evaluate(make_root(tmp_path, seeds=3, good=False))
    assert {r.verdict for r in rows} == {"does not hold"}, [(r.key, r.verdict, r.detail) for r in rows]


def test_one_seed_is_a_single_run_never_holds(tmp_path):
    rows = evaluate(make_root(tmp_path, seeds=1, good=True))
    assert {r.verdict for r in rows} == {"single run"}
    assert all("claimed direction" in r.detail for r in rows)


def test_reruns_on_one_checkpoint_count_once(tmp_path):
    root = make_root(tmp_path, seeds=1, good=True)
    first = json.loads((root / "occlude" / "2026-01-01_00-00-01" / "metrics.json").read_text())
    first["localisation"]["fraction_inside"] = 0.1  # a newer run on the same model
    _write(root / "occlude" / "2026-01-02_00-00-00", first)
    (c,) = claims.fig7_localisation(root)
    assert c.verdict == "single run" and c.a.values == [0.1]  # the newest, not a second seed


def test_empty_root_measures_nothing(tmp_path):
    rows = evaluate(tmp_path)
    assert rows and {r.verdict for r in rows} == {"not measured"}
    assert all(r.detail for r in rows)  # each says what run it needs
    with pytest.raises(FileNotFoundError, match="no output root"):
        evaluate(tmp_path / "missing")


@pytest.mark.parametrize("seeds, good, verdict", [(3, True, "holds"), (3, False, "does not hold"),
                                                  (1, True, "single run")])
def test_report_claims_section_and_files(tmp_path, seeds, good, verdict):
    root = make_root(tmp_path / "root", seeds=seeds, good=good)
    folder = tmp_path / "report"
    folder.mkdir()
    metrics = report.run(report.ReportConfig(root=str(root)), folder)
    expected = len(evaluate(root))
    assert metrics["claims"][verdict] == expected
    text = (folder / "report.md").read_text()
    section = text[text.index("\n## Claims\n"):]
    rows = [l for l in section.splitlines() if l.startswith("| ") and "---" not in l][1:]
    assert len(rows) == expected
    assert all(f"| **{verdict}** |" in r for r in rows)
    assert "| Fig 7 | Occlusion localises the object" in section
    assert "Rule: A claim holds when mean(A) - mean(B) > std(A) + std(B)" in section
    saved = json.loads((folder / "claims.json").read_text())
    assert [r["verdict"] for r in saved] == [verdict] * expected
    assert {"a_mean", "a_std", "a_n", "b_values", "source", "paper", "runs"} <= set(saved[0])
    header = (folder / "claims.csv").read_text().splitlines()[0]
    assert header.startswith("key,where,claim,measure,source,paper")


def test_claims_over_two_seeds_of_real_runs(tmp_path):
    """End to end at smoke scale: an ablation with seeds=2 (tiny ZFNet and an 11x11/4 AlexNet),
    then each figure's command on each seed's ZFNet; every claim with runs is judged on n = 2
    (a verdict, never 'single run'), its values are the runs' own numbers."""
    from typer.testing import CliRunner

    from zfnet_cli.cli import app

    runner = CliRunner()
    root = tmp_path / "root"
    out = f"output_root={root}"

    def ok(*args):
        res = runner.invoke(app, list(args))
        assert res.exit_code == 0, res.output

    ok("ablate", "experiment=smoke", "-v", "alexnet", "-v", "zfnet", "seeds=2", out,
       "presets.alexnet=small_alexnet", "-t", f"data.cache_dir={tmp_path / 'cache'}",
       "-t", "model.channels=[8,16,16,16,16]", "-t", "model.fc_widths=[32,32]")
    variants = (root / "ablate" / "latest").resolve() / "variants"
    for zf, alex in (("zfnet", "alexnet"), ("zfnet_seed1", "alexnet_seed1")):
        z = f"checkpoint={variants / zf}"
        ok("occlude", "experiment=smoke", "localise=true", z, out)
        ok("correspond", "experiment=smoke", z, out)
        ok("invariance", "experiment=smoke", "steps_translate=5", z, out)
        ok("transfer", "experiment=smoke", z, out)
        ok("visualize", "experiment=smoke", "--filters", "--compare", str(variants / alex),
           str(variants / zf), out)
    rows = {r.key: r for r in evaluate(root)}
    measured = {k: r for k, r in rows.items() if r.verdict != "not measured"}
    assert set(rows) - set(measured) == {"fig6_renorm", "table3_no_conv34_fc67_worst"}
    for r in measured.values():
        # the transfer rows too: each pretraining seed trains its own scratch nets
        # (transfer.scratch_seed), so the scratch side has two replicates like the rest
        assert r.n == 2 and r.verdict in ("holds", "does not hold"), (r.key, r.verdict, r.detail)
    errs = [100 - json.loads((variants / f / "metrics.json").read_text())["final"]["val_top1"]
            for f in ("zfnet", "zfnet_seed1")]
    assert measured["table3_zfnet_vs_alexnet"].b.values == pytest.approx(errs)
    locs = [json.loads((run / "metrics.json").read_text())["localisation"]["fraction_inside"]
            for run in run_folders(root / "occlude")]
    assert measured["fig7_localisation"].a.values == pytest.approx(locs)


# ---------------------------------------------------------------- which split (tune on val, read the claims on test)

SPLIT_READ = ("fig7_localisation", "table1_layer5", "table1_layer7", "fig5_translate", "fig5_scale")


def _test_split_runs(good: Path, root: Path, older: bool = True, seeds=None) -> None:
    """Copy the occlude, correspond and invariance runs of ``good`` into ``root`` as test-split
    runs on the same checkpoints, dated before (``older``) or after ``root``'s own."""
    for command in ("occlude", "correspond", "invariance"):
        for run in run_folders(good / command):
            k = int(run.name[-2:]) - 1
            if seeds is not None and k not in seeds:
                continue
            m = json.loads((run / "metrics.json").read_text())
            m["checkpoint"] = m["checkpoint"].replace(str(good), str(root))  # the same model
            day = "2025-12-31" if older else "2026-01-02"
            _write(root / command / f"{day}_00-00-{k + 1:02d}", {**m, "split": "test"})


def test_the_claims_follow_the_test_split_runs(tmp_path):
    """Per checkpoint a val run (newer, the claim does not hold on it) and a test run (older,
    it holds): the rows read the test run and say so."""
    good = make_root(tmp_path / "good", seeds=3, good=True)
    root = make_root(tmp_path / "root", seeds=3, good=False)  # no split key: val runs
    before = {r.key: r for r in evaluate(root)}
    for key in SPLIT_READ:
        assert before[key].verdict == "does not hold" and before[key].split == "val"
        assert before[key].source.endswith("(val split)")
    _test_split_runs(good, root, older=True)
    after = {r.key: r for r in evaluate(root)}
    expected = {r.key: r for r in evaluate(good)}
    for key in SPLIT_READ:
        r = after[key]
        assert r.verdict == "holds" and r.split == "test", (key, r.verdict, r.detail)
        assert r.source.endswith("(test split)")
        assert r.a.values == expected[key].a.values and r.b.values == expected[key].b.values
        assert all("2025-12-31" in run for run in r.runs)
    # the other rows are not read from these commands: unchanged
    assert after["table7_depth (" + TARGET + ")"].split == ""


def test_a_val_run_is_read_where_a_checkpoint_has_no_test_run(tmp_path):
    good = make_root(tmp_path / "good", seeds=3, good=True)
    root = make_root(tmp_path / "root", seeds=3, good=False)
    _test_split_runs(good, root, older=False, seeds={0})  # seed 0 only, newer
    (c,) = claims.fig7_localisation(root)
    assert c.n == 3 and c.split == "test+val"
    assert c.source.endswith("(test split: 1, val split: 2)")
    assert c.a.values[2] == pytest.approx(0.80 - 0.01 * 0.80)  # seed 0 of the good root, read last
    # and the newest of two test runs on one checkpoint wins over an older test run
    m = json.loads((root / "occlude" / "2026-01-02_00-00-01" / "metrics.json").read_text())
    m["localisation"]["fraction_inside"] = 0.55
    _write(root / "occlude" / "2026-01-03_00-00-00", m)
    _write(root / "occlude" / "2026-01-04_00-00-00",  # a newer val run does not displace it
           {**m, "split": "val", "localisation": {**m["localisation"], "fraction_inside": 0.01}})
    (c,) = claims.fig7_localisation(root)
    assert c.a.values[2] == 0.55


def _add_test_top1(root: Path, err: dict[str, float], skip: str | None = None) -> None:
    for folder in sorted((root / "ablate").glob("*/variants/*")):
        if folder.name == skip:
            continue
        m = json.loads((folder / "metrics.json").read_text())
        name = folder.name.split("_seed")[0]
        m["final"]["test_top1"] = 100 - err[name] - 0.1 * m["seed"]
        (folder / "metrics.json").write_text(json.dumps(m))


def test_table3_reads_test_top1_when_every_replicate_has_it(tmp_path):
    root = make_root(tmp_path, seeds=3, good=False)  # on val: no Table 3 claim holds
    assert {c.verdict for c in claims.table3(root)} == {"does not hold"}
    err = {"alexnet": 66.0, "zfnet": 60.0, "alexnet_no_conv34": 70.0,
           "alexnet_no_conv34_fc67": 90.0}
    _add_test_top1(root, err, skip="zfnet_seed2")  # one replicate without: still val
    zf, worst = claims.table3(root)
    assert zf.split == "val" and "final.val_top1" in zf.source and zf.verdict == "does not hold"
    _add_test_top1(root, err)
    zf, worst = claims.table3(root)
    assert zf.split == worst.split == "test" and zf.verdict == worst.verdict == "holds"
    assert "final.test_top1" in zf.source and zf.source.endswith("(test split)")
    assert zf.measure.startswith("A = test top-1 error")
    # by hand: error = 100 - test_top1 = err + 0.1 * seed
    assert zf.a.values == pytest.approx([66.0, 66.1, 66.2])
    assert zf.b.values == pytest.approx([60.0, 60.1, 60.2])
    assert worst.b.label == "next worst (alexnet_no_conv34)"


def _set_scratch(root: Path, accuracies, legacy: bool = False) -> None:
    """Give every transfer run of ``root`` scratch results: ``accuracies(k)`` per run k (folds);
    ``legacy``: without ``scratch_seeds``, as runs made before the key (fold seeds only)."""
    for k, run in enumerate(sorted((root / "transfer").iterdir())):
        m = json.loads((run / "metrics.json").read_text())
        if legacy:
            del m["scratch_seeds"]
        for row in m["rows"]:
            accs = accuracies(k, row["shots"])
            row.update(scratch_accuracies=accs, scratch_mean=sum(accs) / len(accs))
        (run / "metrics.json").write_text(json.dumps(m))


def test_a_scratch_side_repeated_over_the_seeds_counts_once(tmp_path):
    """Transfer runs on three pretraining seeds made before scratch_seeds existed (their scratch
    nets seeded by fold alone, so identical): the scratch side is one replicate, so
    pretrained-vs-scratch is a single run (n = 3 / 1) and so is the gain, however large the
    difference; with each seed's own scratch seeds (make_root's runs) the rows hold, even
    where the scratch accuracies happen to be equal (a tiny net at chance)."""
    root = make_root(tmp_path / "same", seeds=3, good=True)
    _set_scratch(root, lambda k, shots: [10.0, 12.0] if shots == 1 else [50.0, 52.0], legacy=True)
    rows = {r.key.split(" (")[0]: r for r in evaluate(root)}
    few, many, gain = (rows[k] for k in ("transfer_few_shots", "transfer_many_shots", "fig9_gain"))
    for c in (few, many):
        assert c.verdict == "single run" and (c.a.n, c.b.n) == (3, 1)
        assert "one computation repeated" in c.detail
    assert few.b.values == [11.0] and few.difference == pytest.approx(50.0 - 11.0)
    assert "n=3 / 1" in few.ours
    assert gain.verdict == "single run" and "one computation repeated" in gain.detail
    assert rows["table7_depth"].verdict == "holds"  # no scratch there: unaffected
    root = make_root(tmp_path / "seeded", seeds=3, good=True)
    _set_scratch(root, lambda k, shots: [10.0 + k, 12.0] if shots == 1 else [50.0, 52.0])
    rows = {r.key.split(" (")[0]: r for r in evaluate(root)}
    assert [rows[k].verdict for k in ("transfer_few_shots", "transfer_many_shots")] == ["holds"] * 2
    assert rows["transfer_few_shots"].b.n == rows["transfer_many_shots"].b.n == 3
    assert rows["transfer_many_shots"].b.std == 0.0  # equal results, still three seeds


def test_the_paper_side_is_read_from_the_paper_module(tmp_path, monkeypatch):
    """Each claim's paper value comes from zfnet_cli.paper (written once there): a changed
    published number shows in the claims that compare it."""
    from zfnet_cli import paper

    monkeypatch.setitem(paper.TABLE3, "alexnet", (1.0, 12.3, 4.0))
    monkeypatch.setitem(paper.TABLE1, "random", {"conv5": (0.321, 0.0), "fc7": (0.654, 0.0)})
    monkeypatch.setitem(paper.TABLE7, "caltech101", {**paper.TABLE7["caltech101"],
                                                     ("hinge", "fc7"): 99.1})
    monkeypatch.setitem(paper.FEWSHOT, "caltech256", {"pretrained": {15: (50.5, None),
                                                                     60: (60.0, None)},
                                                      "scratch": {15: (0.5, None),
                                                                  60: (20.0, None)}})
    rows = {r.key: r.paper for r in evaluate(tmp_path)}
    assert rows["table3_zfnet_vs_alexnet"] == f"12.3 vs {paper.TABLE3['zfnet'][1]}"
    assert rows["table1_layer5"].endswith("vs random 0.321")
    assert rows["table1_layer7"].endswith("vs random 0.654")
    assert rows["table7_depth"].startswith("Caltech-101: 99.1 (layer 7)")
    assert rows["transfer_few_shots"].endswith("Caltech-256 at 15: 50.5 vs 0.5")
    assert rows["fig9_gain"].endswith("Caltech-256: 50.0 at 15 vs 40.0 at 60")
