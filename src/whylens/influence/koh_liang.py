"""Koh & Liang's validation protocol: exact influence against leave-one-out retraining.

For a trained model (at, or near, a minimum of ``J = (1/n) sum_i L(z_i) + (l2/2)||theta||^2``):

1. the ``n_test`` test items with the highest loss are fixed before anything is measured;
2. exact influence ``scores[t, j] = I_up,loss(z_j, z_t)`` is computed for them (damping
   ``damping``, or Koh & Liang's rule, a little over ``|lambda_min|``, when ``H`` is more
   indefinite than that);
3. for each test item the ``top`` training items by ``|scores[t, j]|`` are left out one at a
   time and the model retrained warm-started (:func:`~whylens.influence.loo.leave_one_out`;
   a retrain shared between test items is done once and measures all of them);
4. the predicted change ``-scores[t, j] / n`` is compared with the actual change of the test
   loss (:func:`~whylens.influence.loo.loo_agreement`: Pearson, Spearman, slope).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.imageset import as_tensors
from ..errors import WhylensError, check
from ..outputs import per_sample_loss
from ..train import predict
from .api import Influence
from .loo import LOOResult, leave_one_out, loo_agreement


@dataclass
class KohLiangStudy:
    """What :func:`koh_liang_study` measured.

    ``chosen``: the test indices (highest loss first); ``test_loss`` ``(N_test,)`` at
    ``theta_hat``; ``scores`` ``(len(chosen), n)``; ``tops[i]``: the ``top`` training indices
    of test item ``i``; ``union``: every index retrained (``loo.delta`` rows follow it);
    ``per_test[i]``: ``loo_agreement`` of test item ``i`` plus its ``"test"`` index.
    """

    chosen: list[int]
    test_loss: torch.Tensor
    influence: Influence
    damping: float
    scores: torch.Tensor
    tops: list[list[int]]
    union: list[int]
    loo: LOOResult
    per_test: list[dict]

    @property
    def mean_pearson(self) -> float:
        return sum(a["pearson"] for a in self.per_test) / len(self.per_test)


def koh_liang_study(model: nn.Module, train, test, l2: float, *, n_test: int = 3, top: int = 30,
                    damping: float = 1e-3, max_iter: int = 50,
                    dtype: torch.dtype = torch.float32) -> KohLiangStudy:
    """Run the protocol of the module docstring on ``model``; ``train``/``test`` are ImageSets or pairs.

    ``dtype`` is the precision of the curvature (float32 is a few times faster for convolutions
    on CPU; the scores agree with float64 to ~1e-4); the retrains are float64 whatever it is.
    ``max_iter`` bounds the Newton steps of each retrain. A network whose scores are all equal
    (a constant network) is a one-line error: leave-one-out would measure nothing.
    """
    x, y = as_tensors(test, "test")
    check(isinstance(n_test, int) and 0 < n_test <= len(y), f"n_test: expected 1..{len(y)}, got {n_test!r}")
    with torch.no_grad():
        test_loss = per_sample_loss(predict(model, x), y).double()
    chosen = test_loss.argsort(descending=True)[:n_test].tolist()  # fixed before measuring anything
    try:
        inf = Influence(model, "exact", damping=damping, l2=l2, dtype=dtype, progress=False).fit(train)
    except WhylensError:  # indefinite beyond `damping`: the damping whylens suggests
        inf = Influence(model, "exact", damping="auto", l2=l2, dtype=dtype, progress=False).fit(train)
    scores = inf.scores(x[chosen], y[chosen]).double()
    check(float(scores.std()) > 0, "model: all influence scores are equal (a constant network); "
                                   "leave-one-out would measure nothing")
    tops = [scores[i].abs().argsort(descending=True)[:top].tolist() for i in range(len(chosen))]
    union = sorted(set().union(*tops))
    # The undamped Hessian the exact solver factored (eigh) is a good preconditioner for the retrains.
    state = inf.solver.state()
    precond = (state["evecs"] * state["evals"]) @ state["evecs"].T if "evecs" in state else "auto"
    res = leave_one_out(model, train, union, (x[chosen], y[chosen]), l2, preconditioner=precond,
                        max_iter=max_iter, progress=False)
    n = inf.n
    per_test = []
    for i, t in enumerate(chosen):
        rows = [union.index(j) for j in tops[i]]
        per_test.append({"test": t, **loo_agreement(-scores[i, tops[i]] / n, res.delta[rows, i])})
    return KohLiangStudy(chosen, test_loss, inf, float(inf.info["damping"]), scores, tops, union, res,
                         per_test)
