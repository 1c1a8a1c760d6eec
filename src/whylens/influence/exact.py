"""The ``exact`` solver: a dense ``(p, p)`` Hessian of ``J``, factored once.

``H = grad^2 J(theta)`` (``hessian="exact"``: the true Hessian, from HVPs with basis vectors,
except for the one parameter group whose block is verified to equal its Gauss-Newton block;
see :func:`~whylens.influence.grads.dense_hessian`) or the generalised Gauss-Newton matrix
``(1/n) sum_i J_i^T H_out,i J_i + l2 I``
(``hessian="gauss_newton"``: PSD by construction; equal to the Hessian on logistic regression).
Float64 by default (``Influence(dtype=torch.float32)`` halves memory and, for convolutions on CPU, is
about 5x faster per column).

Factoring: ``torch.linalg.eigh`` (``H = Q diag(lambda) Q^T``, then
``(H + d I)^-1 V = Q diag(1/(lambda + d)) Q^T V``) when ``p <= eigh_max``; above, a Cholesky
factor of ``H + d I`` plus the eigenvalues alone (``eigvalsh``), because a dense ``eigh``
with vectors is slow on CPUs (measured at p = 5,130 on one core: 73 s, against 8 s for the
eigenvalues and 2 s for the Cholesky factor). ``decomposition="eigh"`` or ``"cholesky"``
forces one.

``min_eigenvalue`` is reported; when ``H + damping I`` is not positive definite the fit stops
with a one-line error suggesting a damping (about ``1.1 |lambda_min|``), unless
``damping="auto"``, which picks ``d = max(0, 1.1 |lambda_min|)`` (at least enough to make
``lambda_min + d >= 1e-6 lambda_max``) and records it in ``info["damping"]``.
"""

from __future__ import annotations

import torch

from ..errors import WhylensError, check
from .base import Problem, Solver, not_pd_error
from .grads import dense_gauss_newton, dense_hessian


def extreme_eigenvalues(H: torch.Tensor) -> tuple[float, float]:
    """``(lambda_min, lambda_max)`` of a symmetric dense matrix (``eigvalsh``: values only).

    Values without vectors skip the costly back-transformation: measured at p = 5,130 on one
    core, 8 s against 73 s for ``eigh`` (Lanczos for the smallest eigenvalue was slower still:
    the spectrum of a damped Hessian is a large cluster at ``l2``).
    """
    vals = torch.linalg.eigvalsh(H)
    return float(vals[0]), float(vals[-1])


def auto_damping(lam_min: float, lam_max: float) -> float:
    """The damping ``damping="auto"`` picks: ``1.1 |lambda_min|`` if negative, and a floor."""
    d = max(0.0, -1.1 * lam_min)
    floor = 1e-6 * max(abs(lam_max), 1e-12)
    return max(d, floor - lam_min) if lam_min + d < floor else d


class ExactSolver(Solver):
    """Dense Hessian (or Gauss-Newton) of ``J``, eigendecomposed or Cholesky-factored in float64.

    Options: ``hessian`` (``"exact"`` | ``"gauss_newton"``), ``decomposition``
    (``"auto"`` | ``"eigh"`` | ``"cholesky"``), ``eigh_max`` (auto uses ``eigh`` up to this ``p``),
    ``max_params`` (refuse larger ``p``: the dense matrix is ``p^2`` doubles).
    After :meth:`fit`: ``info`` has ``min_eigenvalue``, ``max_eigenvalue``, ``damping``.
    """

    name = "exact"
    defaults = {"hessian": "exact", "decomposition": "auto", "eigh_max": 2048, "max_params": 10_000}
    allow_auto_damping = True

    def __init__(self, damping=0.0, **options):
        super().__init__(damping, **options)
        check(self.options["hessian"] in ("exact", "gauss_newton"),
              f"hessian: expected 'exact' or 'gauss_newton', got {self.options['hessian']!r}")
        check(self.options["decomposition"] in ("auto", "eigh", "cholesky"),
              f"decomposition: expected 'auto', 'eigh' or 'cholesky', got {self.options['decomposition']!r}")
        self.evals = self.evecs = self.chol = None

    @property
    def min_eigenvalue(self) -> float:
        return float(self.info.get("min_eigenvalue", float("nan")))

    @property
    def max_eigenvalue(self) -> float:
        return float(self.info.get("max_eigenvalue", float("nan")))

    def fit(self, problem: Problem) -> None:
        fn, p = problem.fn, problem.fn.p
        limit = int(self.options["max_params"])
        check(p <= limit, f"params: solver 'exact' builds a dense {p}x{p} Hessian; {p:,} selected "
                          f"parameters exceed the limit of {limit:,}; select fewer with params=[...] "
                          "or use solver='cg', 'arnoldi' or 'ekfac'")
        built: dict = {}
        if self.options["hessian"] == "exact":
            H = dense_hessian(fn, problem.images, problem.labels, problem.l2, problem.chunk_size,
                              problem.progress, info=built)
        else:
            H = dense_gauss_newton(fn, problem.images, problem.labels, problem.l2, problem.chunk_size,
                                   problem.progress)
        check(bool(torch.isfinite(H).all()), "model: the Hessian has NaN or inf entries")
        use_eigh = self.options["decomposition"] == "eigh" or (
            self.options["decomposition"] == "auto" and p <= int(self.options["eigh_max"]))
        if use_eigh:
            evals, evecs = torch.linalg.eigh(H)
            lam_min, lam_max = float(evals[0]), float(evals[-1])
        else:
            lam_min, lam_max = extreme_eigenvalues(H)
        d = auto_damping(lam_min, lam_max) if self.damping == "auto" else self.damping
        tiny = 1e-12 * max(abs(lam_max), 1e-300)
        if lam_min + d <= tiny:
            raise not_pd_error(self.name, lam_min, d, extra=", damping='auto', or hessian='gauss_newton'")
        if use_eigh:
            self.evals, self.evecs = evals, evecs
        else:
            H.diagonal().add_(d)
            L, bad = torch.linalg.cholesky_ex(H)
            if int(bad):
                raise not_pd_error(self.name, lam_min, d, extra=", damping='auto', or hessian='gauss_newton'")
            self.chol = L
        self.info = {"hessian": self.options["hessian"], "decomposition": "eigh" if use_eigh else "cholesky",
                     "min_eigenvalue": lam_min, "max_eigenvalue": lam_max,
                     "negative_eigenvalues": bool(lam_min < 0), "damping": float(d), "p": p, **built}
        self.damping_used = float(d)

    def _d(self) -> float:
        return float(self.info["damping"])

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        if self.evals is not None:
            return self.evecs @ ((self.evecs.T @ V) / (self.evals + self._d())[:, None])
        if self.chol is not None:
            return torch.cholesky_solve(V, self.chol)
        raise WhylensError("solver 'exact': not fitted; call fit(train) first")

    def self_scores(self, G: torch.Tensor) -> torch.Tensor:
        if self.evals is not None:
            return -(((G @ self.evecs) ** 2) / (self.evals + self._d())).sum(dim=1)
        W = torch.linalg.solve_triangular(self.chol, G.T, upper=False)
        return -(W * W).sum(dim=0)

    def state(self) -> dict[str, torch.Tensor]:
        if self.evals is not None:
            return {"evals": self.evals, "evecs": self.evecs}
        return {"chol": self.chol}

    def load_state(self, tensors, info) -> None:
        super().load_state(tensors, info)
        self.evals, self.evecs = tensors.get("evals"), tensors.get("evecs")
        self.chol = tensors.get("chol")
