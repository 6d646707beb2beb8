"""`zfnet report` over a miniature `make paper-small`: the ablation's ZFNet and AlexNet variants
give Table 2 and the model the other runs look at; the report gathers their tables (the paper's
numbers beside ours) and copies their figures."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from zfnet_cli.cli import app

runner = CliRunner()


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_report_of_a_miniature_paper_run(tmp_path):
    root = tmp_path / "paper"
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    _ok(["ablate", "experiment=smoke", "-v", "zfnet", "-v", "alexnet", f"output_root={root}",
         "-t", cache, "plot=true"])
    variants = (root / "ablate" / "latest").resolve() / "variants"
    for name in ("zfnet", "alexnet"):
        _ok(["train", "--eval-only", "--checkpoint", str(variants / name), "--eval-crops", "10",
             f"output_root={root}"])
    _ok(["transfer", "experiment=smoke", f"checkpoint={variants / 'zfnet'}", f"output_root={root}",
         "plot=true"])
    res = _ok(["report", str(root), f"output_root={tmp_path / 'reports'}"])
    folder = (tmp_path / "reports" / "report" / "latest").resolve()
    assert f"results in {folder}" in res.output
    text = (folder / "report.md").read_text()

    # Table 2: centre crop after training (from the ablation) and both crops of the eval runs,
    # the paper's 38.4 / 16.5 beside ZFNet's rows
    m = json.loads((variants / "zfnet" / "metrics.json").read_text())["final"]
    assert f"| zfnet | centre crop, after training | {100 - m['val_top1']:.1f} |" in text
    assert text.count("evaluation run") == 4 and "| 38.4 / 16.5 |" in text
    # the runs' own tables, with the paper's numbers, and their figures copied beside
    assert "### Table 3: architecture ablation" in text and "| ZFNet | " in text
    assert "### Tables 4, 5: transfer to embedded held-out" in text and "### Table 7" in text
    copied = sorted(p.name for p in (folder / "figures").iterdir())
    assert any(n.endswith("table3.png") for n in copied) and any(n.endswith("fig9.png") for n in copied)
    for name in copied:
        assert f"(figures/{name})" in text
    # the same report as a web page: every section, table and figure
    page = (folder / "index.html").read_text()
    assert page.count("<h2 ") == text.count("\n## ") and page.count("<table>") == text.count("\n|---")
    for name in copied:
        assert f'src="figures/{name}"' in page
    # what was not run says so, section by section
    assert text.count("_No finished run found._") == 6  # Figs 2, 4, 5, 6, 7, 8
    assert json.loads((folder / "metrics.json").read_text())["missing"] == 6
    # the claims read the real runs' keys: one seed of each, so 'single run' where measured
    claims = {c["key"]: c for c in json.loads((folder / "claims.json").read_text())}
    zf = claims["table3_zfnet_vs_alexnet"]
    assert zf["verdict"] == "single run" and zf["a_values"] == [100 - json.loads(
        (variants / "alexnet" / "metrics.json").read_text())["final"]["val_top1"]]
    transfer = [c for k, c in claims.items() if k.startswith(("table7", "transfer_", "fig9"))]
    assert transfer and {c["verdict"] for c in transfer} <= {"single run", "not measured"}
    assert claims["table7_depth (embedded held-out (train))"]["verdict"] == "single run"
    assert claims["fig7_localisation"]["verdict"] == "not measured"
    assert "\n## Claims\n" in text and "| **single run** |" in text


def test_report_without_runs_is_one_line(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path / "none"), f"output_root={tmp_path}"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "no output root" in res.output


def test_report_html_renders_any_section(tmp_path):
    """index.html follows report.md whatever its sections (a later "claims" section too)."""
    from zfnet_cli.experiments.report import write_html

    (tmp_path / "report.md").write_text(
        "# My report\n\n## Claims\n\n| claim | holds |\n|---|---|\n| parts < random | yes |\n\n"
        "## Fig 2\n\nRun: `outputs/x`\n\n![fig2](figures/a.png)\n")
    page = write_html(tmp_path).read_text()
    assert "<title>My report</title>" in page and '<h2 id="claims">Claims</h2>' in page
    assert "<td>parts &lt; random</td><td>yes</td>" in page and 'src="figures/a.png"' in page
    assert '<a href="#claims">Claims</a>' in page and '<a href="#fig-2">Fig 2</a>' in page
