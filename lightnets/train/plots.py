"""Training curves (any task's metrics) and confusion matrices as png, when matplotlib is installed (it is optional)."""

from __future__ import annotations

from pathlib import Path

import torch

from .._plot import headless_pyplot

# Figures the loop adds to every record about speed, not about what the model learns.
_NOT_CURVES = {"train_img_s"}


def curve_panels(history: list[dict]) -> list[tuple[str, list[str]]]:
    """The panels of :func:`plot_curves`, read off the history so every task gets its own keys plotted:
    ``loss`` (train and validation), ``training`` (the task's other per-epoch metrics: accuracy, loss parts)
    and ``validation`` (top-1, mAP, F1, ...). A series that never reaches 0 (COCO's -1 for "no objects of
    this size") is left out."""
    keys = [k for k in dict.fromkeys(k for r in history for k in r) if k not in _NOT_CURVES]
    values = {k: [r[k] for r in history if isinstance(r.get(k), int | float)] for k in keys}
    keys = [k for k in keys if values[k] and max(values[k]) >= 0]
    losses = [k for k in keys if k in ("train_loss", "val_loss")]
    panels = [("loss", losses), ("training", [k for k in keys if k.startswith("train_") and k not in losses]),
              ("validation", [k for k in keys if k.startswith("val_") and k not in losses])]
    return [(title, names) for title, names in panels if names]


def plot_curves(history: list[dict], path: Path) -> Path | None:
    """Per-epoch curves side by side, one panel per :func:`curve_panels` group; a panel whose positive values
    span more than 20x (losses early in training) gets a log scale."""
    plt = headless_pyplot()
    panels = curve_panels(history) if history else []
    if plt is None or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels, strict=True):
        shown = []
        for k in keys:
            points = [(r["epoch"], r[k]) for r in history if isinstance(r.get(k), int | float)]
            ax.plot(*zip(*points, strict=True), marker=".", label=k)
            shown += [v for _, v in points]
        if min(shown) > 0 and max(shown) > 20 * min(shown):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path, cells: str = "counts") -> Path | None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) with counts in the cells, or with
    ``cells="percent"`` the row percentages (pixel counts run to millions)."""
    plt = headless_pyplot()
    if plt is None:
        return None
    n = len(classes)
    rates = (confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)).numpy()
    counts = confusion.tolist() if cells == "counts" else [[f"{100 * r:.0f}" for r in row] for row in rates]
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
