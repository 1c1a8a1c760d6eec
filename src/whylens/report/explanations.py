"""Explain a batch of images with several methods and write the pictures and numbers.

Writes, atomically: ``explanations.png`` (one row per image, one column per
method, predicted class and probability in the row title), one overlay PNG per
image and method under ``overlays/``, the raw unnormalised maps in ``maps.npz``
(``<method>`` -> array of the method's output shape) and ``predictions.json``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..files import atomic_write, write_json
from ..outputs import predicted_class, probabilities
from ..train import predict

CAM_METHODS = {"gradcam", "gradcam++", "hirescam", "grad_cam", "grad_cam++", "gradcampp", "hires_cam"}
IG_METHODS = {"integrated_gradients", "ig"}


def method_options(method: str, options: dict) -> dict:
    """The subset of ``options`` that ``method`` takes (``layer`` for CAMs, ``steps`` for IG)."""
    m = method.lower()
    out = {}
    if m in CAM_METHODS and options.get("layer"):
        out["layer"] = options["layer"]
    if m in IG_METHODS and options.get("steps"):
        out["steps"] = options["steps"]
    return out


def compute_maps(model, images: torch.Tensor, methods: list[str], target=None, options: dict | None = None,
                 progress: bool = True) -> dict[str, torch.Tensor]:
    """``{method: explain(model, images, method, target, **its options)}`` for each method."""
    from ..attribution import explain
    options = options or {}
    maps = {}
    for m in tqdm(methods, desc="explain", disable=not progress, unit="method"):
        maps[m] = explain(model, images, m, target=target, **method_options(m, options)).detach()
    return maps


def _safe_name(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(text).name)
    return keep[:60] or "image"


def write_explanations(model, images: torch.Tensor, names: list[str], classes: list[str], methods: list[str],
                       out: Path, target=None, options: dict | None = None, progress: bool = True) -> dict:
    """Compute the maps and write the grid, overlays, ``maps.npz`` and ``predictions.json``; return the summary."""
    import matplotlib.pyplot as plt

    from .figures import draw_overlay, method_grid, save_figure
    maps = compute_maps(model, images, methods, target=target, options=options, progress=progress)
    logits = predict(model, images)
    pred = predicted_class(logits)
    prob = probabilities(logits)
    rows = []
    for i, name in enumerate(names):
        c = int(pred[i])
        rows.append({"name": name, "predicted": classes[c] if c < len(classes) else str(c),
                     "probability": float(prob[i, c]), "probabilities": prob[i].tolist()})
    titles = [f"{Path(r['name']).name[:28]}\npred {r['predicted']} ({r['probability']:.2f})" for r in rows]
    save_figure(method_grid(images, maps, titles), out / "explanations.png")
    for i, r in enumerate(rows):
        for m, a in maps.items():
            fig, ax = plt.subplots(figsize=(2.6, 2.6))
            draw_overlay(ax, images[i], a[i])
            ax.set_title(f"{m}: {r['predicted']} ({r['probability']:.2f})", fontsize=8)
            save_figure(fig, out / "overlays" / f"{i:03d}_{_safe_name(r['name'])}_{_safe_name(m)}.png")

    def _npz(tmp):
        buf = io.BytesIO()
        np.savez_compressed(buf, **{m: a.float().numpy() for m, a in maps.items()})
        Path(tmp).write_bytes(buf.getvalue())

    atomic_write(out / "maps.npz", _npz)
    summary = {"methods": methods, "images": rows}
    write_json(out / "predictions.json", summary)
    return summary
