"""Matrix-free solvers on Hessian-vector products: conjugate gradient and LiSSA.

Both solve ``(H + d I) X = V`` for all columns of ``V`` ``(p, m)`` together, with ``H = grad^2 J``
applied by reverse-over-reverse HVPs (:func:`whylens.influence.grads.hvp_fn`). They keep a
reference to the training data, because every solve runs HVPs on it.
"""

from __future__ import annotations

import math
import warnings

import torch
from tqdm.auto import tqdm

from ..errors import WhylensError, check
from .base import Problem, Solver, not_pd_error
from .grads import hvp_fn


class CGSolver(Solver):
    """Conjugate gradient on ``(H + d I) x = v``, one CG recursion per column, run as a block.

    Each column has its own step sizes (``alpha_j = r_j^T r_j / p_j^T A p_j``) and stops when
    ``||r_j|| <= tol ||v_j||``; converged columns leave the block. Stops after ``max_iter``
    iterations and warns (``info["converged"]`` False, ``info["max_relative_residual"]``).
    Negative curvature (``p^T (H + d I) p <= 0``: ``H + d I`` is indefinite) is a one-line error
    that asks for damping. Options: ``tol`` (1e-8), ``max_iter`` (500).
    """

    name = "cg"
    defaults = {"tol": 1e-8, "max_iter": 500}
    needs_data = True

    def fit(self, problem: Problem) -> None:
        self.problem = problem
        self.info = {"damping": self.damping}

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        problem = self._need_problem()
        d, tol = self.damping, float(self.options["tol"])
        apply = problem.hvp
        X = torch.zeros_like(V)
        R = V.clone()
        P = R.clone()
        rs = (R * R).sum(0)
        bnorm = rs.sqrt()
        active = bnorm > 0
        it = 0
        bar = tqdm(total=int(self.options["max_iter"]), desc="CG", disable=not problem.progress, leave=False)
        while bool(active.any()) and it < int(self.options["max_iter"]):
            idx = active.nonzero().flatten()
            Pa = P[:, idx]
            AP = apply(Pa) + d * Pa
            pAp = (Pa * AP).sum(0)
            if bool((pAp <= 0).any()):
                curv = float((pAp / (Pa * Pa).sum(0)).min())
                raise not_pd_error(self.name, curv - d, d, what="a Rayleigh quotient")
            alpha = rs[idx] / pAp
            X[:, idx] += alpha * Pa
            R[:, idx] -= alpha * AP
            rs_new = (R[:, idx] ** 2).sum(0)
            P[:, idx] = R[:, idx] + (rs_new / rs[idx]) * Pa
            rs[idx] = rs_new
            active = rs.sqrt() > tol * bnorm
            it += 1
            bar.update(1)
        bar.close()
        rel = float((rs.sqrt() / bnorm.clamp_min(1e-300)).max()) if V.shape[1] else 0.0
        self.info.update({"iterations": it, "max_relative_residual": rel,
                          "converged": not bool(active.any())})
        if active.any():
            warnings.warn(f"solver 'cg': {int(active.sum())} of {V.shape[1]} columns did not reach "
                          f"tol={tol:g} in max_iter={it} iterations (worst relative residual "
                          f"{rel:.2g}); raise max_iter or damping", stacklevel=3)
        return X


def power_iteration(apply, p: int, dtype, iters: int = 30, seed: int = 0) -> float:
    """Largest eigenvalue (by magnitude) of a symmetric operator by power iteration."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(p, generator=g, dtype=torch.float64).to(dtype)
    v /= v.norm()
    lam = 0.0
    for _ in range(iters):
        w = apply(v)
        lam = float(v @ w)
        norm = float(w.norm())
        if not math.isfinite(norm) or norm == 0:
            break
        v = w / norm
    return lam


class LiSSASolver(Solver):
    """LiSSA (Agarwal et al. 2017): a stochastic Neumann series for ``(H + d I)^-1 V``.

    Recursion, with minibatch estimates ``H_b`` of ``H`` (minibatch mean loss + ``l2 I``):

        h_0 = v,   h_{t+1} = v + (1 - d/s) h_t - H_b h_t / s,   result h_depth / s,

    whose fixed point is ``s (H + d I)^-1 v``: with ``d_rec = d/s`` the user-facing ``damping`` is
    exactly the damping of the solve. It converges when ``0 < lambda + d < 2 s`` for every
    eigenvalue, at rate ``1 - (lambda_min + d)/s`` per step. The scale ``s`` defaults to
    ``1.1 (lambda_max + d)`` with ``lambda_max`` from ``power_iters`` power iterations on the
    full-batch HVP. Minibatches come from a fresh seeded permutation each epoch over the data;
    ``batch_size=None`` uses full-batch HVPs (deterministic). ``repeats`` independent runs are
    averaged. A non-finite iterate, or one whose norm passes ``divergence * ||v||``, stops with a
    one-line error (never NaN scores).

    Options: ``depth`` (1000), ``repeats`` (1), ``batch_size`` (256), ``scale`` (None = auto),
    ``power_iters`` (30), ``seed`` (0), ``divergence`` (1e8).
    """

    name = "lissa"
    defaults = {"depth": 1000, "repeats": 1, "batch_size": 256, "scale": None, "power_iters": 30,
                "seed": 0, "divergence": 1e8}
    needs_data = True

    def __init__(self, damping=0.0, **options):
        super().__init__(damping, **options)
        for key in ("depth", "repeats", "power_iters"):
            check(isinstance(self.options[key], int) and self.options[key] > 0,
                  f"{key}: expected a positive integer, got {self.options[key]!r}")
        bs = self.options["batch_size"]
        check(bs is None or (isinstance(bs, int) and bs > 0),
              f"batch_size: expected a positive integer or None (full batch), got {bs!r}")
        sc = self.options["scale"]
        check(sc is None or (isinstance(sc, (int, float)) and sc > 0),
              f"scale: expected a positive number or None (auto), got {sc!r}")

    def fit(self, problem: Problem) -> None:
        self.problem = problem
        lam_max = None
        scale = self.options["scale"]
        if scale is None:
            lam_max = power_iteration(problem.hvp, problem.fn.p, problem.fn.dtype,
                                      int(self.options["power_iters"]), int(self.options["seed"]))
            scale = 1.1 * (abs(lam_max) + self.damping)
        self.info = {"damping": self.damping, "scale": float(scale),
                     "recursion_damping": self.damping / float(scale),
                     "lambda_max_estimate": lam_max}

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        problem = self._need_problem()
        check("scale" in self.info, "solver 'lissa': not fitted; call fit(train) first")
        s, d = float(self.info["scale"]), self.damping / float(self.info["scale"])
        n = problem.n
        bs = self.options["batch_size"] or n
        bs = min(bs, n)
        full = bs >= n
        limit = float(self.options["divergence"]) * V.norm(dim=0).clamp_min(1e-300)
        gen = torch.Generator().manual_seed(int(self.options["seed"]))
        full_apply = problem.hvp if full else None
        total = torch.zeros_like(V)
        reps, depth = int(self.options["repeats"]), int(self.options["depth"])
        bar = tqdm(total=reps * depth, desc="LiSSA", disable=not problem.progress, leave=False)
        for _ in range(reps):
            h = V.clone()
            order, pos = torch.randperm(n, generator=gen), 0
            for t in range(depth):
                if full:
                    Hh = full_apply(h)
                else:
                    if pos + bs > n:  # a new epoch: a fresh permutation, never the same batch again
                        order, pos = torch.randperm(n, generator=gen), 0
                    idx = order[pos:pos + bs]
                    pos += bs
                    Hh = hvp_fn(problem.fn, problem.images[idx], problem.labels[idx], problem.l2,
                                problem.hvp_chunk)(h)
                h = V + (1 - d) * h - Hh / s
                if t % 10 == 9 or t == depth - 1:
                    norms = h.norm(dim=0)
                    if not bool(torch.isfinite(norms).all()) or bool((norms > limit).any()):
                        bar.close()
                        raise WhylensError(
                            f"solver 'lissa': diverged at step {t + 1} (iterate norm "
                            f"{float(norms.max()):.3g}); use a larger scale (now {s:.3g}) or damping "
                            f"(now {self.damping:g}; H + damping*I must be positive definite)")
                bar.update(1)
            total += h / s
        bar.close()
        return total / reps
