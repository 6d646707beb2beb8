"""scripts/readme_claims.py: the README's small-scale block is rewritten from one run's report
(claims.json) and ablation (table3.md, run.json), with the run's provenance; bad input is one
line and leaves the README as it was."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from test_claims import make_root
from zfnet_cli.experiments import report

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("readme_claims",
                                              REPO / "scripts" / "readme_claims.py")
readme_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_claims)

README = ("# Title\n\nbefore\n<!-- paper-small:begin -->\nold numbers\n"
          "<!-- paper-small:end -->\nafter\n")


def _run_root(tmp_path: Path) -> Path:
    root = make_root(tmp_path / "root", seeds=3, good=True)
    ablation = next((root / "ablate").iterdir())
    (ablation / "table3.md").write_text("# Table 3\n\n| variant | val top-1 error |\n|---|---|\n"
                                        "| ZFNet | 40.0 ± 1.0 (n=3) |\n")
    (ablation / "variants" / "zfnet" / "run.json").write_text(json.dumps({
        "git_revision": "abcdef1234567", "started": "2026-11-30T08:10:38", "torch_threads": 2,
        "versions": {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.4.6",
                     "platform": "Linux-x86_64"}}))
    folder = root / "report" / "2026-11-30_10-00-00"
    folder.mkdir(parents=True)
    report.run(report.ReportConfig(root=str(root)), folder)
    os.symlink(folder.name, root / "report" / "latest")
    return root


def test_the_block_is_rewritten_from_the_run(tmp_path):
    root = _run_root(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert readme_claims.main([str(root), "--readme", str(readme), "--wall", "2 h 1 min"]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n<!-- paper-small:begin -->\n")
    assert text.endswith("<!-- paper-small:end -->\nafter\n") and "old numbers" not in text
    assert "commit `abcdef1`, started 2026-11-30T08:10:38 UTC" in text and "2 h 1 min" in text
    claims = json.loads((root / "report" / "latest" / "claims.json").read_text())
    rows = [l for l in text.splitlines() if l.startswith("| ") and "**" in l]
    assert len(rows) == len(claims) and all("| **holds** |" in r for r in rows)
    assert f"Verdicts: {len(claims)} holds." in text
    assert "| ZFNet | 40.0 ± 1.0 (n=3) |" in text
    # a second run of the script gives the same README (the block is replaced, not appended)
    assert readme_claims.main([str(root), "--readme", str(readme), "--wall", "2 h 1 min"]) == 0
    assert readme.read_text() == text


@pytest.mark.parametrize("readme_text", [README, "no markers here\n"])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, readme_text):
    readme = tmp_path / "README.md"
    readme.write_text(readme_text)
    root = _run_root(tmp_path) if readme_text != README else tmp_path / "no-run"
    assert readme_claims.main([str(root), "--readme", str(readme)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("readme_claims: ")
    assert readme.read_text() == readme_text
