"""Influence functions (Koh & Liang 2017): which training images made the model decide so.

``scores[t, j] = I_up,loss(z_j, z_t) = -g_t^T H^-1 g_j`` with ``H`` the Hessian of the mean
training objective ``J = (1/n) sum_i L(z_i) + (l2/2)||theta||^2``: negative = helpful, positive
= harmful; removing ``z_j`` changes the test loss by about ``-scores[t, j] / n``.
See :class:`Influence` for the solvers and the other measures.
"""

from .api import Influence, Ranked, TopInfluence
from .arnoldi import ArnoldiSolver
from .base import Problem, Solver
from .baselines import GradCosSolver, GradDotSolver, TracInSolver
from .ekfac import EKFACSolver
from .exact import ExactSolver
from .functional import ModelFunction, flatten, select_parameters, unflatten
from .grads import HessianOperator, hvp, per_sample_grads
from .iterative import CGSolver, LiSSASolver
from .koh_liang import KohLiangStudy, koh_liang_study
from .loo import leave_one_out
from .solvers import SOLVERS
from .store import data_fingerprint, model_fingerprint

# --- leave-one-out / mislabel helpers (loo.py, mislabel.py): add their imports above, in sorted
# order (an import below __all__ trips ruff's E402), and their names to __all__'s last line ---
__all__ = ["Influence", "Ranked", "TopInfluence", "Solver", "Problem", "SOLVERS", "ExactSolver",
           "CGSolver", "LiSSASolver", "ArnoldiSolver", "EKFACSolver", "TracInSolver", "GradDotSolver",
           "GradCosSolver", "ModelFunction", "flatten", "unflatten", "select_parameters", "hvp",
           "HessianOperator", "per_sample_grads", "model_fingerprint", "data_fingerprint",
           "leave_one_out", "koh_liang_study", "KohLiangStudy"]
