"""Figures: training curves, image grids and heat maps (matplotlib with the Agg backend, PIL)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Loss (left) and top-1 / top-5 error (right) per epoch, train and validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "s-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_err.plot(epochs, [100 - h["train_top1"] for h in history], "o-", label="train top-1")
    ax_err.plot(epochs, [100 - h["val_top1"] for h in history], "s-", label="val top-1")
    ax_err.plot(epochs, [100 - h["val_top5"] for h in history], "^-", label="val top-5")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error", ylim=(0, 100))
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
