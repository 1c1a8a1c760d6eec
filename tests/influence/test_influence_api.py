"""The Influence object: params subsets, measures, baselines, BatchNorm models, save/load, errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from whylens.data import ImageSet, digits_split
from whylens.errors import WhylensError
from whylens.influence import Influence, per_sample_grads, store
from whylens.influence.functional import ModelFunction
from whylens.models import build_model
from whylens.train import train

L2 = 0.01  # the lambda of J the models are trained with



def _softmax_feature_closed_form(features: torch.Tensor, labels, fc: nn.Linear, l2: float,
                                 n_train: int):
    """Gradient rows ``(p - e_y) kron [h, 1]`` (fc weight row-major, then bias) for features ``h``."""
    h = features.double()
    p = torch.softmax(h @ fc.weight.detach().double().T + fc.bias.detach().double(), dim=1)
    r = p.clone()
    r[torch.arange(len(h)), labels] -= 1
    return torch.cat([torch.einsum("nk,nd->nkd", r, h).reshape(len(h), -1), r], dim=1)


def _fc_block_hessian(features: torch.Tensor, labels, fc: nn.Linear, l2: float) -> torch.Tensor:
    """grad^2 J over the fc parameters alone, by torch.autograd.functional.hessian."""
    h = features.double()
    K, D = fc.weight.shape
    flat0 = torch.cat([fc.weight.detach().double().reshape(-1), fc.bias.detach().double()])

    def J(flat):
        W, b = flat[:K * D].reshape(K, D), flat[K * D:]
        # J's l2 term covers all parameters; its fc block contributes l2 * I.
        return nn.functional.cross_entropy(h @ W.T + b, labels) + 0.5 * l2 * (flat ** 2).sum()

    return torch.autograd.functional.hessian(J, flat0)


def _features(model, images, upto: str):
    """Inputs of module ``upto`` (the penultimate features), in eval mode and float64."""
    store_ = {}
    model64 = copy.deepcopy(model).double().eval()
    dict(model64.named_modules())[upto].register_forward_hook(
        lambda m, i, o: store_.setdefault("h", i[0].detach().clone()))
    with torch.no_grad():
        model64(images.double())
    return store_["h"]


# -- 4. params subset --------------------------------------------------------------------------
def test_params_subset_equals_fc_block_closed_form(digits, refs):
    tr, te = digits
    tr, te = tr[:400], te[:20]
    torch.manual_seed(0)
    model = build_model("cnn")  # 5,130 parameters; only fc's 330 are differentiated
    train(model, tr, l2=L2, epochs=3, progress=False)
    inf = Influence(model, "exact", l2=L2, params=["fc"], progress=False).fit(tr)
    assert inf.param_names == ["fc.weight", "fc.bias"]
    h_tr, h_te = _features(model, tr.images, "fc"), _features(model, te.images, "fc")
    H = _fc_block_hessian(h_tr, tr.labels, model.fc, L2)
    G_tr = _softmax_feature_closed_form(h_tr, tr.labels, model.fc, L2, len(tr))
    G_te = _softmax_feature_closed_form(h_te, te.labels, model.fc, L2, len(tr))
    ref = -G_te @ torch.linalg.solve(H, G_tr.T)
    err = refs.rel_err(inf.scores(te).numpy(), ref.numpy())
    print(f"params=['fc'] vs closed form: {err:.2e}")
    assert err < 1e-9


# -- 8. measures ----------------------------------------------------------------------------------
def test_margin_and_logit_measures(logreg, logreg_exact, softmax_closed_form, digits, refs):
    _, te = digits
    te = te[:40]
    cf = softmax_closed_form
    z = cf.probs(np.hstack([te.images.reshape(40, -1).double().numpy(), np.ones((40, 1))]))
    logits = te.images.reshape(40, -1).double().numpy() @ cf.W.T + cf.b
    y = te.labels.numpy()
    others = logits.copy()
    others[np.arange(40), y] = -np.inf
    runner = others.argmax(1)
    coef = np.zeros_like(z)
    coef[np.arange(40), y] = 1.0
    coef[np.arange(40), runner] -= 1.0  # d margin / d z = e_y - e_{runner-up}
    G_margin = cf.output_grads(te.images, coef)
    H_inv_G = np.linalg.solve(cf.H, cf.G_train.T)
    ref_margin = -G_margin @ H_inv_G
    inf = Influence(logreg, "exact", l2=L2, measure="margin", progress=False).fit(digits[0])
    got = inf.scores(te).numpy()
    assert refs.rel_err(got, ref_margin) < 1e-6
    onehot = np.zeros_like(z)
    onehot[np.arange(40), y] = 1.0
    ref_logit = -cf.output_grads(te.images, onehot) @ H_inv_G
    got_logit = Influence(logreg, "exact", l2=L2, measure="logit", progress=False).fit(digits[0]).scores(te)
    assert refs.rel_err(got_logit.numpy(), ref_logit) < 1e-6
    # For the margin higher is better: top()'s helpful items are the most positive scores,
    # and they are mostly the same items that are helpful for the loss (most negative).
    top_m = inf.top(te[:5], k=10)
    top_l = logreg_exact.top(te[:5], k=10)
    for t in range(5):
        assert top_m[t].helpful.scores == pytest.approx(sorted(got[t])[::-1][:10], rel=1e-12)
        assert all(s > 0 for s in top_m[t].helpful.scores)
        assert len(set(top_m[t].helpful.indices) & set(top_l[t].helpful.indices)) >= 5
    assert inf.helpful_sign == 1 and logreg_exact.helpful_sign == -1


def test_top_lists(logreg_exact, digits):
    tr, te = digits
    S = logreg_exact.scores(te[:3]).numpy()
    top = logreg_exact.top(te[:3], k=4)
    assert len(top) == 3
    for t, item in enumerate(top):
        order = np.argsort(S[t])
        assert item.helpful.indices == order[:4].tolist()          # most negative first
        assert item.harmful.indices == order[::-1][:4].tolist()    # most positive first
        assert item.helpful.scores == pytest.approx(S[t, order[:4]].tolist())
        assert item.helpful.ids == [tr.ids[j] for j in order[:4]]
        assert item.harmful.labels == [int(tr.labels[j]) for j in order[::-1][:4]]
    # a training item used as a test item: its score against itself is its self-influence
    own = logreg_exact.scores(tr[[7, 8]])
    assert own[0, 7] == pytest.approx(float(logreg_exact.self_influence()[7]), rel=1e-10)
    assert own[1, 8] == pytest.approx(float(logreg_exact.self_influence()[8]), rel=1e-10)


# -- 6. baselines and the sign convention ---------------------------------------------------------
def test_baselines_against_direct_formulas(logreg, softmax_closed_form, digits, tmp_path, refs):
    tr, te = digits
    te = te[:25]
    cf = softmax_closed_form
    Gt, Gtr = cf.grads(te.images, te.labels), cf.G_train
    dot = Influence(logreg, "grad_dot", progress=False).fit(tr)
    assert refs.rel_err(dot.scores(te).numpy(), -Gt @ Gtr.T) < 1e-9
    assert refs.rel_err(dot.self_influence().numpy(), -(Gtr ** 2).sum(1)) < 1e-9
    cos = Influence(logreg, "grad_cos", progress=False).fit(tr).scores(te).numpy()
    unit = lambda G: G / np.linalg.norm(G, axis=1, keepdims=True)  # noqa: E731
    assert refs.rel_err(cos, -unit(Gt) @ unit(Gtr).T) < 1e-9
    # TracIn over three checkpoints (start, midway, end), one given as a safetensors file
    from safetensors.torch import save_file
    start = build_model("logistic", in_channels=1, image_size=8, num_classes=10)
    mid = build_model("logistic", in_channels=1, image_size=8, num_classes=10)
    train(mid, tr, l2=L2, max_iter=3, progress=False)
    save_file({k: v.contiguous() for k, v in mid.state_dict().items()}, str(tmp_path / "mid.safetensors"))
    lrs = [0.5, 0.2, 0.1]
    tracin = Influence(logreg, "tracin", progress=False,
                       checkpoints=[start.state_dict(), tmp_path / "mid.safetensors", logreg.state_dict()],
                       learning_rates=lrs).fit(tr)
    ref = np.zeros((25, 1500))
    for lr, m in zip(lrs, (start, mid, logreg)):
        c = refs.SoftmaxClosedForm(m, tr.images[:2], tr.labels[:2], L2)  # its gradients, not its H
        ref -= lr * c.grads(te.images, te.labels) @ c.grads(tr.images, tr.labels).T
    assert refs.rel_err(tracin.scores(te).numpy(), ref) < 1e-9
    # with no checkpoints TracIn is grad_dot at the current weights (times one learning rate)
    one = Influence(logreg, "tracin", progress=False, learning_rates=[2.0]).fit(tr)
    assert refs.rel_err(one.scores(te).numpy(), -2.0 * Gt @ Gtr.T) < 1e-9
    # save/load keeps the checkpoints
    tracin.save(tmp_path / "tracin")
    back = Influence.load(tmp_path / "tracin", logreg)
    assert torch.equal(back.scores(te), tracin.scores(te))
    # the signs agree with influence: Pearson with exact is clearly positive
    assert refs.pearson(dot.scores(te).numpy(), cf.scores(Gt)) > 0.3


class TwoLogit(nn.Module):
    """Logits ``[0, z]`` with ``z`` a one-logit linear model: softmax then equals sigmoid(z)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        z = self.linear(x.flatten(1))
        return torch.cat([torch.zeros_like(z), z], dim=1)


def test_one_logit_and_two_logit_models_mean_the_same(refs):
    tr, te = digits_split(classes=[1, 7])
    one = build_model("logistic", in_channels=1, image_size=8, num_classes=2, single_logit=True)
    train(one, tr, l2=L2, progress=False)
    two = TwoLogit(one.linear)
    loss_one = None
    for measure in ("loss", "margin"):
        a = Influence(one, l2=L2, measure=measure, progress=False).fit(tr).scores(te)
        b = Influence(two, l2=L2, measure=measure, progress=False).fit(tr).scores(te)
        assert refs.rel_err(b.numpy(), a.numpy()) < 1e-9
        loss_one = a if measure == "loss" else loss_one
    # sign convention: against the binary closed form, I_up,loss = -g_t^T H^-1 g_j
    cf = refs.BinaryClosedForm(one, tr.images, tr.labels, L2)
    assert refs.rel_err(loss_one.numpy(), cf.scores(cf.grads(te.images, te.labels))) < 1e-6
    # a training item tested against itself is helpful (negative): removing it would raise its
    # own loss (predicted change -score/n > 0)
    s = Influence(two, l2=L2, progress=False).fit(tr).scores(tr[:10])
    assert bool((s.diagonal() < 0).all())


# -- 7. BatchNorm + in-place ReLU --------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet(digits):
    torch.manual_seed(0)
    tr = digits[0][:200]
    model = build_model("resnet", width=4)
    train(model, tr, l2=L2, epochs=2, progress=False)
    model.train()  # the caller's mode, which influence must restore
    return model, tr


def test_resnet_exact_params_subset(resnet, digits, refs):
    model, tr = resnet
    te = digits[1][:10]
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    inf = Influence(model, "exact", l2=L2, params=["fc"], progress=False).fit(tr)
    S = inf.scores(te)
    assert model.training and model.layer1[0].bn1.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())  # running stats fixed
    h_tr, h_te = _features(model, tr.images, "fc"), _features(model, te.images, "fc")
    H = _fc_block_hessian(h_tr, tr.labels, model.fc, L2)
    G_tr = _softmax_feature_closed_form(h_tr, tr.labels, model.fc, L2, len(tr))
    G_te = _softmax_feature_closed_form(h_te, te.labels, model.fc, L2, len(tr))
    assert refs.rel_err(S.numpy(), (-G_te @ torch.linalg.solve(H, G_tr.T)).numpy()) < 1e-9
    # a BatchNorm affine parameter together with fc works too (exact Hessian by HVPs)
    both = Influence(model, "exact", l2=L2, params=["layer2.0.bn2", "fc"], damping="auto",
                     progress=False).fit(tr)
    assert both.param_names == ["layer2.0.bn2.weight", "layer2.0.bn2.bias", "fc.weight", "fc.bias"]
    assert bool(torch.isfinite(both.scores(te)).all())


def _check_ekfac_eigenvalues(inf, model, tr):
    """Lambda[r, c] = mean_i (Q_S^T G_i Q_A)[r, c]^2 with G_i from vmap per-sample gradients."""
    fn = ModelFunction(model, inf._selected)
    G = per_sample_grads(model, tr, params=inf._selected, progress=False)
    for layer in inf.solver.layers:
        QA = inf.solver.factors[f"{layer.name}.QA"]
        QS = inf.solver.factors[f"{layer.name}.QS"]
        lam = inf.solver.factors[f"{layer.name}.lambda"] - L2
        M = layer.matrices(G.T)  # (n, d_out, d_in)
        ref = ((QS.T @ M @ QA) ** 2).mean(0)
        assert float((lam - ref).abs().max()) < 1e-9 * float(ref.abs().max()), layer.name
    return fn


def test_resnet_ekfac(resnet, digits):
    model, tr = resnet
    te = digits[1][:10]
    inf = Influence(model, "ekfac", l2=L2, fisher="empirical", dtype="float64", progress=False).fit(tr)
    assert model.training
    assert "layer2.0.bn1.weight" not in inf.param_names and "fc.weight" in inf.param_names
    assert len(inf.solver.layers) == 7
    _check_ekfac_eigenvalues(inf, model, tr)
    S = inf.scores(te)
    assert S.shape == (10, 200) and bool(torch.isfinite(S).all())
    assert bool((inf.self_influence() < 0).all())
    with pytest.raises(WhylensError, match="BatchNorm2d"):
        Influence(model, "ekfac", l2=L2, params=["layer2"], progress=False).fit(tr)


def test_ekfac_conv_followed_by_inplace_relu(digits):
    # conv -> ReLU(inplace=True): the pre-activation gradient must not be the post-ReLU one
    torch.manual_seed(0)
    tr = digits[0][:100]
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3, stride=2),
                          nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(36, 10))
    inf = Influence(model, "ekfac", l2=L2, fisher="empirical", dtype="float64", progress=False).fit(tr)
    _check_ekfac_eigenvalues(inf, model, tr)
    # the corrected eigenvalues are mean squares plus l2
    assert inf.info["min_eigenvalue"] >= L2


# -- 5. save / load -------------------------------------------------------------------------------
@pytest.mark.parametrize("solver, options", [("exact", {}), ("ekfac", {}), ("arnoldi", {"rank": 50}),
                                             ("cg", {"max_iter": 50})])
def test_save_load_round_trip(solver, options, logreg, logreg_exact, digits, tmp_path):
    tr, te = digits
    inf = logreg_exact if solver == "exact" else \
        Influence(logreg, solver, l2=L2, progress=False, **options).fit(tr)
    before = inf.scores(te[:6])
    inf.save(tmp_path / "inf")
    meta = json.loads((tmp_path / "inf" / store.META).read_text())
    assert meta["options"]["solver"] == solver and meta["n"] == 1500
    train_arg = tr if solver == "cg" else None
    back = Influence.load(tmp_path / "inf", logreg, train=train_arg, progress=False)
    assert torch.equal(back.scores(te[:6]), before)
    if solver != "cg":  # cg would solve for all 1,500 training gradients
        assert torch.equal(back.self_influence(), inf.self_influence())
    assert back.train_ids == tr.ids and back.info == inf.info
    if solver == "cg":
        with pytest.raises(WhylensError, match="needs the training data"):
            Influence.load(tmp_path / "inf", logreg)


def test_load_checks_fingerprints(logreg, logreg_exact, digits, tmp_path):
    tr, _ = digits
    logreg_exact.save(tmp_path / "inf")
    other = build_model("logistic", in_channels=1, image_size=8, num_classes=10)
    other.load_state_dict(logreg.state_dict())
    with torch.no_grad():
        other.linear.weight[0, 0] += 1e-3
    with pytest.raises(WhylensError, match="does not match the model"):
        Influence.load(tmp_path / "inf", other)
    with pytest.raises(WhylensError, match="not the training data"):
        Influence.load(tmp_path / "inf", logreg, train=tr.with_labels((tr.labels + 1) % 10))
    Influence.load(tmp_path / "inf", logreg, train=tr)  # the right data is accepted
    # a model changed after fit is refused at scoring time
    inf = Influence(other, "grad_dot", progress=False).fit(tr)
    with torch.no_grad():
        other.linear.bias[0] += 1.0
    with pytest.raises(WhylensError, match="changed since"):
        inf.scores(tr[:2])


def test_interrupted_save_leaves_nothing_loadable(logreg, logreg_exact, tmp_path, monkeypatch):
    def boom(path, meta):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "_write_json", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        logreg_exact.save(tmp_path / "inf")
    assert not (tmp_path / "inf").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone as well
    with pytest.raises(WhylensError, match="not found"):
        Influence.load(tmp_path / "inf", logreg)
    monkeypatch.undo()
    # an earlier complete save survives an interrupted overwrite
    logreg_exact.save(tmp_path / "inf")
    monkeypatch.setattr(store, "_write_json", boom)
    with pytest.raises(RuntimeError):
        logreg_exact.save(tmp_path / "inf")
    monkeypatch.undo()
    assert Influence.load(tmp_path / "inf", logreg).n == 1500
    # a directory without the JSON (as a crash before it would leave) is refused
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / store.TENSORS).write_bytes(b"\0" * 16)
    with pytest.raises(WhylensError, match="not a \\(complete\\)"):
        Influence.load(tmp_path / "half", logreg)


# -- errors ---------------------------------------------------------------------------------------
def test_errors_are_one_line(logreg, logreg_exact, digits):
    tr, te = digits
    cases = [
        (lambda: Influence(logreg, "newton"), "solver: expected one of"),
        (lambda: Influence(logreg, "exact", rank=3), "not an option of solver 'exact'"),
        (lambda: Influence(logreg, l2=-1), "l2"),
        (lambda: Influence(logreg, measure="accuracy"), "measure"),
        (lambda: Influence(logreg, params=["nope"]).fit(tr), "no module named 'nope'"),
        (lambda: Influence(logreg, progress=False).scores(te), "not fitted"),
        (lambda: Influence(logreg, progress=False).self_influence(), "not fitted"),
        (lambda: Influence(logreg, damping=-1.0), "damping"),
        (lambda: Influence(logreg, "cg", damping="auto"), "damping"),
        (lambda: logreg_exact.scores(te.images[:3], torch.tensor([0, 1, 10])), r"\[0, 9\]"),
        (lambda: logreg_exact.scores(te.images[:3], torch.tensor([0, 1])), "expected 3 labels"),
        (lambda: logreg_exact.scores(te.images[:0], te.labels[:0]), "empty"),
        (lambda: logreg_exact.scores(torch.zeros(2, 1, 9, 9), torch.zeros(2)), "shape"),
        (lambda: logreg_exact.top(te[:2], k=0), "k: expected"),
        (lambda: Influence(logreg, progress=False).fit((tr.images[:0], tr.labels[:0])), "empty"),
        (lambda: Influence(logreg, progress=False, max_params=100).fit(tr), "params="),
        (lambda: Influence(logreg, "tracin", checkpoints=[{}], progress=False).fit(tr), "checkpoints"),
    ]
    for call, pattern in cases:
        with pytest.raises(WhylensError, match=pattern) as err:
            call()
        assert "\n" not in str(err.value)


def test_imageset_and_pair_inputs_agree(logreg_exact, digits):
    _, te = digits
    a = logreg_exact.scores(te[:4])
    b = logreg_exact.scores(te.images[:4], te.labels[:4])
    c = logreg_exact.scores(ImageSet(te.images[:4], te.labels[:4], te.classes))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_works_inside_no_grad_and_keeps_the_model(resnet, digits):
    model, tr = resnet
    te = digits[1][:3]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        a = Influence(model, "ekfac", l2=L2, progress=False).fit(tr).scores(te)
        b = Influence(model, "cg", l2=L2, params=["fc"], progress=False).fit(tr).scores(te)
    assert bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert model.training
