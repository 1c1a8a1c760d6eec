"""Curvature-free baselines behind the solver interface, with the same sign convention.

All return *negative = helpful* (for ``measure="loss"``), like ``I_up,loss``:

* ``grad_dot``: ``scores[t, j] = -g_t^T g_j`` (``H`` replaced by ``I``);
* ``grad_cos``: ``scores[t, j] = -cos(g_t, g_j)`` (0 where a gradient is zero), which keeps
  gradient norms from making the same few items top every list;
* ``tracin`` (Pruthi et al. 2020, TracInCP): ``scores[t, j] = -sum_c lr_c g_t(theta_c)^T g_j(theta_c)``
  over checkpoints ``theta_c`` (``checkpoints=[state_dict or path, ...]``, ``learning_rates=[...]``,
  default 1.0 each); with no checkpoints, the current weights are the one checkpoint.
  Pruthi et al. report ``+sum lr g^T g`` (positive = proponent); whylens flips the sign so
  that a proponent is negative, as for influence functions.

The gradients are those of the per-sample loss (no ``l2`` term) and ``damping`` is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import WhylensError, check
from .base import Problem, Solver


class GradDotSolver(Solver):
    """``H = I``: ``scores = -G_test G_train^T`` (negative = helpful)."""

    name = "grad_dot"

    def fit(self, problem: Problem) -> None:
        self.info = {}

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        return V

    def self_scores(self, G: torch.Tensor) -> torch.Tensor:
        return -(G * G).sum(dim=1)


def _unit_rows(G: torch.Tensor) -> torch.Tensor:
    norms = G.norm(dim=1, keepdim=True)
    return torch.where(norms > 0, G / norms.clamp_min(1e-300), torch.zeros_like(G))


class GradCosSolver(GradDotSolver):
    """``scores = -cos(g_test, g_train)`` (negative = helpful); self-influence is ``-1``."""

    name = "grad_cos"

    def scores(self, G_test: torch.Tensor, G_train: torch.Tensor) -> torch.Tensor:
        return -(_unit_rows(G_test) @ _unit_rows(G_train).T)

    def self_scores(self, G: torch.Tensor) -> torch.Tensor:
        return -(_unit_rows(G) ** 2).sum(dim=1)


def _load_checkpoint(item, position: int) -> dict[str, torch.Tensor]:
    if isinstance(item, dict):
        return item
    check(isinstance(item, (str, os.PathLike)),
          f"checkpoints[{position}]: expected a state dict or a file path, got {type(item).__name__}")
    path = Path(item)
    if path.is_dir():
        path = path / "model.safetensors"
    check(path.is_file(), f"checkpoints[{position}]: {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise WhylensError(f"checkpoints[{position}]: {path} is not a readable state dict "
                           f"({type(exc).__name__})") from None
    check(isinstance(state, dict), f"checkpoints[{position}]: {path} does not hold a state dict")
    return state


class TracInSolver(GradDotSolver):
    """TracInCP: ``-sum_c lr_c g_test(theta_c)^T g_j(theta_c)`` (negative = helpful)."""

    name = "tracin"
    defaults = {"checkpoints": None, "learning_rates": None}

    def __init__(self, damping=0.0, **options):
        super().__init__(damping, **options)
        ckpts = self.options["checkpoints"]
        count = 1 if ckpts is None else len(ckpts)
        check(ckpts is None or count > 0, "checkpoints: expected a non-empty list, or None")
        lrs = self.options["learning_rates"]
        if lrs is None:
            lrs = [1.0] * count
        elif isinstance(lrs, (int, float)):
            lrs = [float(lrs)] * count
        lrs = [float(x) for x in lrs]
        check(len(lrs) == count, f"learning_rates: expected {count} values (one per checkpoint), "
                                 f"got {len(lrs)}")
        self.learning_rates = lrs

    def points(self, model):
        ckpts = self.options["checkpoints"]
        if ckpts is None:
            return [(None, self.learning_rates[0])]
        return [(_load_checkpoint(c, i), lr) for i, (c, lr) in enumerate(zip(ckpts, self.learning_rates))]
