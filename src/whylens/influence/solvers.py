"""The registry of solver names: ``Influence(model, solver=<name>)`` looks them up here."""

from __future__ import annotations

from .arnoldi import ArnoldiSolver
from .base import Solver
from .baselines import GradCosSolver, GradDotSolver, TracInSolver
from .ekfac import EKFACSolver
from .exact import ExactSolver
from .iterative import CGSolver, LiSSASolver

SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (ExactSolver, CGSolver, LiSSASolver, ArnoldiSolver, EKFACSolver,
                              TracInSolver, GradDotSolver, GradCosSolver)
}
