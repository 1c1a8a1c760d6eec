"""Finding mislabelled training images: flip labels on purpose, then see who finds them.

A mislabelled point fits badly and pulls the model towards itself, so it tends to have a
large self-influence

    I_up,loss(z_j, z_j) = -g_jᵀ H⁻¹ g_j        (<= 0 for a positive definite H),

the first-order change of its own loss when it is upweighted (Koh & Liang 2017, sec. 5.4).
Its magnitude ``g_jᵀ H⁻¹ g_j`` is the squared length of its gradient in the metric of the
inverse curvature: large for a point the rest of the data disagrees with. The experiment
(:func:`mislabel_experiment`) flips a known fraction of the labels
(:func:`flip_labels`), trains, ranks the training set by ``|self-influence|``, by the
training loss ``L(z_j, theta_hat)`` and at random, and checks items in that order
(:func:`detection_curve`): the fraction of the flipped labels found after checking a
fraction of the data. Random order finds them in proportion, ``found(c) ~= c``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..data.imageset import as_tensors
from ..errors import check
from ..outputs import check_labels, loss_for, num_classes_of
from ..train import TrainResult, predict
from ..train import train as fit_model

#: fractions checked at which :class:`MislabelResult` summarises each curve
CHECKPOINTS = (0.05, 0.10, 0.20)


def flip_labels(labels, fraction: float, num_classes: int, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip ``round(fraction * n)`` labels, chosen at random, each to a different random class.

    The flipped items are a uniform random subset; item ``i``'s new label is
    ``(y_i + u_i) mod K`` with ``u_i`` uniform on ``{1, ..., K-1}``, i.e. uniform over the
    ``K - 1`` other classes. Deterministic for a given ``seed``.

    Returns ``(new_labels (n,) int64, flipped (n,) bool)``.
    """
    check(isinstance(num_classes, int) and num_classes >= 2,
          f"num_classes: expected an integer >= 2 (a label must have another class to go to), got {num_classes!r}")
    labels = check_labels(torch.as_tensor(labels), num_classes, "labels")
    check(isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0,
          f"fraction: expected a number in [0, 1], got {fraction!r}")
    n = labels.numel()
    g = torch.Generator().manual_seed(int(seed))
    chosen = torch.randperm(n, generator=g)[:int(round(fraction * n))]
    shift = torch.randint(1, num_classes, (chosen.numel(),), generator=g)
    new = labels.clone()
    new[chosen] = (labels[chosen] + shift) % num_classes
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[chosen] = True
    return new, flipped


def detection_curve(ranking_scores, flipped_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of flipped items found against the fraction checked, checking high scores first.

    Items are checked in decreasing order of ``ranking_scores`` (ties: lower index first).
    With ``n`` items and ``F`` of them flipped, the curve has ``n + 1`` points:
    ``fraction_checked[k] = k / n`` and ``fraction_found[k]`` = (flipped items among the
    first ``k`` checked) / ``F``; both start at 0 and end at 1.

    Returns ``(fraction_checked, fraction_found)``, float64 tensors of shape ``(n + 1,)``.
    """
    scores = torch.as_tensor(ranking_scores).detach().to(torch.float64).flatten()
    mask = torch.as_tensor(flipped_mask).flatten()
    check(mask.dtype == torch.bool, f"flipped_mask: expected a boolean tensor, got {mask.dtype}")
    check(scores.shape == mask.shape,
          f"ranking_scores: expected {mask.numel()} scores to match flipped_mask, got {scores.numel()}")
    check(bool(torch.isfinite(scores).all()), "ranking_scores: contains NaN or inf")
    total = int(mask.sum())
    check(total > 0, "flipped_mask: no item is flipped; nothing to find")
    order = torch.argsort(-scores, stable=True)
    found = torch.cat([torch.zeros(1, dtype=torch.float64), mask[order].cumsum(0).to(torch.float64)]) / total
    checked = torch.arange(mask.numel() + 1, dtype=torch.float64) / mask.numel()
    return checked, found


def found_at(curve: tuple[torch.Tensor, torch.Tensor], fraction: float) -> float:
    """``fraction_found`` after checking the first ``round(fraction * n)`` items of ``curve``."""
    checked, found = curve
    check(0.0 <= fraction <= 1.0, f"fraction: expected a number in [0, 1], got {fraction!r}")
    n = checked.numel() - 1
    return float(found[int(round(fraction * n))])


def curve_area(curve: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Area under ``fraction_found`` over ``fraction_checked`` in [0, 1] (trapezoids).

    Random order gives about 0.5; a perfect ranking of ``F`` flips among ``n`` gives
    ``1 - F / (2 n)``.
    """
    checked, found = curve
    return float(torch.trapezoid(found, checked))


@dataclass
class MislabelResult:
    """What :func:`mislabel_experiment` found.

    Attributes:
        flipped: ``(n,)`` bool, which training labels were flipped.
        labels: ``(n,)`` the noisy labels the model was trained on.
        rankings: ``{"self_influence", "loss", "random"}`` -> ``(n,)`` scores, higher is
            checked first: ``|I_up,loss(z_j, z_j)|``, the training loss ``L(z_j, theta_hat)``
            on the noisy label, and a seeded uniform draw.
        curves: the same keys -> :func:`detection_curve` of each ranking.
        summary: the same keys -> ``{"found@5%", "found@10%", "found@20%", "auc"}``.
        model: the model trained on the noisy labels.
        train_result: its :class:`~whylens.train.TrainResult`.
        influence: the fitted :class:`~whylens.influence.Influence`.
        seconds: ``{"train", "influence", "total"}`` wall times.
    """

    flipped: torch.Tensor
    labels: torch.Tensor
    rankings: dict[str, torch.Tensor]
    curves: dict[str, tuple[torch.Tensor, torch.Tensor]]
    summary: dict[str, dict[str, float]]
    model: nn.Module = field(repr=False)
    train_result: TrainResult = field(repr=False)
    influence: object = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)


def _summary(curve) -> dict[str, float]:
    out = {f"found@{round(c * 100)}%": found_at(curve, c) for c in CHECKPOINTS}
    out["auc"] = curve_area(curve)
    return out


def mislabel_experiment(model_factory: Callable[[], nn.Module], train, fraction: float = 0.1,
                        l2: float = 1e-3, solver: str = "exact", seed: int = 0,
                        train_kwargs: dict | None = None, influence_kwargs: dict | None = None,
                        progress: bool = True) -> MislabelResult:
    """Flip a fraction of the labels, train, and rank the training set to find the flips.

    1. ``flip_labels(labels, fraction, K, seed)``, ``K`` the model's number of classes.
    2. ``model = model_factory()`` (under ``torch.manual_seed(seed)``, without touching the
       caller's random state), then ``whylens.train.train(model, noisy data, l2=l2,
       seed=seed, **train_kwargs)`` minimising ``mean_i L(z_i) + (l2/2)||theta||^2``.
    3. ``Influence(model, solver, l2=l2, **influence_kwargs).fit(noisy data)``, and the
       self-influence ``I_up,loss(z_j, z_j) = -g_jᵀ (H + d I)⁻¹ g_j`` of every item.
    4. Three rankings, checked from the highest score down: ``|self-influence|``, the
       training loss on the noisy label, and random; their detection curves and summary.

    Args:
        model_factory: builds a fresh untrained model, e.g.
            ``lambda: build_model("logistic", in_channels=1, image_size=8, num_classes=10)``.
        train: :class:`~whylens.ImageSet` or ``(images, labels)`` with the clean labels.
        fraction: fraction of labels to flip, in (0, 1].
        l2: ``lambda`` of the training objective, also given to the influence.
        solver: an influence solver name (``"exact"``, ``"ekfac"``, ...).
        train_kwargs: more arguments for :func:`whylens.train.train` (``method``, ``epochs``, ...).
        influence_kwargs: more arguments for :class:`~whylens.influence.Influence`
            (``damping``, ``params``, solver options).
    Returns a :class:`MislabelResult`.
    """
    from .api import Influence

    t0 = time.perf_counter()
    check(callable(model_factory), "model_factory: expected a function returning a new model")
    check(isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0,
          f"fraction: expected a number in (0, 1], got {fraction!r}")
    images, labels = as_tensors(train, "train")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_factory()
    check(isinstance(model, nn.Module), f"model_factory: expected it to return a torch.nn.Module, "
                                        f"got {type(model).__name__}")
    with torch.no_grad():
        k = num_classes_of(predict(model, images[:1]))
    noisy, flipped = flip_labels(labels, fraction, k, seed)
    check(bool(flipped.any()), f"fraction: {fraction} of {len(labels)} items flips none; use a larger fraction")
    data = (images, noisy)

    t1 = time.perf_counter()
    result = fit_model(model, data, l2=l2, **{"seed": seed, "progress": progress, **(train_kwargs or {})})
    t2 = time.perf_counter()
    inf = Influence(model, solver=solver, l2=l2, **{"progress": progress, **(influence_kwargs or {})}).fit(data)
    self_inf = inf.self_influence().detach().to(torch.float64)
    t3 = time.perf_counter()

    with torch.no_grad():
        train_loss = loss_for(model)(predict(model, images), noisy).to(torch.float64)
    g = torch.Generator().manual_seed(int(seed) + 1)
    rankings = {"self_influence": self_inf.abs(), "loss": train_loss,
                "random": torch.rand(len(noisy), generator=g, dtype=torch.float64)}
    curves = {name: detection_curve(r, flipped) for name, r in rankings.items()}
    return MislabelResult(flipped=flipped, labels=noisy, rankings=rankings, curves=curves,
                          summary={name: _summary(c) for name, c in curves.items()}, model=model,
                          train_result=result, influence=inf,
                          seconds={"train": t2 - t1, "influence": t3 - t2,
                                   "total": time.perf_counter() - t0})
