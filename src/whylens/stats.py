"""Small statistics used to judge explanations (no scipy needed at run time).

* ``rankdata``: ranks 1..n with ties given their average rank (as scipy's default);
* ``pearson(x, y) = cov(x, y) / (sd(x) sd(y))``; ``spearman`` = Pearson of the ranks;
* ``fit_slope(x, y)``: least-squares slope of ``y`` on ``x`` with an intercept.
All take 1-D tensors/arrays (or, for the ``*_rows`` variants, ``(B, n)`` and work per row).
"""

from __future__ import annotations

import torch


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).flatten()


def rankdata(x) -> torch.Tensor:
    """Ranks ``1..n`` of ``x`` (1-D), ties receiving the mean of the ranks they span."""
    x = _t(x)
    return rankdata_rows(x[None])[0]


def rankdata_rows(x: torch.Tensor) -> torch.Tensor:
    """Row-wise :func:`rankdata` of a ``(B, n)`` tensor."""
    x = torch.as_tensor(x, dtype=torch.float64)
    b, n = x.shape
    values, order = x.sort(dim=1)
    ranks = torch.empty_like(values)
    pos = torch.arange(1, n + 1, dtype=torch.float64).expand(b, n)
    # average ranks within runs of equal values: mean position of each run
    new_run = torch.ones_like(values, dtype=torch.bool)
    new_run[:, 1:] = values[:, 1:] != values[:, :-1]
    run_id = new_run.cumsum(1) - 1
    sums = torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, run_id, pos)
    counts = torch.zeros(b, n, dtype=torch.float64).scatter_add_(1, run_id, torch.ones_like(pos))
    avg = sums.gather(1, run_id) / counts.gather(1, run_id)
    ranks.scatter_(1, order, avg)
    return ranks


def pearson_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of ``(B, n)`` tensors (NaN for a constant row)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    xc = x - x.mean(1, keepdim=True)
    yc = y - y.mean(1, keepdim=True)
    den = (xc.norm(dim=1) * yc.norm(dim=1))
    return torch.where(den > 0, (xc * yc).sum(1) / den.clamp(min=1e-300), torch.full_like(den, float("nan")))


def spearman_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise Spearman rank correlation (Pearson of average ranks)."""
    return pearson_rows(rankdata_rows(x), rankdata_rows(y))


def pearson(x, y) -> float:
    """Pearson correlation of two 1-D sequences."""
    return float(pearson_rows(_t(x)[None], _t(y)[None])[0])


def spearman(x, y) -> float:
    """Spearman rank correlation of two 1-D sequences (ties averaged)."""
    return float(spearman_rows(_t(x)[None], _t(y)[None])[0])


def fit_slope(x, y) -> float:
    """Least-squares slope ``b`` of ``y ~ a + b x``."""
    x, y = _t(x), _t(y)
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())
