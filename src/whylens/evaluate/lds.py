"""The linear datamodeling score (LDS; Park et al. 2023, TRAK).

Train ``M`` models on random subsets ``S_m`` (each a ``fraction`` of the training
set, seeded) and record each test item's measurement ``f_m(z_t)`` (its loss by
default). An attribution ``scores`` ``(n_test, n_train)`` in whylens's convention
(``scores[t, j] = I_up,loss``; removing ``z_j`` changes the test loss by about
``-scores[t, j] / n``) predicts

    f_m(z_t) ~ f_full(z_t) - (1/n) sum_{j not in S_m} scores[t, j]
             = const_t + (1/n) sum_{j in S_m} scores[t, j],

so the prediction for subset ``m`` is ``g_m(z_t) = sum_{j in S_m} scores[t, j]``. The
LDS is the Spearman rank correlation between ``g_m(z_t)`` and ``f_m(z_t)`` across the
``M`` subsets, averaged over test items. 1 is perfect; 0 is no better than chance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..data.imageset import as_tensors
from ..errors import check
from ..outputs import loss_for, margin
from ..stats import spearman_rows
from ..train import predict, train


@dataclass
class LDSResult:
    """``lds`` (mean over test items), ``per_test`` ``(n_test,)``, ``masks`` ``(M, n)``,
    ``predicted`` and ``actual`` ``(M, n_test)``."""

    lds: float
    per_test: torch.Tensor
    masks: torch.Tensor
    predicted: torch.Tensor
    actual: torch.Tensor


def subset_masks(n: int, subsets: int, fraction: float = 0.5, seed: int = 0) -> torch.Tensor:
    """``(subsets, n)`` boolean masks, each selecting ``round(fraction * n)`` items at random (seeded)."""
    check(0 < fraction < 1, f"fraction: expected a number in (0, 1), got {fraction}")
    check(subsets >= 3, f"subsets: expected at least 3 subsets for a rank correlation, got {subsets}")
    g = torch.Generator().manual_seed(seed)
    k = round(fraction * n)
    masks = torch.zeros(subsets, n, dtype=torch.bool)
    for m in range(subsets):
        masks[m, torch.randperm(n, generator=g)[:k]] = True
    return masks


def subset_measurements(model_factory: Callable, train_data, test_data, masks: torch.Tensor, l2: float, *,
                        measure: str = "loss", train_kwargs: dict | None = None, progress: bool = True,
                        ) -> torch.Tensor:
    """``(M, n_test)``: the test measurement of a model trained on each subset.

    ``model_factory()`` must return a fresh model built and initialised the same way
    each time (seed it inside), trained here with :func:`whylens.train.train` on
    ``l2`` and ``train_kwargs``.
    """
    x, y = as_tensors(train_data, "train")
    xt, yt = as_tensors(test_data, "test")
    out = torch.empty(masks.shape[0], xt.shape[0], dtype=torch.float64)
    for m in tqdm(range(masks.shape[0]), desc="LDS subsets", disable=not progress, unit="model"):
        model = model_factory()
        train(model, (x[masks[m]], y[masks[m]]), l2=l2, progress=False, **(train_kwargs or {}))
        logits = predict(model, xt).double()
        out[m] = (loss_for(model)(logits, yt) if measure == "loss" else margin(logits, yt)).detach()
    return out


def linear_datamodeling_score(scores: torch.Tensor, masks: torch.Tensor, actual: torch.Tensor) -> LDSResult:
    """LDS of ``scores`` ``(n_test, n)`` given subset ``masks`` ``(M, n)`` and measured ``actual`` ``(M, n_test)``.

    For ``measure="loss"`` attributions (whylens's sign) the prediction is ``masks @ scores.T``;
    see the module docstring.
    """
    s = torch.as_tensor(scores, dtype=torch.float64)
    check(s.shape[1] == masks.shape[1], f"scores: expected {masks.shape[1]} training columns, got {s.shape[1]}")
    check(actual.shape == (masks.shape[0], s.shape[0]),
          f"actual: expected shape {(masks.shape[0], s.shape[0])}, got {tuple(actual.shape)}")
    predicted = masks.double() @ s.T
    per_test = spearman_rows(predicted.T, actual.T)
    return LDSResult(float(per_test.nan_to_num(0.0).mean()), per_test, masks, predicted, actual)
