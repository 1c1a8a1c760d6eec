"""Figures of training-data attribution: galleries, the leave-one-out scatter, mislabel curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from .figures import to_display_image

HELPFUL, HARMFUL = "#1a9850", "#d73027"


def _show(ax, image: torch.Tensor, title: str, colour: str | None = None) -> None:
    img = to_display_image(image)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7)
    if colour:
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)


def influence_gallery(rows: Sequence[dict], cell: float = 1.35):
    """One row per test image: the test image, then its k helpful (green) and k harmful (red) training images.

    Each row is ``{"image": (C,H,W), "title": str, "helpful": [(image, caption), ...],
    "harmful": [(image, caption), ...]}``; captions usually hold the label and the score.
    """
    k = max(max(len(r["helpful"]), len(r["harmful"])) for r in rows)
    cols = 1 + 2 * k
    fig, axes = plt.subplots(len(rows), cols, figsize=(cell * cols, cell * len(rows) + 0.5), squeeze=False)
    for r, row in enumerate(rows):
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].axis("on")
        _show(axes[r, 0], row["image"], row["title"])
        for c, (img, cap) in enumerate(row["helpful"]):
            axes[r, 1 + c].axis("on")
            _show(axes[r, 1 + c], img, cap, HELPFUL)
        for c, (img, cap) in enumerate(row["harmful"]):
            axes[r, 1 + k + c].axis("on")
            _show(axes[r, 1 + k + c], img, cap, HARMFUL)
    fig.suptitle("test image | most helpful (green) | most harmful (red)", fontsize=9)
    fig.tight_layout()
    return fig


def loo_scatter(predicted, actual, stats: dict, title: str = "leave-one-out"):
    """Predicted (``-score / n``) vs actual change in test loss after retraining without each item."""
    p, a = np.asarray(predicted, dtype=float).ravel(), np.asarray(actual, dtype=float).ravel()
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.scatter(p, a, s=14, color="#4575b4")
    lim = [min(p.min(), a.min()), max(p.max(), a.max())]
    ax.plot(lim, lim, color="grey", lw=0.8, ls="--", label="y = x")
    ax.set_xlabel("predicted change in test loss (-score / n)", fontsize=8)
    ax.set_ylabel("actual change after retraining", fontsize=8)
    ax.set_title(f"{title}: Pearson {stats['pearson']:.3f}, Spearman {stats['spearman']:.3f}", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def mislabel_curves(curves: dict, title: str = "finding flipped labels"):
    """``curves[name] = (fraction_checked, fraction_found)``, one line each."""
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    for name, (x, y) in curves.items():
        ax.plot(np.asarray(x), np.asarray(y), label=name, lw=1.5)
    ax.set_xlabel("fraction of training data checked", fontsize=8)
    ax.set_ylabel("fraction of flipped labels found", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def image_grid(items: Sequence[tuple], cols: int = 10, cell: float = 1.3, title: str | None = None,
               colour: str | None = None):
    """A grid of ``(image (C,H,W), caption)`` items, ``cols`` per row."""
    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, cap) in zip(axes.flat, items):
        ax.axis("on")
        _show(ax, img, cap, colour)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
