"""Solvers against closed forms and against each other (digits logistic regression, small CNNs)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from whylens.data import digits_split
from whylens.errors import WhylensError
from whylens.influence import Influence, iterative
from whylens.influence.functional import ModelFunction
from whylens.influence.grads import dense_gauss_newton, dense_hessian, per_sample_grads
from whylens.models import build_model
from whylens.train import train

L2 = 0.01  # the lambda of J the models are trained with


N_ITER_TEST = 30  # test items for the matrix-free solvers (each solve is a loop of HVPs)


@pytest.fixture(scope="module")
def exact_scores(logreg_exact, digits):
    return logreg_exact.scores(digits[1][:N_ITER_TEST]).numpy()


# -- 1. exact equals the closed form ---------------------------------------------------------
def test_exact_equals_softmax_closed_form(logreg_exact, softmax_closed_form, digits, refs):
    _, te = digits
    ref = softmax_closed_form.scores(softmax_closed_form.grads(te.images, te.labels))
    got = logreg_exact.scores(te).numpy()
    assert got.shape == (297, 1500)
    err = refs.rel_err(got, ref)
    print(f"exact vs closed form: max relative error {err:.2e}")
    assert err < 1e-6
    # training gradients and self-influence against the closed form as well
    G = per_sample_grads(logreg_exact.model, digits[0], progress=False).numpy()
    assert refs.rel_err(G, softmax_closed_form.G_train) < 1e-9
    ref_self = -np.einsum("np,np->n", softmax_closed_form.G_train,
                          np.linalg.solve(softmax_closed_form.H, softmax_closed_form.G_train.T).T)
    assert refs.rel_err(logreg_exact.self_influence().numpy(), ref_self) < 1e-6
    assert logreg_exact.self_influence().max() < 0  # H is PD: upweighting lowers a point's own loss
    assert abs(logreg_exact.info["min_eigenvalue"] - np.linalg.eigvalsh(softmax_closed_form.H)[0]) < 1e-9


def test_exact_equals_binary_one_logit_closed_form(refs):
    tr, te = digits_split(classes=[1, 7])
    model = build_model("logistic", in_channels=1, image_size=8, num_classes=2, single_logit=True)
    train(model, tr, l2=L2, progress=False)
    ref_cf = refs.BinaryClosedForm(model, tr.images, tr.labels, L2)
    ref = ref_cf.scores(ref_cf.grads(te.images, te.labels))
    got = Influence(model, "exact", l2=L2, progress=False).fit(tr).scores(te).numpy()
    err = refs.rel_err(got, ref)
    print(f"binary exact vs closed form: max relative error {err:.2e}")
    assert err < 1e-6


# -- 2. the approximate solvers agree with exact ---------------------------------------------
@pytest.mark.parametrize("solver, options, threshold", [
    ("cg", {}, 0.99),
    ("lissa", {"depth": 500, "batch_size": 256}, 0.99),
    ("arnoldi", {"rank": 400}, 0.99),
    ("ekfac", {}, 0.95),
])
def test_solver_agrees_with_exact(solver, options, threshold, logreg, logreg_exact, digits, exact_scores, refs):
    tr, te = digits
    inf = Influence(logreg, solver, l2=L2, progress=False, **options).fit(tr)
    m = 10 if solver == "lissa" else N_ITER_TEST  # LiSSA: 500 minibatch HVPs per column
    got = inf.scores(te[:m]).numpy()
    exact_scores = exact_scores[:m]
    r = refs.pearson(got, exact_scores)
    print(f"{solver}{options}: Pearson {r:.4f} vs exact on the first {m} test images (info {inf.info})")
    if solver == "ekfac":  # cheap to score everything: the figure on all 297 test images too
        r_all = refs.pearson(inf.scores(te).numpy(), logreg_exact.scores(te).numpy())
        print(f"ekfac: Pearson {r_all:.4f} vs exact on all {len(te)} test images")
    assert r >= threshold
    if solver in ("cg", "arnoldi"):  # these are near-exact here, so also the scale is right
        assert refs.rel_err(got, exact_scores) < 2e-2


def test_cg_reports_non_convergence(logreg, digits, exact_scores):
    inf = Influence(logreg, "cg", l2=L2, progress=False, max_iter=3).fit(digits[0])
    with pytest.warns(UserWarning, match="did not reach"):
        inf.scores(digits[1][:4])
    assert inf.info["converged"] is False and inf.info["iterations"] == 3
    assert inf.info["max_relative_residual"] > 1e-3


def test_arnoldi_full_rank_is_exact(logreg, digits, exact_scores, refs):
    inf = Influence(logreg, "arnoldi", l2=L2, progress=False, rank=650, iterations=650).fit(digits[0])
    assert refs.rel_err(inf.scores(digits[1][:N_ITER_TEST]).numpy(), exact_scores) < 1e-6


def test_lissa_draws_fresh_minibatches(logreg, digits, monkeypatch):
    tr, te = digits
    seen = []
    original = iterative.hvp_fn

    def spy(fn, images, labels, *args, **kwargs):
        seen.append(images)
        return original(fn, images, labels, *args, **kwargs)

    monkeypatch.setattr(iterative, "hvp_fn", spy)
    inf = Influence(logreg, "lissa", l2=L2, progress=False, depth=12, batch_size=500, scale=1.0).fit(tr)
    seen.clear()
    inf.scores(te[:2])
    assert len(seen) == 12
    # 3 batches of 500 make an epoch: each epoch covers all 1,500 items once...
    rows = [{tuple(x.flatten().tolist()) for x in batch} for batch in seen]
    for e in range(4):
        epoch = rows[3 * e] | rows[3 * e + 1] | rows[3 * e + 2]
        assert len(epoch) == len({tuple(x.flatten().tolist()) for x in tr.images})
    # ...and a new epoch is a new permutation, not the same batches again
    assert rows[0] != rows[3] and rows[1] != rows[4]


def test_lissa_damping_maps_to_the_recursion(logreg, digits, logreg_exact, refs):
    # (H + d I)^-1 with the user's d: compare with exact at the same damping (full-batch HVPs).
    tr, te = digits
    d = 0.05
    exact = Influence(logreg, "exact", l2=L2, damping=d, progress=False).fit(tr).scores(te[:5]).numpy()
    inf = Influence(logreg, "lissa", l2=L2, damping=d, progress=False, depth=400, batch_size=None).fit(tr)
    got = inf.scores(te[:5]).numpy()
    assert inf.info["recursion_damping"] == pytest.approx(d / inf.info["scale"])
    assert inf.info["scale"] > inf.info["lambda_max_estimate"]
    assert refs.rel_err(got, exact) < 1e-4


def test_lissa_divergence_is_an_error(logreg, digits):
    inf = Influence(logreg, "lissa", l2=L2, progress=False, scale=0.05, depth=200, batch_size=None)
    inf.fit(digits[0])
    with pytest.raises(WhylensError, match="diverged.*larger scale"):
        inf.scores(digits[1][:3])


# -- 3. Gauss-Newton, negative eigenvalues and damping ---------------------------------------
def test_gauss_newton_equals_hessian_on_logistic_regression(logreg, digits):
    tr, _ = digits
    fn = ModelFunction(logreg)
    H = dense_hessian(fn, tr.images[:600], tr.labels[:600], L2)
    G = dense_gauss_newton(fn, tr.images[:600], tr.labels[:600], L2)
    assert float((H - G).abs().max()) < 1e-8 * float(H.abs().max())


@pytest.fixture(scope="module")
def rough_cnn():
    """A tiny tanh CNN after a few Adam epochs: far from a minimum, so H is indefinite."""
    torch.manual_seed(0)
    tr, _ = digits_split()
    tr = tr[:120]
    model = build_model("cnn", widths=(2, 4), activation="tanh")
    train(model, tr, l2=L2, epochs=3, lr=3e-2, progress=False)
    return model, tr


def _reference_hessian(model, tr):
    """grad^2 J by torch.autograd.functional.hessian of an explicit float64 objective."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat0 = torch.cat([p.detach().double().reshape(-1) for _, p in model.named_parameters()])
    model64 = build_model("cnn", widths=(2, 4), activation="tanh").double().eval()
    x = tr.images.double()

    def J(flat):
        params, start = {}, 0
        for n, s in zip(names, shapes):
            params[n] = flat[start:start + s.numel()].reshape(s)
            start += s.numel()
        logits = torch.func.functional_call(model64, params, (x,))
        return torch.nn.functional.cross_entropy(logits, tr.labels) + 0.5 * L2 * (flat ** 2).sum()

    return torch.autograd.functional.hessian(J, flat0)


def test_negative_eigenvalues_and_damping_error(rough_cnn, refs):
    model, tr = rough_cnn
    H_ref = _reference_hessian(model, tr)
    lam_min = float(torch.linalg.eigvalsh(H_ref)[0])
    assert lam_min < 0
    with pytest.raises(WhylensError, match="not positive definite") as err:
        Influence(model, "exact", l2=L2, progress=False).fit(tr)
    message = str(err.value)
    assert "\n" not in message
    suggested = float(re.search(r"damping=([0-9.e+-]+)", message).group(1))
    assert abs(lam_min) < suggested < 1.3 * abs(lam_min)
    fitted = Influence(model, "exact", l2=L2, damping=suggested, progress=False).fit(tr)
    assert fitted.info["min_eigenvalue"] == pytest.approx(lam_min, rel=1e-8, abs=1e-12)
    assert fitted.info["negative_eigenvalues"] is True
    auto = Influence(model, "exact", l2=L2, damping="auto", progress=False).fit(tr)
    assert auto.info["damping"] == pytest.approx(1.1 * abs(lam_min), rel=1e-6)
    # Gauss-Newton is PSD by construction: no damping needed, and it differs from H here.
    ggn = Influence(model, "exact", l2=L2, hessian="gauss_newton", progress=False).fit(tr)
    assert ggn.info["min_eigenvalue"] >= L2 * (1 - 1e-9)
    fn = ModelFunction(model)
    G = dense_gauss_newton(fn, tr.images, tr.labels, L2)
    H = dense_hessian(fn, tr.images, tr.labels, L2)
    assert float((H - H_ref).abs().max()) < 1e-9 * float(H_ref.abs().max())
    diff = float((H - G).norm() / H.norm())
    print(f"tanh CNN: smallest eigenvalue {lam_min:.3g}, ||H - GGN|| / ||H|| = {diff:.3f}")
    assert diff > 1e-2
    # and the scores follow: damped exact solve equals the reference solve
    G_test = per_sample_grads(model, tr[:3], progress=False)
    G_train = per_sample_grads(model, tr, progress=False)
    ref = -G_test @ torch.linalg.solve(H_ref + suggested * torch.eye(len(H_ref), dtype=H_ref.dtype),
                                        G_train.T)
    assert refs.rel_err(fitted.scores(tr[:3]).numpy(), ref.numpy()) < 1e-7


def test_relu_cnn_gauss_newton_differs_from_hessian():
    torch.manual_seed(1)
    tr, _ = digits_split()
    tr = tr[:80]
    model = build_model("cnn", widths=(2, 4), activation="relu").eval()
    fn = ModelFunction(model)
    H = dense_hessian(fn, tr.images, tr.labels, L2)
    G = dense_gauss_newton(fn, tr.images, tr.labels, L2)
    # ReLU: no within-layer curvature of the logits, but the cross-layer blocks differ
    assert float((H - G).norm() / H.norm()) > 1e-2
    fc = fn.offsets["fc.weight"]
    assert float((H[fc, fc] - G[fc, fc]).abs().max()) < 1e-10  # logits are linear in fc


@pytest.mark.parametrize("activation, block", [("relu", "conv2"), ("tanh", "fc")])
def test_structured_hessian_equals_all_columns(activation, block):
    """The shortcut (one group's block from Gauss-Newton, after a probe) changes no entry of H.

    ReLU: the logits are piecewise linear in each layer, so the largest group (conv2) is
    taken from Gauss-Newton; tanh: only the classifier is, and the probe must reject conv2.
    """
    torch.manual_seed(2)
    tr, _ = digits_split()
    tr = tr[:60]
    model = build_model("cnn", widths=(3, 5), activation=activation).eval()
    fn = ModelFunction(model)
    info = {}
    H = dense_hessian(fn, tr.images, tr.labels, L2, info=info)
    H_all = dense_hessian(fn, tr.images, tr.labels, L2, structured=False)
    assert info["gn_block"] == block
    skipped = fn.offsets[f"{block}.weight"].stop - fn.offsets[f"{block}.weight"].start + \
        fn.offsets[f"{block}.bias"].stop - fn.offsets[f"{block}.bias"].start
    assert info["hvp_columns"] == fn.p - skipped
    assert float((H - H_all).abs().max()) < 1e-12 * float(H_all.abs().max())
    # float32 takes the same shortcut (its probe tolerance is 1e-5) and stays at float32 rounding
    info32 = {}
    H32 = dense_hessian(ModelFunction(model, dtype=torch.float32), tr.images, tr.labels, L2, info=info32)
    assert info32["gn_block"] == block
    assert float((H32.double() - H_all).abs().max()) < 1e-4 * float(H_all.abs().max())
    if activation == "tanh":  # conv2's own block has curvature of the logits: not Gauss-Newton
        G = dense_gauss_newton(fn, tr.images, tr.labels, L2)
        c2 = slice(fn.offsets["conv2.weight"].start, fn.offsets["conv2.bias"].stop)
        assert float((H[c2, c2] - G[c2, c2]).norm() / H[c2, c2].norm()) > 1e-3


def test_cg_negative_curvature_is_an_error(rough_cnn):
    model, tr = rough_cnn
    inf = Influence(model, "cg", l2=0.0, progress=False).fit(tr)
    with pytest.raises(WhylensError, match="not positive definite"):
        inf.scores(tr[:20])


# -- helpers ------------------------------------------------------------------------------------
def test_hvp_and_per_sample_grads_helpers(logreg, digits, softmax_closed_form):
    from whylens.influence import hvp
    tr, _ = digits
    V = torch.randn(650, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    HV = hvp(logreg, tr, V, l2=L2)
    assert float((HV - torch.from_numpy(softmax_closed_form.H) @ V).abs().max()) < 1e-10
    assert hvp(logreg, tr, V[:, 0], l2=L2).shape == (650,)
    G = per_sample_grads(logreg, tr.images[:50], tr.labels[:50], params=["linear"])
    assert float((G - torch.from_numpy(softmax_closed_form.G_train[:50])).abs().max()) < 1e-12
    with pytest.raises(WhylensError, match="vectors: expected shape"):
        hvp(logreg, tr, V[:10], l2=L2)


def test_progress_bars_follow_the_flag(logreg, digits, capsys):
    tr, te = digits
    Influence(logreg, "exact", l2=L2, progress=False).fit(tr[:300]).scores(te[:2])
    assert capsys.readouterr().err == ""
    Influence(logreg, "exact", l2=L2, hessian="gauss_newton", progress=True).fit(tr[:300])
    err = capsys.readouterr().err
    assert "Hessian (Gauss-Newton)" in err and "training gradients" in err
