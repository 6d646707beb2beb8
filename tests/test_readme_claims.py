"""scripts/readme_claims.py: the README's small-scale blocks (claims and Table 3; the figure
table's "ours" column) are rewritten from one run's report (claims.json), ablation and runs,
with the run's provenance; bad input is one line and leaves the README as it was."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from test_claims import _write, make_root
from zfnet_cli import claims
from zfnet_cli.experiments import report

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_claims",
                                              REPO / "scripts" / "readme_claims.py")
readme_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_claims)

README = ("# Title\n\nbefore\n<!-- paper-small:begin -->\nold numbers\n"
          "<!-- paper-small:end -->\nbetween\n<!-- paper-small-figures:begin -->\nold table\n"
          "<!-- paper-small-figures:end -->\nafter\n")


def _run_root(tmp_path: Path, transfer: bool = True) -> Path:
    """make_root's hand-made run (3 seeds, every claim holding), with what the README reads
    beyond the claims: the variants' test scores and training times, a finished ablation
    (table3.md), an evolution run, a 10-crop evaluation, a multi-label transfer; then its
    report. ``transfer=False``: no transfer runs at all."""
    root = make_root(tmp_path / "root", seeds=3, good=True)
    if not transfer:
        shutil.rmtree(root / "transfer")
    ablation = next((root / "ablate").iterdir())
    for metrics in (ablation / "variants").glob("*/metrics.json"):
        m = json.loads(metrics.read_text())
        m["final"].update(test_top1=m["final"]["val_top1"] - 2.0, test_top5=98.0)
        metrics.write_text(json.dumps(m))
    (ablation / "table3.md").write_text("# Table 3 (as the ablation left it)\n")
    (ablation / "variants" / "zfnet" / "run.json").write_text(json.dumps({
        "git_revision": "abcdef1234567", "started": "2026-11-30T08:10:38", "torch_threads": 2,
        "versions": {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.4.6",
                     "platform": "Linux-x86_64"}}))
    zf = ablation / "variants" / "zfnet"
    _write(root / "visualize" / "2026-01-01_00-01-00",
           {"mode": "evolution", "epochs": [1, 2, 4], "checkpoint": str(zf)}, {"mode": "evolution"})
    _write(root / "train" / "2026-01-01_00-01-00",
           {"eval_only": True, "checkpoint": f"{zf}/checkpoints/last.pt",
            "val": {"10crop": {"top1_err": 33.3, "top5_err": 4.4}}})
    if transfer:
        _write(root / "transfer" / "2026-01-01_00-01-00",
               {"task": "multilabel", "mean_ap": 55.5, "checkpoint": str(zf)}, {"task": "multilabel"})
    folder = root / "report" / "2026-11-30_10-00-00"
    folder.mkdir(parents=True)
    report.run(report.ReportConfig(root=str(root)), folder)
    os.symlink(folder.name, root / "report" / "latest")
    return root


def test_the_blocks_are_rewritten_from_the_run(tmp_path):
    root = _run_root(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert readme_claims.main([str(root), "--readme", str(readme), "--wall", "2 h 1 min"]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n<!-- paper-small:begin -->\n")
    assert "<!-- paper-small:end -->\nbetween\n<!-- paper-small-figures:begin -->\n" in text
    assert text.endswith("<!-- paper-small-figures:end -->\nafter\n")
    assert "old numbers" not in text and "old table" not in text
    claims_block = text.split("<!-- paper-small:end -->")[0]
    figures = text.split("<!-- paper-small-figures:begin -->")[1]
    assert "commit `abcdef1`, started 2026-11-30T08:10:38 UTC" in text and "2 h 1 min" in text
    claims = json.loads((root / "report" / "latest" / "claims.json").read_text())
    rows = [l for l in claims_block.splitlines() if l.startswith("| ") and "**" in l]
    assert len(rows) == len(claims) and all("| **holds** |" in r for r in rows)
    assert f"Verdicts: {len(claims)} holds." in text
    # Table 3 rendered from the variants, with the test columns: ZFNet's val errors are
    # 60.6, 60.0, 59.4 (make_root), its test errors 2 points higher
    zf = next(l for l in claims_block.splitlines() if l.startswith("| ZFNet |"))
    assert "| 60.0 ± 0.6 (38.4) |" in zf and "| 62.0 ± 0.6 | 2.0 ± 0.0 | 3 |" in zf
    assert "as the ablation left it" not in text
    # the figure table: one row per entry, the "ours" cells read from the runs
    table = [l for l in figures.splitlines() if l.startswith("| ") and "---" not in l]
    assert len(table) == 1 + len(readme_claims.FIGURES)
    cell = {l.split(" | ")[0][2:]: l.split(" | ")[3] for l in table[1:]}
    assert cell["Fig 7, occlusion"].endswith(
        "on object 0.80 ± 0.01 vs chance 0.45 ± 0.00 (n=3, val split): holds")
    assert cell["Table 3, ablation"].startswith("test top-1 error: ZFNet 62.0 ± 0.6 (n=3), "
                                                "AlexNet replica ")
    assert "conv2 60.0 ± 0.6" in cell["Table 7, features per layer"]
    assert "fc7 80.0 ± 0.8 (n=3)" in cell["Table 7, features per layer"]
    assert cell["Table 6, PASCAL VOC"] == "multi-label on the held-out classes: mean AP 55.5 (n=1, single run)"
    assert cell["§3, training recipe"] == (
        "small ZFNet, 85 classes, 4 epochs: test top-1 error 62.0 ± 0.6% (n=3)")
    assert "10 crops, seed 0 only: ZFNet 33.3 / 4.4" in cell["Table 2, ImageNet val error"]
    assert cell["Fig 4, feature evolution"] == "kept epochs 1, 2, 4 of seed 0's ZFNet"
    assert cell["Fig 3, model"].startswith("not in this run: ")
    assert "rebuilt" not in text  # the report's own run.json is absent here
    (root / "report" / "latest" / "run.json").write_text(json.dumps({"git_revision": "1234567abc"}))
    assert readme_claims.main([str(root), "--readme", str(readme), "--wall", "2 h 1 min"]) == 0
    text = readme.read_text()
    assert "rebuilt from the run's files by `zfnet report` at commit `1234567`" in text
    # a second run of the script gives the same README (the blocks are replaced, not appended)
    assert readme_claims.main([str(root), "--readme", str(readme), "--wall", "2 h 1 min"]) == 0
    assert readme.read_text() == text


def test_missing_runs_say_not_measured(tmp_path):
    root = _run_root(tmp_path, transfer=False)
    table = readme_claims.figure_table(root)
    cell = {l.split(" | ")[0][2:]: l.split(" | ")[3] for l in table.splitlines()[2:]}
    assert cell["Table 7, features per layer"] == "not measured"
    assert cell["Table 6, PASCAL VOC"] == "not measured"
    assert cell["Tables 4, 5, Fig 9, transfer"] == (
        "not measured; not measured; gain few vs many: not measured")


@pytest.mark.parametrize("readme_text", [README, "no markers here\n"])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, readme_text):
    readme = tmp_path / "README.md"
    readme.write_text(readme_text)
    root = _run_root(tmp_path) if readme_text != README else tmp_path / "no-run"
    assert readme_claims.main([str(root), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("readme_claims: ")
    assert readme.read_text() == readme_text


REAL_README = ("# Title\n<!-- paper-small:begin -->\nsmall\n<!-- paper-small:end -->\n"
               "<!-- claims-real:begin -->\nold real\n<!-- claims-real:end -->\nafter\n")


def _real_root(tmp_path: Path, good: bool) -> Path:
    """A make claims-real root (hand-made runs of the real network), its first run's run.json,
    and its report."""
    from test_claims_real import make_real_root

    root = make_real_root(tmp_path / "real", good)
    (next((root / "invariance").iterdir()) / "run.json").write_text(json.dumps({
        "git_revision": "fedcba9876543", "started": "2026-12-06T19:03:00", "torch_threads": 2,
        "versions": {"torch": "2.14.1", "torchvision": "0.29.1", "platform": "Linux-x86_64"}}))
    folder = root / "report" / "2026-12-06_19-30-00"
    folder.mkdir(parents=True)
    report.run(report.ReportConfig(root=str(root)), folder)
    os.symlink(folder.name, root / "report" / "latest")
    return root


@pytest.mark.parametrize("good,verdict", [(True, "holds"), (False, "does not hold")])
def test_the_real_block_is_written_from_one_claims_real_run(tmp_path, good, verdict):
    root = _real_root(tmp_path, good)
    readme = tmp_path / "README.md"
    readme.write_text(REAL_README)
    assert readme_claims.main(["--real", str(root), "--readme", str(readme),
                               "--real-wall", "27 min"]) == 0
    text = readme.read_text()
    assert "small\n" in text and "old real" not in text and text.endswith("-->\nafter\n")
    real = text.split("<!-- claims-real:begin -->")[1].split("<!-- claims-real:end -->")[0]
    assert "EfficientNet-Lite0, ImageNet weights: commit `fedcba9`, started 2026-12-06T19:03:00" in real
    assert "27 min" in real
    rows = [l for l in real.splitlines() if l.startswith("| ") and "**" in l]
    assert len(rows) == 8 and all(f"| **{verdict}** |" in r for r in rows)
    assert "(n=8 photos)" in rows[0] and "(n=5 folds)" in rows[-1]
    assert f"Verdicts: 8 {verdict}." in real


def test_the_small_block_leaves_out_the_real_rows(tmp_path):
    from test_claims_real import make_real_root

    root = _run_root(tmp_path)
    make_real_root(root, True)  # the same root also holds runs of the real network
    folder = root / "report" / "2026-11-30_11-00-00"
    folder.mkdir()
    report.run(report.ReportConfig(root=str(root)), folder)
    (root / "report" / "latest").unlink()
    os.symlink(folder.name, root / "report" / "latest")
    run = readme_claims.load(root)
    assert len(run.claims) == 14
    assert all(c["network"] == claims.OURS for c in run.claims.values())


def test_real_root_without_real_rows_is_one_line(tmp_path, capsys):
    root = _run_root(tmp_path)  # ours only
    readme = tmp_path / "README.md"
    readme.write_text(REAL_README)
    assert readme_claims.main(["--real", str(root), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no row measured on a network other than ours" in err
    assert readme.read_text() == REAL_README


def test_the_paper_column_is_read_from_the_paper_module(monkeypatch):
    """The figure table's paper numbers come from zfnet_cli.paper: a fresh copy of the script
    loaded with changed published numbers shows them."""
    from zfnet_cli import paper

    monkeypatch.setitem(paper.TABLE2, "zfnet", (12.5, 6.5))
    monkeypatch.setitem(paper.TABLE3, "alexnet_no_conv34_fc67", (1.0, 77.7, 2.0))
    monkeypatch.setattr(paper, "VOC_MEAN", 66.6)
    fresh = importlib.util.module_from_spec(spec)  # a separate module: the shared one is untouched
    spec.loader.exec_module(fresh)
    column = {row[0]: row[2] for row in fresh.FIGURES}
    assert column["Table 2, ImageNet val error"] == "12.5 / 6.5 top-1 / top-5 error"
    assert column["Table 3, ablation"].endswith("- layers 3,4,6,7 77.7")
    assert column["Table 6, PASCAL VOC"].startswith("66.6 mean AP")
