import copy

import pytest
import torch

import whylens
from whylens.evaluate.lds import linear_datamodeling_score, subset_masks, subset_measurements


@pytest.mark.slow
def test_lds_of_exact_influence_beats_gradient_dot_on_logistic_regression(digits, digits_logreg):
    tr, te = digits
    test = te[:50]
    masks = subset_masks(len(tr), subsets=20, fraction=0.5, seed=0)
    # convex model: the subset optimum is unique, so warm-starting from the full model is only faster
    actual = subset_measurements(lambda: copy.deepcopy(digits_logreg), tr, test, masks, l2=0.01, progress=False)
    lds = {}
    for solver in ("exact", "grad_dot"):
        s = whylens.Influence(digits_logreg, solver=solver, l2=0.01, progress=False).fit(tr).scores(test)
        lds[solver] = linear_datamodeling_score(s, masks, actual).lds
    print("LDS, digits logistic regression, 20 half-subsets, 50 test images:", lds)
    assert lds["exact"] > 0.5
    assert lds["exact"] > lds["grad_dot"]


def test_lds_is_one_for_a_perfect_linear_datamodel():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 30, generator=g, dtype=torch.float64)
    masks = subset_masks(30, subsets=10, seed=1)
    actual = 3.0 + masks.double() @ scores.T / 30  # exactly the linear prediction, shifted and scaled
    assert linear_datamodeling_score(scores, masks, actual).lds == pytest.approx(1.0)
    assert linear_datamodeling_score(-scores, masks, actual).lds == pytest.approx(-1.0)


@pytest.mark.slow
def test_lds_printed_for_the_cnn(digits, digits_cnn):
    """Networks retrained from a seed on random halves: LDS is far lower than on a convex model (TRAK's
    finding); printed, and only checked to be a valid correlation."""
    tr, te = digits
    test = te[:50]
    masks = subset_masks(len(tr), subsets=8, fraction=0.5, seed=0)

    def fresh():
        torch.manual_seed(0)
        return whylens.build_model("cnn", in_channels=1, num_classes=10)

    actual = subset_measurements(fresh, tr, test, masks, l2=1e-3, train_kwargs={"epochs": 20}, progress=False)
    lds = {}
    for solver, kw in (("ekfac", {"damping": 1e-3}), ("grad_dot", {})):
        s = whylens.Influence(digits_cnn, solver=solver, l2=1e-3, progress=False, **kw).fit(tr).scores(test)
        lds[solver] = linear_datamodeling_score(s, masks, actual).lds
    print("LDS, digits ReLU CNN, 8 half-subsets retrained from a seed, 50 test images:", lds)
    assert all(-1.0 <= v <= 1.0 for v in lds.values())
