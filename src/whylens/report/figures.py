"""Matplotlib figures: heatmap overlays and the image x method grid.

Maps are normalised for display only (the library returns them unnormalised):
signed maps (gradients, Integrated Gradients) are shown with a diverging
colour map centred on zero, scaled by their largest magnitude so that red =
raises the class score and blue = lowers it; non-negative maps (CAMs,
occlusion drops clipped at 0) with a sequential colour map from 0 to their max.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..files import atomic_write  # noqa: E402


def to_display_map(attr: torch.Tensor) -> np.ndarray:
    """Reduce a map to ``(H, W)``: channels are summed (``(C,H,W) -> (H,W)``)."""
    a = attr.detach().float().cpu()
    if a.dim() == 3:
        a = a.sum(0)
    return a.numpy()


def to_display_image(image: torch.Tensor) -> np.ndarray:
    """``(C,H,W)`` in [0,1] to an ``(H,W)`` or ``(H,W,3)`` array for imshow."""
    x = image.detach().float().cpu().clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def is_signed(m: np.ndarray) -> bool:
    return bool((m < 0).any())


def draw_overlay(ax, image: torch.Tensor, attr: torch.Tensor, alpha: float = 0.55,
                 signed: bool | None = None) -> None:
    """Draw ``image`` in grey with ``attr`` on top (diverging if signed, sequential otherwise)."""
    m = to_display_map(attr)
    img = to_display_image(image)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    signed = is_signed(m) if signed is None else signed
    if signed:
        lim = float(np.abs(m).max()) or 1.0
        ax.imshow(m, cmap="bwr", vmin=-lim, vmax=lim, alpha=alpha, interpolation="bilinear")
    else:
        top = float(m.max()) or 1.0
        ax.imshow(np.clip(m, 0, None), cmap="inferno", vmin=0, vmax=top, alpha=alpha,
                  interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temporary name, then rename) and close it."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def method_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: Sequence[str],
                cell: float = 1.9):
    """A figure with one row per image and columns: the image, then one overlay per method.

    ``maps[method]`` is ``(B,C,H,W)`` or ``(B,H,W)``; ``titles[b]`` heads row b (e.g.
    ``"pred pneumonia (0.98) | true normal"``).
    """
    b = images.shape[0]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(b, cols, figsize=(cell * cols, cell * b + 0.3), squeeze=False)
    for r in range(b):
        ax = axes[r, 0]
        img = to_display_image(images[r])
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(titles[r], fontsize=7, loc="left")
        for c, (name, m) in enumerate(maps.items(), start=1):
            draw_overlay(axes[r, c], images[r], m[r])
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
    fig.tight_layout()
    return fig
