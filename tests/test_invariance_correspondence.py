"""Fig 5 (invariance) and Fig 8 / Table 1 (correspondence): hand cases for the cores, and the
commands end to end on the shared smoke model."""
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zfnet_cli.cli import app
from zfnet_cli.correspondence import occlude_regions, sign_consistency, square_mask
from zfnet_cli.invariance import paper_amounts, relative_distance, transform_image

runner = CliRunner()


def test_transforms_move_pixels_the_right_way():
    img = torch.zeros(3, 9, 9, dtype=torch.uint8)
    img[:, 0, 4] = 255  # one bright pixel, top centre
    down = transform_image(img, "translate", 2, [0, 0, 0])
    assert (down[0] > 100).nonzero().tolist() == [[2, 4]]
    ccw = transform_image(img, "rotate", 90, [0, 0, 0])  # counter-clockwise: top -> left
    assert (ccw[0] > 100).nonzero().tolist() == [[4, 0]]
    assert torch.equal(transform_image(img, "scale", 1.0, [0, 0, 0]), img)
    big = torch.zeros(3, 9, 9, dtype=torch.uint8)
    big[:, 3:6, 3:6] = 200
    zoomed = transform_image(big, "scale", 2.0, [7, 7, 7])  # the centre 3x3 grows to ~6x6
    assert 25 <= int((zoomed[0] > 100).sum()) <= 49
    assert transform_image(img, "rotate", 45, [7, 8, 9])[:, 8, 8].tolist() == [7, 8, 9]  # corner filled


def test_paper_amounts():
    assert paper_amounts("translate", 224, 13)[0] == pytest.approx(-60) and \
        paper_amounts("translate", 112, 13)[-1] == pytest.approx(30)
    assert paper_amounts("scale", 224)[0] == 1.0 and paper_amounts("scale", 224)[-1] == pytest.approx(1.8)
    assert paper_amounts("rotate", 224) == [10.0 * i for i in range(36)]


def test_relative_distance_hand_case():
    a = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 0.0]])
    assert relative_distance(a, b).tolist() == [pytest.approx(0.8), pytest.approx(1.0)]


def test_sign_consistency_against_brute_force():
    assert sign_consistency(torch.tensor([[1.0, -1.0], [1.0, 1.0]])) == pytest.approx(0.5)
    eps = torch.randn(5, 40)
    eps[eps.abs() < 0.3] = 0  # some unchanged features: sign 0
    s = torch.sign(eps)
    brute = np.mean([float((s[i] != s[j]).float().mean()) for i, j in itertools.permutations(range(5), 2)])
    assert sign_consistency(eps) == pytest.approx(brute)
    with pytest.raises(ValueError, match="N >= 2"):
        sign_consistency(torch.ones(1, 3))


def test_square_mask_and_regions():
    assert square_mask((1.0, 1.0), 4, 10, 10) == (0, 0, 4, 4)  # pushed inside the image
    assert square_mask((5.0, 6.0), 4, 10, 10) == (3, 4, 7, 8)
    x = torch.zeros(2, 3, 4, 4)
    out = occlude_regions(x, [(0, 0, 2, 2), (2, 2, 4, 4)], torch.full((3, 1, 1), 5.0))
    assert out[0, :, :2, :2].eq(5).all() and out[0].sum() == 5 * 12 and out[1, :, 2:, 2:].eq(5).all()
    assert x.sum() == 0


def test_invariance_command(smoke_model):
    root, _ = smoke_model
    res = runner.invoke(app, ["invariance", "experiment=smoke", f"output_root={root}"])
    assert res.exit_code == 0, res.output
    run = (root / "invariance" / "latest").resolve()
    m = json.loads((run / "metrics.json").read_text())
    t = m["transforms"]["translate"]
    zero = t["amounts"].index(0.0)  # the identity in the sweep: no change at all
    assert all(d[zero] == 0.0 for d in t["distance_conv1"]) and all(d[zero] == 0.0 for d in t["distance_fc7"])
    assert len(t["p_true"]) == 2 and all(0 <= p <= 1 for row in t["p_true"] for p in row)
    assert (run / "figures" / "fig5_invariance.png").exists()
    res = runner.invoke(app, ["invariance", "experiment=smoke", f"output_root={root}", "method=render"])
    assert res.exit_code == 0, res.output
    # the claims read the image-method run: the smoke sweep's shifts (-s, 0, s) hold no small
    # one; its scales (1, 1.4, 1.8) hold one small one, 1.4
    from zfnet_cli import claims

    translate, scale = claims.fig5(root)
    assert translate.verdict == "not measured" and scale.verdict == "single run"
    s = m["transforms"]["scale"]
    j = s["amounts"].index(pytest.approx(1.4))
    assert scale.a.values == pytest.approx([sum(d[j] for d in s["distance_conv1"]) / 2])
    assert scale.b.values == pytest.approx([sum(d[j] for d in s["distance_fc7"]) / 2])


def test_correspond_embedded_and_user_files(smoke_model, tmp_path):
    root, _ = smoke_model
    res = runner.invoke(app, ["correspond", "experiment=smoke", f"output_root={root}"])
    assert res.exit_code == 0, res.output
    run = (root / "correspond" / "latest").resolve()
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["table"]) == {"right_eye", "left_eye", "nose", "random"}
    for row in m["table"].values():
        for cell in row.values():
            assert len(cell["draws"]) == 2 and all(0 <= d <= 1 for d in cell["draws"])
    assert "| right eye |" in (run / "table1.md").read_text()
    from zfnet_cli import claims

    layer5, layer7 = claims.table1(root)  # the claims read these keys
    assert layer5.verdict == layer7.verdict == "single run"
    parts = [m["table"][p]["conv5"]["mean"] for p in ("right_eye", "left_eye", "nose")]
    assert layer5.a.values == [m["table"]["random"]["conv5"]["mean"]]
    assert layer5.b.values == pytest.approx([sum(parts) / 3])
    # a user's images with a parts file (JSON), boxes in the original image's pixels
    rng = np.random.default_rng(1)
    parts = {}
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(tmp_path / f"d{k}.png")
        parts[f"d{k}.png"] = {"right_eye": [30, 30, 40, 40], "left_eye": [60, 30, 70, 40], "nose": [45, 45, 55, 55]}
    (tmp_path / "parts.json").write_text(json.dumps(parts))
    files = [str(tmp_path / f"d{k}.png") for k in range(3)]
    res = runner.invoke(app, ["correspond", *files, "--parts-file", str(tmp_path / "parts.json"),
                              "experiment=smoke", f"output_root={root}"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["correspond", *files, "experiment=smoke", f"output_root={root}"])
    assert res.exit_code == 1
    assert res.output.strip() == "zfnet correspond: error: image files need parts_file=PATH (JSON or CSV of part boxes)"
