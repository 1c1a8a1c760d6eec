"""Integrated Gradients (Sundararajan et al. 2017) with chunked quadrature and a completeness check.

For image ``x``, baseline ``x'`` and class score ``S = S_t``:

    IG(x) = (x - x') * int_0^1 dS(x' + a (x - x'))/dx da
          ~ (x - x') * sum_i w_i dS(x' + a_i (x - x'))/dx,

with the nodes ``a_i`` and weights ``w_i`` of the chosen ``rule`` (the same
definitions as Captum, so both agree at the same rule and step count):

* ``"gausslegendre"``: Gauss-Legendre nodes ``u`` and weights ``v`` on [-1, 1] mapped to
  [0, 1]: ``a = (1 + u)/2``, ``w = v/2``;
* ``"riemann_left"``: ``a_i = i/n``, ``i = 0..n-1``; ``w_i = 1/n``;
* ``"riemann_right"``: ``a_i = i/n``, ``i = 1..n``; ``w_i = 1/n``;
* ``"riemann_middle"``: ``a_i = (i + 1/2)/n``, ``i = 0..n-1``; ``w_i = 1/n``;
* ``"riemann_trapezoid"``: ``a_i = i/(n-1)``, ``i = 0..n-1``; ``w_i = 1/n`` with the first and
  last halved (Captum's weights, which sum to ``1 - 1/n``).

Completeness says ``sum(IG(x)) = S(x) - S(x')``. The *relative* completeness error
per image is ``delta = |sum(IG(x)) - (S(x) - S(x'))| / |S(x) - S(x')|`` and the
*absolute* error ``abs_delta = |sum(IG(x)) - (S(x) - S(x'))|``. On ReLU networks the
error does not shrink monotonically with the step count (the integrand is
piecewise constant), so ``tol`` refines per image and keeps the best result.
"""

from __future__ import annotations

import functools
import numbers
import warnings

import numpy as np
import torch

from ..errors import WhylensError, check
from .base import (
    DEFAULT_CHUNK,
    Attribution,
    check_chunk_size,
    eval_mode,
    forward,
    parse_target,
    predict_chunks,
    scores,
)

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def _legendre(n: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``P_n(u)``, ``P_{n-1}(u)`` by ``k P_k = (2k-1) u P_{k-1} - (k-1) P_{k-2}``."""
    p_prev, p = np.ones_like(u), u.copy()
    for k in range(2, n + 1):
        p_prev, p = p, ((2 * k - 1) * u * p - (k - 1) * p_prev) / k
    return p, p_prev


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes ``u`` (ascending) and weights ``v`` on [-1, 1], float64.

    Newton's method on ``P_n`` from the guesses ``cos(pi (i - 1/4) / (n + 1/2))``, with
    ``P_n' = n (u P_n - P_{n-1}) / (u^2 - 1)``; then ``v = 2 / ((1 - u^2) P_n'(u)^2)``,
    symmetrised and scaled to sum to 2. This costs O(n^2), where
    ``numpy.polynomial.legendre.leggauss`` solves an n x n eigenproblem (O(n^3):
    seconds at the thousands of steps that ``tol`` may ask for); both give the same
    nodes to ~1e-15.
    """
    u = np.cos(np.pi * (np.arange(n, 0, -1) - 0.25) / (n + 0.5))  # ascending guesses
    for _ in range(100):
        p, p_prev = _legendre(n, u)
        step = p / (n * (u * p - p_prev) / (u * u - 1))
        u = u - step
        if np.abs(step).max() < 1e-14:
            break
    p, p_prev = _legendre(n, u)
    dp = n * (u * p - p_prev) / (u * u - 1)
    v = 2.0 / ((1 - u * u) * dp * dp)
    u, v = (u - u[::-1]) / 2, (v + v[::-1]) / 2
    return u, v * (2.0 / v.sum())


@functools.lru_cache(maxsize=64)
def _quadrature(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if rule == "gausslegendre":
        u, v = gauss_legendre(n)
        a, w = 0.5 * (1.0 + u), 0.5 * v
    else:
        w = np.full(n, 1.0 / n)
        if rule == "riemann_trapezoid":
            w[0] /= 2
            w[-1] /= 2
            a = np.linspace(0.0, 1.0, n)
        else:
            start = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule] / n
            a = start + np.arange(n) / n
    a.setflags(write=False)
    w.setflags(write=False)
    return a, w


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``a`` and weights ``w`` (read-only float64, length ``steps``) of ``rule`` on [0, 1]."""
    check(rule in RULES, f"rule: expected one of {', '.join(RULES)}, got {rule!r}")
    if rule != "gausslegendre":
        check(steps >= 2, f"steps: the {rule} rule needs at least 2 steps, got {steps}")
    return _quadrature(rule, int(steps))


class IGResult(tuple):
    """``(attributions, delta)``, unpackable as a pair, that also carries how it was computed.

    Attributes: ``attributions`` ``(B, C, H, W)``; ``delta`` ``(B,)`` relative completeness
    error; ``abs_delta`` ``(B,)`` absolute error; ``steps`` ``(B,)`` int64 step count
    used per image; ``score_gap`` ``(B,)`` = ``S(x) - S(x')``.
    """

    def __new__(cls, attributions, delta, abs_delta, steps, score_gap):
        self = super().__new__(cls, (attributions, delta))
        self.attributions, self.delta, self.abs_delta = attributions, delta, abs_delta
        self.steps, self.score_gap = steps, score_gap
        return self

    def __repr__(self) -> str:
        return (f"IGResult(attributions={tuple(self.attributions.shape)}, "
                f"median delta={float(self.delta.median()):.3g}, "
                f"steps={sorted(set(self.steps.tolist()))})")


def make_baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    """The baseline ``x'`` ``(B, C, H, W)``: a number (0 = black), ``"mean"`` or a tensor.

    ``"mean"`` is each image's per-channel mean colour; a tensor must broadcast to the images.
    """
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, str):
        check(baseline == "mean",
              f"baseline: expected a number, a tensor or 'mean', got {baseline!r}")
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    check(isinstance(baseline, torch.Tensor),
          f"baseline: expected a number, a tensor or 'mean', got {type(baseline).__name__}")
    b = baseline.detach().to(device=x.device, dtype=x.dtype)
    try:
        b = torch.broadcast_to(b, x.shape)
    except RuntimeError:
        raise WhylensError(f"baseline: shape {tuple(b.shape)} does not broadcast to the images' "
                           f"shape {tuple(x.shape)}") from None
    check(bool(torch.isfinite(b).all()), "baseline: contains NaN or inf")
    return b.contiguous()


class IntegratedGradients(Attribution):
    """Integrated Gradients along the straight path from a baseline to the image."""

    name = "integrated_gradients"

    def attribute(self, images: torch.Tensor, target=None, *, baseline=0.0, steps: int = 50,
                  rule: str = "gausslegendre", chunk_size: int = DEFAULT_CHUNK,
                  return_delta: bool = False, tol: float | None = None,
                  max_steps: int | None = None):
        """IG attributions ``(B, C, H, W)``, or an :class:`IGResult` with ``return_delta=True``.

        Args:
            baseline: ``x'``: a number (default 0 = black in pixel space), ``"mean"``
                (each image's mean colour) or a tensor broadcastable to the images.
            steps: quadrature nodes ``n`` per image (default 50).
            rule: ``"gausslegendre"`` (default), ``"riemann_trapezoid"``, ``"riemann_left"``,
                ``"riemann_right"`` or ``"riemann_middle"`` (see the module docstring).
            chunk_size: at most this many (image, node) inputs per forward/backward pass,
                so peak memory scales with ``chunk_size`` and not with ``B * steps``.
            return_delta: return ``IGResult`` = ``(attributions, delta)`` where
                ``delta[b] = |sum(IG(x_b)) - (S(x_b) - S(x'_b))| / |S(x_b) - S(x'_b)|``;
                the result also has ``.abs_delta`` (the numerator), ``.steps`` and ``.score_gap``.
            tol: refine per image: while an image's relative error exceeds ``tol``, double
                its step count (up to ``max_steps``, default ``128 * steps``) for that
                image only, and keep the attribution with the smallest error seen (on
                ReLU nets the error is not monotone in the step count). With
                ``return_delta=True``, ``.steps`` reports the count behind each returned
                attribution; without it only the refined attributions are returned.
                Images that never reach ``tol`` (e.g. ``S(x) ~ S(x')``, where the relative
                error is ill-posed) raise a warning.
        """
        check(isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps >= 1,
              f"steps: expected a positive int, got {steps!r}")
        quadrature(rule, int(steps))  # checks rule and steps before any work
        chunk_size = check_chunk_size(chunk_size)
        if tol is not None:
            check(isinstance(tol, numbers.Real) and tol > 0,
                  f"tol: expected a positive number, got {tol!r}")
        max_steps = 128 * int(steps) if max_steps is None else max_steps
        check(isinstance(max_steps, numbers.Integral) and max_steps >= steps,
              f"max_steps: expected an int >= steps ({steps}), got {max_steps!r}")
        x = self._images(images)
        targets = parse_target(target, len(x))
        targets = None if targets is None else targets.to(x.device)
        base = make_baseline(baseline, x)
        need_gap = return_delta or tol is not None
        with eval_mode(self.model):
            if targets is None or need_gap:
                score_x, targets = scores(predict_chunks(self.model, x, chunk_size), targets)
            attr = self._integrate(x, base, targets, int(steps), rule, chunk_size)
            if not need_gap:
                return attr
            score_b, _ = scores(predict_chunks(self.model, base, chunk_size), targets)
            gap = score_x - score_b
            abs_delta = (attr.flatten(1).sum(1) - gap).abs()
            delta = abs_delta / gap.abs().clamp_min(torch.finfo(gap.dtype).tiny)
            used = torch.full((len(x),), int(steps), dtype=torch.int64)
            n = int(steps)
            todo = delta > tol if tol is not None else torch.zeros(len(x), dtype=torch.bool)
            while bool(todo.any()) and 2 * n <= max_steps:
                n *= 2
                idx = todo.nonzero().flatten()
                a2 = self._integrate(x[idx], base[idx], targets[idx], n, rule, chunk_size)
                ad2 = (a2.flatten(1).sum(1) - gap[idx]).abs()
                d2 = ad2 / gap[idx].abs().clamp_min(torch.finfo(gap.dtype).tiny)
                better = d2 < delta[idx]
                j = idx[better]
                attr[j], delta[j], abs_delta[j] = a2[better], d2[better], ad2[better]
                used[j.cpu()] = n
                todo = delta > tol
            if bool(todo.any()):
                warnings.warn(f"integrated_gradients: {int(todo.sum())} of {len(x)} images still "
                              f"have a completeness error above tol={tol} at "
                              f"max_steps={max_steps}",
                              stacklevel=2)
        return IGResult(attr, delta, abs_delta, used, gap)

    def _integrate(self, x, base, targets, n: int, rule: str, chunk_size: int) -> torch.Tensor:
        """``(x - x') * sum_i w_i grad S(x' + a_i (x - x'))``, chunked over (image, node) pairs."""
        alphas, weights = (torch.tensor(v, dtype=x.dtype, device=x.device)
                           for v in quadrature(rule, n))
        diff = x - base
        total = torch.zeros_like(x)
        view = (-1,) + (1,) * (x.dim() - 1)
        pairs = len(x) * n
        for s in range(0, pairs, chunk_size):
            p = torch.arange(s, min(s + chunk_size, pairs), device=x.device)
            img, node = p // n, p % n
            inp = torch.addcmul(base[img], alphas[node].view(view), diff[img]).requires_grad_(True)
            score, _ = scores(forward(self.model, inp), targets[img])
            grad = torch.autograd.grad(score.sum(), inp)[0]
            total.index_add_(0, img, grad * weights[node].view(view))
        return diff * total
