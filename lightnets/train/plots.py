"""Loss/accuracy curves and confusion matrices as png, when matplotlib is installed (it is optional)."""

from __future__ import annotations

from pathlib import Path

import torch


def _pyplot():  # noqa: ANN202 - matplotlib's module, or None without it
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_curves(history: list[dict], path: Path) -> Path | None:
    """Train and validation loss and accuracy per epoch, side by side."""
    plt = _pyplot()
    if plt is None or not history:
        return None
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys, title in ((axes[0], ("train_loss", "val_loss"), "loss"),
                            (axes[1], ("train_acc", "val_top1"), "accuracy")):
        for k in keys:
            if k in history[0]:
                ax.plot(epochs, [r[k] for r in history], marker=".", label=k)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path) -> Path | None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    plt = _pyplot()
    if plt is None:
        return None
    n = len(classes)
    rates = (confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)).numpy()
    counts = confusion.tolist()
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, counts[i][j], ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
