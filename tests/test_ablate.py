"""`zfnet ablate` (Table 3): variant widths by hand, the table, skipping and resuming."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from zfnet_cli.cli import app
from zfnet_cli.config import compose
from zfnet_cli.experiments.ablate import VARIANTS, variant_overrides
from zfnet_cli.model import ZFNet, count_parameters

runner = CliRunner()
PAPER = {"alexnet": "alexnet", "zfnet": "zfnet"}
SMALL = {"alexnet": "small_alexnet", "zfnet": "small"}


def _model(preset):
    return compose("train", [f"model={preset}"]).model


@pytest.mark.parametrize("name, presets, expected", [
    # Table 3 at the paper's scale: the widths are the paper's own numbers.
    ("zfnet_conv512", PAPER, ["model=zfnet", "model.channels=[96,256,512,1024,512]"]),
    ("zfnet_fc8192_conv512", PAPER, ["model=zfnet", "model.fc_widths=[8192,8192]",
                                     "model.channels=[96,256,512,1024,512]"]),
    ("alexnet_fc2048", PAPER, ["model=alexnet", "model.fc_widths=[2048,2048]"]),
    ("alexnet_no_conv34_fc67", PAPER, ["model=alexnet", "model.drop=[conv3,conv4,fc6,fc7]"]),
    # The small presets, scaled in the same proportions: 96, 96, 64 -> 128, 256, 128; 256 -> 512.
    ("zfnet_fc8192_conv512", SMALL, ["model=small", "model.fc_widths=[512,512]",
                                     "model.channels=[32,64,128,256,128]"]),
    ("alexnet_fc2048", SMALL, ["model=small_alexnet", "model.fc_widths=[128,128]"]),
    ("alexnet", SMALL, ["model=small_alexnet"]),
])
def test_variant_overrides_by_hand(name, presets, expected):
    assert variant_overrides(VARIANTS[name], presets, _model) == expected


def test_every_variant_builds_at_paper_scale_and_drops_what_it_says():
    paper = ["experiment=zfnet", "data.root=/nowhere"]
    with torch.device("meta"):  # shapes only: no memory, no init time
        for name, v in VARIANTS.items():
            net = ZFNet(compose("train", paper + variant_overrides(v, PAPER, _model)).model, 1000)
            names = {n for n, _ in net.features.named_children()} \
                | {n for n, _ in net.classifier.named_children()}
            assert not set(v.drop) & names and {"conv1", "conv2", "conv5", "fc8"} <= names, name
        # ZFNet is Fig 3's 62,357,608 parameters; 8192-wide fc6 and fc7 add exactly:
        zf = ZFNet(compose("train", paper).model, 1000)
        wide = ZFNet(compose("train", paper + ["model.fc_widths=[8192,8192]"]).model, 1000)
    extra = ((256 * 6 * 6 + 1) * 4096  # fc6: 4096 more outputs
             + (8192 * 8192 + 8192) - (4096 * 4096 + 4096)  # fc7
             + 4096 * 1000)  # fc8: 4096 more inputs
    assert count_parameters(zf) == 62_357_608
    assert count_parameters(wide) - count_parameters(zf) == extra


def _ablate(tmp_path, *args):
    return runner.invoke(app, ["ablate", "experiment=smoke", f"output_root={tmp_path / 'out'}",
                               "-t", f"data.cache_dir={tmp_path / 'cache'}", *args])


def test_ablate_smoke_table_resume_and_skip(tmp_path):
    res = _ablate(tmp_path)
    assert res.exit_code == 0, res.output
    folder = (tmp_path / "out" / "ablate" / "latest").resolve()
    rows = json.loads((folder / "table3.json").read_text())
    assert [r["variant"] for r in rows] == ["zfnet", "zfnet_fc2048"]
    for r in rows:  # each variant is a normal training run; the table copies its numbers
        m = json.loads((folder / "variants" / r["variant"] / "metrics.json").read_text())
        assert r["parameters"] == m["parameters"]
        assert r["val_top1_err"] == pytest.approx(100 - m["final"]["val_top1"])
        assert r["paper_val_top1_err"] == VARIANTS[r["variant"]].paper[1]
        assert (folder / "variants" / r["variant"] / "checkpoints" / "last.pt").is_file()
    assert rows[1]["parameters"] < rows[0]["parameters"]  # fc6, fc7 at half width
    assert "| ZFNet fc6,7 = 2048 |" in (folder / "table3.md").read_text()

    # Interrupt one variant (its final metrics gone), then continue the same folder with one
    # more variant: the finished one is skipped, the cut one resumed, the new one trained.
    cut = folder / "variants" / "zfnet_fc2048" / "metrics.json"
    before = json.loads(cut.read_text())["final"]
    cut.unlink()
    res = _ablate(tmp_path, "--resume", "latest", "-v", "zfnet", "-v", "zfnet_fc2048",
                  "-v", "zfnet_fc8192")
    assert res.exit_code == 0, res.output
    assert "zfnet: finished earlier, skipped" in res.output and "resumed" in res.output
    assert sorted(p.name for p in (tmp_path / "out" / "ablate").iterdir()) == [folder.name, "latest"]
    m = json.loads((folder / "metrics.json").read_text())
    assert m["skipped"] == ["zfnet"] and m["trained"] == ["zfnet_fc2048", "zfnet_fc8192"]
    assert json.loads(cut.read_text())["final"] == before  # resumed at its end: nothing retrained
    assert len(json.loads((folder / "table3.json").read_text())) == 3
    assert len((folder / "command.txt").read_text().splitlines()) == 2

    # Another process (say, another GPU) trains one more variant into the same folder: the
    # table keeps every finished variant, in Table 3's order, not only the ones it was given.
    res = _ablate(tmp_path, "--resume", str(folder), "-v", "alexnet")
    assert res.exit_code == 0, res.output
    assert [r["variant"] for r in json.loads((folder / "table3.json").read_text())] == [
        "alexnet", "zfnet", "zfnet_fc2048", "zfnet_fc8192"]


def test_ablate_errors_are_one_line(tmp_path):
    res = _ablate(tmp_path, "-v", "zfnet_huge")
    assert res.exit_code == 1
    assert res.output.count("\n") == 1 and "unknown variant(s) zfnet_huge; variants: alexnet," in res.output
    res = _ablate(tmp_path, "--resume", str(tmp_path / "nowhere"))
    assert res.exit_code == 1 and "no ablation folder" in res.output
    res = runner.invoke(app, ["ablate", "--list"])
    assert res.exit_code == 0 and len(res.output.splitlines()) == len(VARIANTS) == 12


def test_ablate_seeds_give_mean_std_and_n(tmp_path):
    """seeds=2: the variant trained with seed 0 (in variants/zfnet, where make paper looks) and
    seed 1 (variants/zfnet_seed1); the table's numbers are their mean, sample std and n."""
    res = _ablate(tmp_path, "-v", "zfnet", "seeds=2")
    assert res.exit_code == 0, res.output
    folder = (tmp_path / "out" / "ablate" / "latest").resolve()
    assert sorted(p.name for p in (folder / "variants").iterdir()) == ["zfnet", "zfnet_seed1"]
    runs = [json.loads((folder / "variants" / n / "metrics.json").read_text())
            for n in ("zfnet", "zfnet_seed1")]
    assert [m["seed"] for m in runs] == [0, 1]
    assert runs[0]["rank_weights_sha1"] != runs[1]["rank_weights_sha1"]  # a seed is a new init
    (row,) = json.loads((folder / "table3.json").read_text())
    errs = [100 - m["final"]["val_top1"] for m in runs]
    assert row["seeds"] == 2 and row["seed_values"] == [0, 1]
    assert row["val_top1_err_values"] == pytest.approx(errs)
    assert row["val_top1_err"] == pytest.approx(sum(errs) / 2)
    assert row["val_top1_err_std"] == pytest.approx(abs(errs[0] - errs[1]) / 2 ** 0.5)  # ddof 1
    line = next(l for l in (folder / "table3.md").read_text().splitlines() if l.startswith("| ZFNet |"))
    assert f"{row['val_top1_err']:.1f} ± {row['val_top1_err_std']:.1f} (38.4)" in line
    assert line.endswith("| 2 |")
    # resuming with seeds=2 finds both seeds finished
    res = _ablate(tmp_path, "--resume", "latest", "-v", "zfnet", "seeds=2")
    assert res.exit_code == 0, res.output
    assert json.loads((folder / "metrics.json").read_text())["skipped"] == ["zfnet", "zfnet_seed1"]


def test_ablate_seeds_below_one_is_one_line(tmp_path):
    res = _ablate(tmp_path, "-v", "zfnet", "seeds=0")
    # the field's bound (zfnet_cli.bounds): a config error, checked before any folder is made
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "seeds=0 is out of bounds: must be >= 1" in res.output
    assert not list((tmp_path / "out" / "ablate").glob("2*"))  # the empty run folder is removed


def _final(val: float, test: float | None) -> dict:
    final = {"train_top1": 50.0, "val_top1": val, "val_top5": 90.0}
    if test is not None:
        final.update(test_top1=test, test_top5=95.0)
    return {"final": final, "parameters": 10, "epochs": 1}


def test_table3_has_test_columns_when_the_variants_were_scored_on_test(tmp_path):
    """Variants trained with eval_test=true get test top-1/top-5 error columns (mean ± std over
    seeds, no paper value: the paper gives none per variant); a variant without a test score
    on every seed shows "-" there, and a table without any test score has no such column."""
    from zfnet_cli.experiments.ablate import table_rows, write_table

    for folder, m in (("zfnet", _final(60.0, 62.0)), ("zfnet_seed1", _final(70.0, 66.0)),
                      ("alexnet", _final(40.0, None))):
        (tmp_path / "variants" / folder).mkdir(parents=True)
        (tmp_path / "variants" / folder / "metrics.json").write_text(json.dumps(m))
    rows = table_rows(tmp_path)
    by = {r["variant"]: r for r in rows}
    assert by["zfnet"]["test_top1_err_values"] == pytest.approx([38.0, 34.0])
    assert by["zfnet"]["test_top1_err"] == pytest.approx(36.0)
    assert by["zfnet"]["test_top1_err_std"] == pytest.approx(8 ** 0.5)  # ddof 1
    assert "test_top1_err" not in by["alexnet"]
    write_table(rows, tmp_path, plot=False)
    lines = (tmp_path / "table3.md").read_text().splitlines()
    assert "| test top-1 | test top-5 |" in lines[2]
    zf = next(l for l in lines if l.startswith("| ZFNet |"))
    assert "| 35.0 ± 7.1 (38.4) | 10.0 ± 0.0 (16.5) | 36.0 ± 2.8 | 5.0 ± 0.0 | 2 |" in zf
    alex = next(l for l in lines if l.startswith("| AlexNet replica |"))
    assert alex.endswith("| - | - | 1 |")
    write_table([by["alexnet"]], tmp_path, plot=False)
    assert "test top-1" not in (tmp_path / "table3.md").read_text()
