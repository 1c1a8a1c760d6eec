"""Deletion and insertion curves (Petsiuk et al. 2018, RISE) and their areas.

Pixels are ranked by the attribution summed over channels (most important
first). For ``f`` in ``fractions = 0, 1/S, ..., 1``:

* deletion: the top-``f`` pixels of the image are replaced by ``baseline``;
* insertion: the image starts as ``baseline`` and the top-``f`` pixels are restored;

and the model's probability of the target class is recorded. A faithful map
makes deletion fall fast (small area under the curve) and insertion rise fast
(large area). Random pixel orders (seeded) give the reference curves. All
``(image, fraction)`` inputs are scored in batched forward passes of at most
``chunk_size`` images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import check
from ..outputs import predicted_class, probabilities


@dataclass
class Curve:
    """``fractions`` ``(S+1,)``, ``scores`` ``(B, S+1)`` and the trapezoid area ``auc`` ``(B,)``."""

    mode: str
    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def _orders(attributions: torch.Tensor) -> torch.Tensor:
    a = attributions.detach().float()
    if a.dim() == 4:
        a = a.sum(1)
    return a.flatten(1).argsort(dim=1, descending=True)


def random_orders(n_images: int, n_pixels: int, seed: int = 0) -> torch.Tensor:
    """Seeded random pixel orders ``(B, H*W)``."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n_pixels, generator=g) for _ in range(n_images)])


@torch.no_grad()
def perturbation_curve(model, images: torch.Tensor, attributions: torch.Tensor | None = None, *,
                       mode: str = "deletion", target=None, steps: int = 20, baseline: float = 0.0,
                       order: torch.Tensor | None = None, chunk_size: int = 512) -> Curve:
    """Deletion or insertion curve of each image; see the module docstring.

    Args:
        images: ``(B, C, H, W)``; attributions: ``(B, C, H, W)`` or ``(B, H, W)``
            (ignored when ``order`` gives the pixel orders ``(B, H*W)`` directly).
        target: class per image (default: the predicted class of the unperturbed image).
    """
    check(mode in ("deletion", "insertion"), f"mode: expected 'deletion' or 'insertion', got {mode!r}")
    check(steps >= 1, f"steps: expected a positive integer, got {steps}")
    b, c, h, w = images.shape
    n = h * w
    if order is None:
        check(attributions is not None and attributions.shape[0] == b,
              f"attributions: expected {b} maps to match the images")
        order = _orders(attributions)
    was = model.training
    model.eval()
    try:
        dtype = next(model.parameters()).dtype
        if target is None:
            target = predicted_class(model(images.to(dtype)))
        target = torch.as_tensor(target).long().reshape(-1).expand(b) if torch.as_tensor(target).numel() == 1 \
            else torch.as_tensor(target).long()
        check(target.shape == (b,), f"target: expected {b} targets, got {tuple(target.shape)}")
        fractions = torch.linspace(0, 1, steps + 1)
        counts = (fractions * n).round().long()
        # rank[b, pixel] = position of the pixel in the order; pixel is "changed" when rank < count
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n).expand(b, n))
        scores = torch.empty(b, steps + 1)
        jobs = [(i, s) for i in range(b) for s in range(steps + 1)]
        for start in range(0, len(jobs), chunk_size):
            part = jobs[start:start + chunk_size]
            ii = torch.tensor([j[0] for j in part])
            ss = torch.tensor([j[1] for j in part])
            changed = (rank[ii] < counts[ss][:, None]).reshape(-1, 1, h, w)
            x = images[ii]
            base = torch.full_like(x, baseline)
            batch = torch.where(changed, base, x) if mode == "deletion" else torch.where(changed, x, base)
            p = probabilities(model(batch.to(dtype)))
            scores[ii, ss] = p.gather(1, target[ii][:, None])[:, 0].float()
    finally:
        model.train(was)
    auc = torch.trapezoid(scores, fractions, dim=1)
    return Curve(mode, fractions, scores, auc)


def deletion_insertion(model, images: torch.Tensor, attributions: torch.Tensor, target=None, steps: int = 20,
                       baseline: float = 0.0, seed: int = 0, chunk_size: int = 512) -> dict:
    """Deletion and insertion AUCs of ``attributions`` beside those of random orders.

    Returns ``{"deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"}``
    (means over images) and the four :class:`Curve` objects under ``"curves"``.
    """
    b, _, h, w = images.shape
    rnd = random_orders(b, h * w, seed)
    kw = {"target": target, "steps": steps, "baseline": baseline, "chunk_size": chunk_size}
    curves = {
        "deletion": perturbation_curve(model, images, attributions, mode="deletion", **kw),
        "insertion": perturbation_curve(model, images, attributions, mode="insertion", **kw),
        "random_deletion": perturbation_curve(model, images, order=rnd, mode="deletion", **kw),
        "random_insertion": perturbation_curve(model, images, order=rnd, mode="insertion", **kw),
    }
    out = {f"{k}_auc": float(c.auc.mean()) for k, c in curves.items()}
    out["curves"] = curves
    return out
