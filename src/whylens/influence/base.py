"""The one interface every influence solver implements.

A solver is fitted once on the training problem (curvature: a dense Hessian, Kronecker
factors, eigenpairs, a scale...), then answers ``solve(V) = (H + damping I)^-1 V`` for many
right-hand sides at once (``V`` ``(p, m)``), with ``H`` the Hessian of the mean training
objective ``J(theta) = (1/n) sum_i L(z_i, theta) + (l2/2)||theta||^2`` (or its approximation).

Scores are then ``-g_test^T (H + damping I)^-1 g_j`` (:meth:`Solver.scores`), Koh & Liang's
``I_up,loss(z_j, z_test)``: negative = helpful, positive = harmful; removing ``z_j`` changes
the test loss by about ``-score / n``. Baselines (TracIn, gradient dot/cosine) fit no
curvature: their ``solve`` is the identity (or they override :meth:`scores`), and TracIn
weights gradients taken at several checkpoints (:meth:`Solver.points`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import WhylensError, check
from .functional import ModelFunction
from .grads import DEFAULT_CHUNK, hvp_fn


@dataclass
class Problem:
    """What a solver may use to fit: the model function, the training data and ``J``'s ``l2``."""

    fn: ModelFunction
    images: torch.Tensor
    labels: torch.Tensor
    l2: float
    chunk_size: int = DEFAULT_CHUNK
    progress: bool = False

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def hvp_chunk(self) -> int:
        """Items per HVP graph: HVP memory is activations, not ``p``-sized rows, so 4 chunks."""
        return 4 * self.chunk_size

    def operator(self, images=None, labels=None):
        """A fresh :class:`~whylens.influence.grads.HessianOperator` (minibatch if data given)."""
        if images is None:
            images, labels = self.images, self.labels
        return hvp_fn(self.fn, images, labels, self.l2, self.hvp_chunk)

    def hvp(self, V: torch.Tensor) -> torch.Tensor:
        """Full-batch ``grad^2 J V`` (no damping); the chunk graphs are reused between calls."""
        if getattr(self, "_op", None) is None:
            self._op = self.operator()
        return self._op(V)

    def release(self) -> None:
        """Drop the cached HVP graphs."""
        self._op = None


def check_damping(damping, allow_auto: bool = False):
    """Return ``damping`` as a float >= 0 (or ``"auto"`` where allowed), else raise."""
    if allow_auto and damping == "auto":
        return "auto"
    ok = isinstance(damping, (int, float)) and not isinstance(damping, bool) \
        and math.isfinite(damping) and damping >= 0
    hint = "a number >= 0 or 'auto'" if allow_auto else "a number >= 0"
    check(ok, f"damping: expected {hint}, got {damping!r}")
    return float(damping)


class Solver:
    """Base class: fit curvature on a :class:`Problem`, then ``solve(V) ~ (H + damping I)^-1 V``.

    Subclasses set ``name``, ``defaults`` (their options and default values) and implement
    :meth:`fit` and :meth:`solve`; :meth:`state`/:meth:`load_state` give the tensors that
    :meth:`whylens.Influence.save` stores, :attr:`info` the JSON-able facts (damping used,
    eigenvalue range, convergence).
    """

    name = "base"
    defaults: dict = {}
    #: whether ``solve`` needs the training data (HVPs) at scoring time
    needs_data = False
    #: working precision when Influence(dtype=None)
    dtype = torch.float64
    allow_auto_damping = False

    def __init__(self, damping=0.0, **options):
        unknown = sorted(set(options) - set(self.defaults))
        check(not unknown, f"{unknown[0] if unknown else ''}: not an option of solver {self.name!r}; "
                           f"expected some of {sorted(self.defaults)}")
        self.damping = check_damping(damping, self.allow_auto_damping)
        self.options = {**self.defaults, **options}
        self.info: dict = {}
        self.problem: Problem | None = None

    # -- what the Influence object calls ---------------------------------------------------
    def select(self, model, params):
        """The ``params`` (module names or ``None``) this solver differentiates; may refine them."""
        return params

    def fit(self, problem: Problem) -> None:
        raise NotImplementedError

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        """``(H + damping I)^-1 V`` for ``V`` ``(p, m)`` (approximate for most solvers)."""
        raise NotImplementedError

    def points(self, model) -> list[tuple[dict | None, float]]:
        """``[(state_dict_c or None, weight_c)]``: where gradients are taken (``None``: the model's
        current weights) and how the scores at each point are weighted (TracIn checkpoints)."""
        return [(None, 1.0)]

    def bind(self, fn: ModelFunction) -> None:
        """Learn the layout of ``theta`` (called after fit and after load)."""

    def scores(self, G_test: torch.Tensor, G_train: torch.Tensor) -> torch.Tensor:
        """``-G_test (H + damping I)^-1 G_train^T`` ``(m, n)``: ``I_up`` scores (negative = helpful)."""
        return -(self.solve(G_test.T).T @ G_train.T)

    def self_scores(self, G: torch.Tensor) -> torch.Tensor:
        """``-g_j^T (H + damping I)^-1 g_j`` for each row of ``G`` ``(b, p)``."""
        return -(G * self.solve(G.T).T).sum(dim=1)

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        self.info = dict(info)
        if "damping" in info and self.damping == "auto":
            self.damping = float(info["damping"])

    def attach(self, problem: Problem) -> None:
        """Give a loaded solver the training problem it needs at scoring time (``needs_data``)."""
        self.problem = problem

    def _need_problem(self) -> Problem:
        if self.problem is None:
            raise WhylensError(f"solver {self.name!r}: needs the training data to solve; "
                               "call fit(train) or Influence.load(dir, model, train=...)")
        return self.problem


def suggest_damping(lam_min: float) -> float:
    """Koh & Liang's rule: damp by a little more than the most negative eigenvalue."""
    return max(abs(lam_min) * 1.1, 1e-8)


def not_pd_error(solver: str, lam_min: float, damping: float, what: str = "smallest eigenvalue",
                 extra: str = "") -> WhylensError:
    """The one-line error for an indefinite ``H + damping I``, with the damping to use."""
    return WhylensError(
        f"damping: H + damping*I is not positive definite for solver {solver!r} ({what} of H "
        f"{lam_min:.3g}, damping {damping:.3g}); the model is probably not at a minimum of J. "
        f"Use damping={suggest_damping(lam_min):.2g} or more{extra}")
