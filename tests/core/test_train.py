import numpy as np
import pytest
import torch

from whylens import accuracy, build_model, digits_split, objective, train


@pytest.fixture(scope="module")
def digits():
    return digits_split()


def test_lbfgs_logistic_regression_matches_sklearn_on_the_same_objective(digits):
    """J = mean CE + (l2/2)||theta||^2 with the bias penalised too; sklearn minimises
    C * sum CE + ||W~||^2 / 2 over augmented features [x, 1] without intercept, i.e. the same
    minimiser when C = 1 / (n * l2)."""
    from sklearn.linear_model import LogisticRegression as SkLR
    tr, te = digits
    l2 = 0.01
    m = build_model("logistic", in_channels=1, image_size=8, num_classes=10)
    res = train(m, tr, l2=l2, progress=False)
    assert res.grad_norm < 1e-6
    x = np.c_[tr.images.flatten(1).double().numpy(), np.ones(len(tr))]
    sk = SkLR(C=1.0 / (len(tr) * l2), fit_intercept=False, tol=1e-12, max_iter=5000).fit(x, tr.labels.numpy())
    ours = torch.cat([m.linear.weight.detach().double(), m.linear.bias.detach().double()[:, None]], 1).numpy()
    # sklearn's multinomial parameters are identified up to nothing here (the L2 term pins them down)
    assert np.abs(ours - sk.coef_).max() < 1e-3 * np.abs(sk.coef_).max()
    acc = accuracy(m, te)
    print(f"digits logistic regression test accuracy {acc:.3f} (NOTES: 0.892)")
    assert abs(acc - 0.892) < 0.01


def test_adam_training_is_deterministic_and_reports_the_objective(digits):
    tr, _ = digits
    tr = tr[:300]
    weights = []
    for _ in range(2):
        torch.manual_seed(3)
        m = build_model("cnn", in_channels=1, num_classes=10, widths=(4, 8))
        res = train(m, tr, l2=1e-3, epochs=3, seed=5, progress=False)
        weights.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
        assert abs(res.objective - float(objective(m, tr.images, tr.labels, 1e-3).detach())) < 1e-5
    assert torch.equal(weights[0], weights[1])


def test_polish_lowers_the_objective(digits):
    tr, _ = digits
    res = {}
    for polish in (0, 150):
        torch.manual_seed(0)
        m = build_model("cnn", in_channels=1, num_classes=10, widths=(4, 8), activation="tanh")
        res[polish] = train(m, tr[:200], l2=0.01, epochs=10, lr=0.03, polish=polish, progress=False)
    print({k: (r.objective, r.grad_norm) for k, r in res.items()})
    # From Adam's plateau (J ~ log 10) L-BFGS must make real progress on the same objective.
    assert res[150].objective < res[0].objective - 0.05
