"""The smoothed hinge loss of the RBF SVM (Koh & Liang 2017, "smoothhinge") and its derivatives.

For a logit ``z``, a label ``y in {0, 1}`` with sign ``s = 2y - 1`` and the margin ``m = s z``,
the hinge ``max(0, 1 - m)`` has no second derivative at ``m = 1``, so influence functions
(which need the Hessian) cannot use it. The smoothed hinge at temperature ``t > 0`` is

    L_t(m) = t * log(1 + exp((1 - m) / t)) = t * softplus(u),      u = (1 - m) / t.

``t`` is the width, in margin units, of the region around the kink ``m = 1`` over which the
corner is rounded off: ``L_t`` is within ``t * log 2`` of the hinge everywhere (the gap
``t * log(1 + exp(-|u|))`` is largest at the kink), so ``t -> 0`` recovers the hinge and
``t = 1`` is the logistic-like ``softplus(1 - m)``. With ``sigma`` the logistic function,

    dL/dz     = -s * sigma(u),
    d^2L/dz^2 = sigma(u) * (1 - sigma(u)) / t           (s^2 = 1),

so a small ``t`` concentrates all the curvature on the points whose margin is within a few
``t`` of 1 (the soft "support vectors"), and points far beyond the margin have nearly zero
gradient, as in a hard-margin SVM.
"""

from __future__ import annotations

import math

import torch

from .errors import check


def label_signs(labels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``s = 2 y - 1``: labels ``{0, 1}`` as signs ``{-1, +1}`` (shape kept)."""
    return torch.as_tensor(labels).to(dtype) * 2 - 1


def _check_t(temperature: float) -> float:
    t = float(temperature)
    check(math.isfinite(t) and t > 0, f"temperature: expected a number > 0, got {temperature!r}")
    return t


def hinge(z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The hinge ``max(0, 1 - s z)`` elementwise (``z`` logits, ``s`` signs in ``{-1, +1}``)."""
    return torch.clamp(1 - s * z, min=0)


def smooth_hinge(z: torch.Tensor, s: torch.Tensor, temperature: float) -> torch.Tensor:
    """``L_t(s z) = t * log(1 + exp((1 - s z) / t))`` elementwise, computed without overflow.

    ``logaddexp(0, u)`` is ``log(1 + e^u)`` exactly for any ``u`` and twice differentiable by
    autograd (unlike ``F.softplus``, whose linear branch above its threshold has zero curvature).
    """
    t = _check_t(temperature)
    u = (1 - s * z) / t
    return t * torch.logaddexp(torch.zeros_like(u), u)


def smooth_hinge_derivatives(z: torch.Tensor, s: torch.Tensor,
                             temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed forms ``(dL/dz, d^2L/dz^2) = (-s sigma(u), sigma(u)(1 - sigma(u)) / t)``, ``u = (1 - s z)/t``."""
    t = _check_t(temperature)
    sig = torch.sigmoid((1 - s * z) / t)
    return -s * sig, sig * (1 - sig) / t


def smooth_hinge_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample smoothed hinge ``(B,)`` of one-logit outputs ``(B, 1)`` and labels ``(B,)`` in ``{0, 1}``."""
    check(logits.dim() == 2 and logits.shape[1] == 1,
          f"logits: expected shape (B, 1) (one logit per image), got {tuple(logits.shape)}")
    labels = torch.as_tensor(labels).to(logits.device)
    check(labels.shape == logits.shape[:1],
          f"labels: expected shape ({logits.shape[0]},) to match the logits, got {tuple(labels.shape)}")
    z = logits[:, 0]
    return smooth_hinge(z, label_signs(labels, z.dtype), temperature)
