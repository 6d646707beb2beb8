"""The figures' layout choices on hand-made inputs: the TrueType font, a one-map Fig 2 one
block wide, projections and patches cut at the part of the receptive field a projection reaches."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from zfnet_cli import viz
from zfnet_cli.fig2 import reached as _reached


def test_font_is_matplotlibs_dejavu_and_keeps_spaces():
    f = viz.font()
    assert Path(f.path).parent == Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    assert viz.draw_len("activations over") > viz.draw_len("activationsover") + 2


def test_wrap_breaks_at_spaces_within_the_width():
    lines = viz.wrap("Fig 2: conv3, top-9 activations over 1500 val images", 150)
    assert " ".join(lines) == "Fig 2: conv3, top-9 activations over 1500 val images"
    assert len(lines) > 1 and all(viz.draw_len(l) <= 150 for l in lines)


def test_one_map_fig2_is_one_block_wide(tmp_path):
    cell, tile = 20, np.zeros((5, 5, 3), np.uint8)
    blocks = [("conv3 map 4", [(tile, tile)] * 9)]
    path = viz.top9_figure(blocks, tmp_path / "one.png", cell=cell, columns=2)
    grid_w = 3 * cell + 2
    assert Image.open(path).width == 2 * grid_w + 3 * 6 + 1  # one block, no empty column
    path = viz.top9_figure(blocks * 3, tmp_path / "three.png", cell=cell, columns=2)
    assert Image.open(path).width == 2 * (2 * grid_w + 3 * 6) + 1


def test_reached_is_the_bounding_box_of_the_nonzero_projection():
    proj = torch.zeros(3, 16, 16)
    proj[1, 5:8, 9:11] = 1.0  # one channel is enough
    proj[0, 6, 12] = -0.5  # negative values count
    assert _reached(proj, (2, 4, 14, 15)) == (5, 9, 8, 13)
    assert _reached(proj, (0, 0, 7, 10)) == (5, 9, 7, 10)  # only inside the receptive field
    assert _reached(torch.zeros(3, 16, 16), (2, 4, 14, 15)) == (2, 4, 14, 15)  # dead: the field
