"""The README's "Use from Python" examples run as written, in order, in one namespace."""
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def python_examples(section: str = "## Use from Python") -> list[str]:
    text = README.read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_the_python_section_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = python_examples()
    assert len(blocks) >= 3
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    photos = tmp_path / "photos"
    for cls in ("cat", "dog"):
        (photos / cls).mkdir(parents=True)
        for k in range(3):
            img = rng.integers(0, 256, (120 + 10 * k, 160, 3), dtype=np.uint8)
            Image.fromarray(img).save(photos / cls / f"{k}.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "torchvision_resnet18 224" in out and "layer3.1" in out
    assert "torch.Size([6, 3, 224, 224])" in out  # 6 photos: the top-k of a map holds all six
    assert namespace["panel_c"].shape == (3, 224, 224) and namespace["projections"].abs().sum() > 0
    assert (tmp_path / "fig7.png").stat().st_size > 5000
    assert os.path.exists("resnet18.pth")
