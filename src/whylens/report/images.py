"""PNG bytes for the HTML report: figures, small images and overlays, kept in memory.

The report embeds every picture as a ``data:image/png;base64,...`` URI, so
nothing here touches the disk.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ..errors import WhylensError, check  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Small images are upscaled to at least this many pixels on their longer side,
# so an 8x8 digit is not a speck on the page.
MIN_SIDE = 96


def png_bytes(fig, dpi: int = 110) -> bytes:
    """Render the matplotlib ``fig`` to PNG bytes (tight bounding box) and close it, also on error."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def _image_array(image, name: str) -> np.ndarray:
    """``(C,H,W)`` in [0,1] (C = 1 or 3) to a uint8 ``(H,W)`` or ``(H,W,3)`` array, ``round(255 x)``."""
    x = torch.as_tensor(image).detach().cpu()
    check(x.dim() == 3 and x.shape[0] in (1, 3),
          f"{name}: expected a (C, H, W) tensor with C = 1 or 3, got shape {tuple(x.shape)}")
    check(x.shape[1] > 0 and x.shape[2] > 0, f"{name}: expected a non-empty image, got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    check(bool(torch.isfinite(x).all()), f"{name}: contains NaN or inf pixels; expected values in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    check(lo >= 0.0 and hi <= 1.0, f"{name}: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    a = (x * 255.0).round().to(torch.uint8).numpy()
    return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)


def image_png(image, scale: int | None = None) -> bytes:
    """A crisp PNG of a small image: ``(C,H,W)`` in [0,1] upscaled by nearest neighbour.

    Output pixel ``(r, c)`` is input pixel ``(r // scale, c // scale)`` times 255,
    rounded; the PNG is ``(H*scale, W*scale)``, greyscale for C = 1, RGB for C = 3.
    ``scale=None`` picks the smallest integer with ``max(H, W) * scale >= 96``.
    """
    a = _image_array(image, "image")
    h, w = a.shape[:2]
    if scale is None:
        scale = max(1, -(-MIN_SIDE // max(h, w)))
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise WhylensError(f"scale: expected a positive integer, got {scale!r}")
    pil = Image.fromarray(np.ascontiguousarray(a))  # uint8 (H,W) -> "L", (H,W,3) -> "RGB"
    if scale > 1:
        pil = pil.resize((w * int(scale), h * int(scale)), resample=Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def overlay_png(image, attr, size: float = 1.8, dpi: int = 110, title: str | None = None) -> bytes:
    """PNG of ``attr`` drawn over ``image`` by :func:`whylens.report.figures.draw_overlay`.

    ``image`` is ``(C,H,W)`` in [0,1]; ``attr`` is ``(C,H,W)`` (summed over channels) or
    ``(H,W)``, with the same ``H, W``. Signed maps use a diverging colour map centred
    on 0 (red raises the class score), non-negative maps a sequential one.
    """
    from .figures import draw_overlay

    _image_array(image, "image")
    a = torch.as_tensor(attr).detach()
    hw = tuple(torch.as_tensor(image).shape[1:])
    check(a.dim() in (2, 3) and tuple(a.shape[-2:]) == hw,
          f"attr: expected shape (H, W) or (C, H, W) with H, W = {hw}, got {tuple(a.shape)}")
    check(bool(torch.isfinite(a).all()), "attr: contains NaN or inf values")
    fig, ax = plt.subplots(figsize=(size, size))
    try:
        draw_overlay(ax, torch.as_tensor(image), a)
        if title:
            ax.set_title(title, fontsize=8)
        for spine in ax.spines.values():
            spine.set_visible(False)
    except BaseException:
        plt.close(fig)
        raise
    return png_bytes(fig, dpi=dpi)


def is_png(data) -> bool:
    """Whether ``data`` is bytes that start with the 8-byte PNG signature."""
    return isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:8]) == PNG_SIGNATURE


def data_uri(png: bytes) -> str:
    """``"data:image/png;base64," + base64(png)`` for embedding in HTML; ``png`` must be PNG bytes."""
    check(is_png(png), f"png: expected PNG bytes, got {type(png).__name__}")
    return "data:image/png;base64," + base64.b64encode(bytes(png)).decode("ascii")
