"""Leave-one-out retraining against an independent optimiser, and exact influence against it.

The digits logistic regression (650 parameters, L2 0.01, 1,500 train / 297 test) is convex:
``theta_{-j}`` is unique, so the retrain is a true ground truth. The test image is fixed
before anything is measured: the test image with the highest loss at ``theta_hat`` (the one
a user would most want explained).
"""

import numpy as np
import pytest
import torch
from scipy import optimize
from scipy import stats as sp

import whylens
from whylens.errors import WhylensError
from whylens.influence import Influence
from whylens.influence.loo import leave_one_out, loo_agreement, polish

L2 = 0.01

def test_agreement_against_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2.0 * x + 1.0 + 0.3 * rng.normal(size=50)
    a = loo_agreement(x, y)
    fit = sp.linregress(x, y)
    print(f"\nagreement {a}")
    assert a["pearson"] == pytest.approx(sp.pearsonr(x, y)[0], abs=1e-12)
    assert a["spearman"] == pytest.approx(sp.spearmanr(x, y)[0], abs=1e-12)
    assert a["slope"] == pytest.approx(fit.slope, abs=1e-12)
    assert a["intercept"] == pytest.approx(fit.intercept, abs=1e-12)
    assert a["slope_origin"] == pytest.approx(float(x @ y / (x @ x)), abs=1e-12)
    assert a["n"] == 50
    with pytest.raises(WhylensError, match="actual"):
        loo_agreement(x, y[:10])


def _tiny_problem():
    """30 random 1x2x2 'images', 3 classes: small enough for scipy's BFGS to solve exactly."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 2, 2, generator=g)
    y = torch.randint(0, 3, (30,), generator=g)
    xt = torch.rand(4, 1, 2, 2, generator=g)
    yt = torch.randint(0, 3, (4,), generator=g)
    return (x, y), (xt, yt)


def _scipy_minimiser(x: np.ndarray, y: np.ndarray, l2: float, start: np.ndarray) -> np.ndarray:
    """argmin over (W, b) of mean softmax cross-entropy + (l2/2)(||W||^2 + ||b||^2), in numpy."""
    n, d = x.shape
    k = 3
    onehot = np.eye(k)[y]

    def f(v):
        W, b = v[:k * d].reshape(k, d), v[k * d:]
        z = x @ W.T + b
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        p = np.exp(logp)
        value = -(onehot * logp).sum() / n + 0.5 * l2 * (v @ v)
        dz = (p - onehot) / n
        return value, np.concatenate([(dz.T @ x).ravel(), dz.sum(0)]) + l2 * v

    def hessp(v, s):
        W, b = v[:k * d].reshape(k, d), v[k * d:]
        z = x @ W.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = x @ s[:k * d].reshape(k, d).T + s[k * d:]
        q = p * (dz - (p * dz).sum(1, keepdims=True)) / n
        return np.concatenate([(q.T @ x).ravel(), q.sum(0)]) + l2 * s

    v = optimize.minimize(f, start, jac=True, method="BFGS", options={"gtol": 1e-10}).x
    eye = np.eye(len(v))
    for _ in range(5):  # finish with exact Newton steps: BFGS stalls near 1e-9
        hess = np.stack([hessp(v, e) for e in eye], 1)
        v = v - np.linalg.solve(hess, f(v)[1])
    assert np.linalg.norm(f(v)[1]) < 1e-13
    return v


def test_retrain_matches_an_independent_optimiser():
    (x, y), (xt, yt) = _tiny_problem()
    model = whylens.build_model("logistic", in_channels=1, image_size=2, num_classes=3)
    # Untrained (all-zero weights): leave_one_out polishes to theta_hat itself.
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = leave_one_out(model, (x, y), [0, 7, 29], (xt, yt), L2, progress=False)
    print(f"\ntiny LR: grad norms {res.grad_norms.tolist()}, base {res.base_grad_norm:.1e}")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "model was modified"
    assert bool(res.converged.all()) and res.base_grad_norm <= 1e-9
    assert res.delta.shape == (3, 4)

    xn, yn = x.flatten(1).double().numpy(), y.numpy()
    start = np.zeros(3 * 4 + 3)
    full = _scipy_minimiser(xn, yn, L2, start)

    def test_losses(v):
        W, b = torch.tensor(v[:12]).view(3, 4), torch.tensor(v[12:])
        return torch.nn.functional.cross_entropy(xt.flatten(1).double() @ W.T + b, yt, reduction="none")

    base = test_losses(full)
    assert torch.allclose(res.base, base, atol=1e-8)
    for r, j in enumerate([0, 7, 29]):
        keep = np.arange(30) != j
        # Mean over the n-1 remaining points with the same l2: J_{-j} of the module docstring.
        theta_j = _scipy_minimiser(xn[keep], yn[keep], L2, full)
        expected = test_losses(theta_j) - base
        print(f"  remove {j}: whylens {res.delta[r].numpy()}  scipy {expected.numpy()}")
        assert torch.allclose(res.delta[r], expected, atol=1e-8, rtol=1e-6)


def test_bad_input_is_one_line():
    (x, y), test = _tiny_problem()
    model = whylens.build_model("logistic", in_channels=1, image_size=2, num_classes=3)
    with pytest.raises(WhylensError, match="remove: indices"):
        leave_one_out(model, (x, y), [30], test, L2, progress=False)
    with pytest.raises(WhylensError, match="remove: expected"):
        leave_one_out(model, (x, y), [], test, L2, progress=False)
    with pytest.raises(WhylensError, match="remove: expected a list of integer"):
        leave_one_out(model, (x, y), [0.5], test, L2, progress=False)
    with pytest.raises(WhylensError, match="measure"):
        leave_one_out(model, (x, y), [0], test, L2, measure="accuracy", progress=False)
    with pytest.raises(WhylensError, match="l2"):
        leave_one_out(model, (x, y), [0], test, -1.0, progress=False)
    with pytest.raises(WhylensError, match="preconditioner"):
        leave_one_out(model, (x, y), [0], test, L2, preconditioner="jacobi", progress=False)
    with pytest.raises(WhylensError, match="test labels"):
        leave_one_out(model, (x, y), [0], (test[0], test[1] + 5), L2, progress=False)


@pytest.fixture(scope="module")
def lr_setup(digits, logreg):
    tr, te = digits
    model64, gn = polish(logreg, tr, L2, progress=False)
    inf = Influence(model64, "exact", l2=L2, progress=False).fit(tr)
    with torch.no_grad():
        losses = whylens.per_sample_loss(whylens.predict(model64, te.images), te.labels)
    t = int(losses.argmax())  # fixed before anything is measured
    return tr, te, model64, gn, inf, t


@pytest.mark.slow
def test_exact_influence_predicts_loo_on_logistic_regression(lr_setup):
    tr, te, model64, gn, inf, t = lr_setup
    n = len(tr)
    scores = inf.scores(te[[t]])[0]
    top = scores.abs().argsort(descending=True)[:30].tolist()
    res = leave_one_out(model64, tr, top, te[[t]], L2, progress=False)
    predicted = -scores[top] / n
    a = loo_agreement(predicted, res.delta[:, 0])
    print(f"\nLR digits, test image {t} (loss {float(res.base[0]):.3f}), ||grad J|| {gn:.1e}, "
          f"30 retrains in {res.seconds:.2f} s, max ||grad J_-j|| {float(res.grad_norms.max()):.1e}")
    print(f"  Pearson {a['pearson']:.4f}  Spearman {a['spearman']:.4f}  slope {a['slope']:.3f} "
          f"(intercept {a['intercept']:.2e})  slope through origin {a['slope_origin']:.3f}")
    assert gn <= 1e-9 and bool(res.converged.all())
    assert a["pearson"] >= 0.98
    assert 0.8 <= a["slope"] <= 1.25
    assert 0.8 <= a["slope_origin"] <= 1.25


@pytest.mark.slow
def test_removing_helpful_raises_and_harmful_lowers_the_test_loss(lr_setup):
    tr, te, model64, _, inf, t = lr_setup
    scores = inf.scores(te[[t]])[0]
    helpful, harmful = int(scores.argmin()), int(scores.argmax())
    print(f"\nmost helpful {helpful} (score {float(scores[helpful]):.3f}), "
          f"most harmful {harmful} (score {float(scores[harmful]):.3f})")
    assert float(scores[helpful]) < 0 < float(scores[harmful])
    res = leave_one_out(model64, tr, [helpful, harmful], te[[t]], L2, progress=False)
    print(f"  retrained: removing the helpful one changes the test loss by {float(res.delta[0, 0]):+.5f}, "
          f"the harmful one by {float(res.delta[1, 0]):+.5f}")
    assert float(res.delta[0, 0]) > 0
    assert float(res.delta[1, 0]) < 0


@pytest.mark.slow
def test_margin_measure(lr_setup):
    """The margin side: influence with measure="margin" predicts the retrained margin change."""
    tr, te, model64, _, _, t = lr_setup
    inf = Influence(model64, "exact", l2=L2, measure="margin", progress=False).fit(tr)
    scores = inf.scores(te[[t]])[0]
    top = scores.abs().argsort(descending=True)[:15].tolist()
    res = leave_one_out(model64, tr, top, te[[t]], L2, measure="margin", progress=False)
    a = loo_agreement(-scores[top] / len(tr), res.delta[:, 0])
    print(f"\nmargin of test image {t}: Pearson {a['pearson']:.4f}  slope {a['slope']:.3f}")
    assert bool(res.converged.all())
    assert a["pearson"] >= 0.95
