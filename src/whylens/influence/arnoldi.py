"""The ``arnoldi`` solver: ``H^-1`` restricted to the top eigenpairs of ``H`` (Schioppa et al. 2022).

Lanczos iteration (the symmetric Arnoldi process) with full reorthogonalisation on
full-batch HVPs builds an orthonormal Krylov basis ``Q`` ``(p, m)`` and the tridiagonal
``T = Q^T H Q``; the Ritz pairs of ``T`` approximate the extreme eigenpairs of ``H``. The
``rank`` Ritz pairs of largest ``|lambda|`` are kept and

    (H + d I)^-1 V  ~=  U diag(1 / (lambda + d)) U^T V,

i.e. ``V`` is projected onto the top-``rank`` eigenspace and inverted there; the component of
``V`` outside that space is dropped (that is the approximation: it ignores the small
eigenvalues, which a full inverse would weigh most). With ``rank = p`` it is exact.
Options: ``rank`` (100), ``iterations`` (Lanczos steps, default ``min(p, 2 rank + 20)``),
``seed`` (0).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..errors import WhylensError, check
from .base import Problem, Solver, not_pd_error


def lanczos(apply, p: int, steps: int, dtype, seed: int = 0, progress: bool = False):
    """``(Q (p, m), T (m, m))`` after ``m <= steps`` Lanczos steps with full reorthogonalisation."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(p, generator=g, dtype=torch.float64).to(dtype)
    q /= q.norm()
    Q = torch.zeros(steps, p, dtype=dtype)
    alphas, betas = [], []
    beta, q_prev = 0.0, torch.zeros_like(q)
    for j in tqdm(range(steps), desc="Lanczos", disable=not progress, leave=False):
        Q[j] = q
        w = apply(q)
        alpha = float(q @ w)
        w = w - alpha * q - beta * q_prev
        for _ in range(2):  # twice is enough (Kahan: "twice is enough")
            w -= Q[:j + 1].T @ (Q[:j + 1] @ w)
        alphas.append(alpha)
        beta = float(w.norm())
        if j + 1 == steps or beta <= 1e-10 * max(abs(a) for a in alphas):
            break  # an invariant subspace: the Ritz values are exact
        betas.append(beta)
        q_prev, q = q, w / beta
    m = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=dtype))
    if m > 1:
        off = torch.tensor(betas[:m - 1], dtype=dtype)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return Q[:m].T, T


class ArnoldiSolver(Solver):
    """Top-``rank`` eigenpairs of ``H`` by Lanczos; ``H^-1 ~ U diag(1/(lambda+d)) U^T`` on their span."""

    name = "arnoldi"
    defaults = {"rank": 100, "iterations": None, "seed": 0}

    def __init__(self, damping=0.0, **options):
        super().__init__(damping, **options)
        check(isinstance(self.options["rank"], int) and self.options["rank"] > 0,
              f"rank: expected a positive integer, got {self.options['rank']!r}")
        self.U = self.evals = None

    def fit(self, problem: Problem) -> None:
        p = problem.fn.p
        rank = min(int(self.options["rank"]), p)
        steps = self.options["iterations"] or min(p, 2 * rank + 20)
        check(isinstance(steps, int) and steps >= rank,
              f"iterations: expected an integer >= rank ({rank}), got {steps!r}")
        Q, T = lanczos(problem.hvp, p, min(steps, p), problem.fn.dtype, int(self.options["seed"]),
                       problem.progress)
        theta, S = torch.linalg.eigh(T)
        keep = theta.abs().argsort(descending=True)[:rank]
        lam = theta[keep]
        d = self.damping
        if bool((lam + d <= 0).any()):
            raise not_pd_error(self.name, float(lam.min()), d, what="a negative top eigenvalue")
        self.evals, self.U = lam, Q @ S[:, keep]
        self.info = {"damping": d, "rank": int(lam.numel()), "lanczos_steps": int(T.shape[0]),
                     "max_eigenvalue": float(theta.max()), "min_kept_eigenvalue": float(lam.min())}

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        if self.U is None:
            raise WhylensError("solver 'arnoldi': not fitted; call fit(train) first")
        return self.U @ ((self.U.T @ V) / (self.evals + self.damping)[:, None])

    def self_scores(self, G: torch.Tensor) -> torch.Tensor:
        return -(((G @ self.U) ** 2) / (self.evals + self.damping)).sum(dim=1)

    def state(self) -> dict[str, torch.Tensor]:
        return {"U": self.U, "evals": self.evals}

    def load_state(self, tensors, info) -> None:
        super().load_state(tensors, info)
        self.U, self.evals = tensors["U"], tensors["evals"]
