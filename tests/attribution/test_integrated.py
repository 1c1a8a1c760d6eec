"""Integrated Gradients: completeness on a trained ReLU CNN, refinement, chunking, quadrature."""

import numpy as np
import pytest
import torch

from whylens.attribution import IGResult, explain, quadrature
from whylens.attribution.integrated import gauss_legendre
from whylens.errors import WhylensError


def _gap(model, x, baseline=0.0):
    """``S_t(x) - S_t(x')`` for the predicted class, computed here from two plain forward passes."""
    with torch.no_grad():
        logits = model(x)
        t = logits.argmax(1)
        at_base = model(torch.full_like(x, baseline))
        return logits.gather(1, t[:, None])[:, 0] - at_base.gather(1, t[:, None])[:, 0]


@pytest.mark.slow
def test_completeness_on_trained_relu_cnn_and_per_image_refinement(trained_cnn, test_images):
    x = test_images
    gap = _gap(trained_cnn, x)
    res = explain(trained_cnn, x, "ig", steps=50, return_delta=True)
    attr, delta = res  # unpacks as a pair
    # delta is the relative completeness error, recomputed here independently
    own = (attr.flatten(1).sum(1) - gap).abs() / gap.abs()
    assert torch.allclose(delta, own, rtol=1e-3, atol=1e-6)
    assert torch.allclose(res.abs_delta, (attr.flatten(1).sum(1) - gap).abs(), atol=1e-5)
    assert torch.allclose(res.score_gap, gap, atol=1e-5)
    med = float(delta.median())
    print(f"IG 50 Gauss-Legendre steps, 100 digits test images: median relative completeness "
          f"error {med:.4%}, mean {float(delta.mean()):.4%}, max {float(delta.max()):.4%} "
          f"(NOTES, Captum: median 0.28%, max 16%)")
    assert med < 0.01
    assert bool((res.steps == 50).all())

    ref = explain(trained_cnn, x, "ig", steps=50, return_delta=True, tol=0.01)
    counts = {int(s): int((ref.steps == s).sum()) for s in ref.steps.unique()}
    print(f"with tol=0.01: max error {float(ref.delta.max()):.4%}; images per step count {counts}")
    assert float(ref.delta.max()) < 0.01
    own = (ref.attributions.flatten(1).sum(1) - gap).abs() / gap.abs()
    assert torch.allclose(ref.delta, own, rtol=1e-3, atol=1e-6)
    # images already under tol at 50 steps keep exactly their 50-step attribution
    kept = delta <= 0.01
    assert bool((ref.steps[kept] == 50).all()) and bool((ref.steps[~kept] > 50).all())
    assert torch.equal(ref.attributions[kept], attr[kept])
    # a refined image's attribution is IG at the reported step count
    j = int(torch.argmax(ref.steps))
    alone = explain(trained_cnn, x[j:j + 1], "ig", steps=int(ref.steps[j]))
    assert torch.allclose(alone[0], ref.attributions[j], atol=1e-5 * float(alone.abs().max()))


def test_chunks_bound_the_batch_and_do_not_change_the_result(make_model):
    model = make_model("cnn", 1)
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    try:
        a = explain(model, x, "ig", steps=30, chunk_size=11)
        assert max(sizes) == 11 and sum(sizes) == 7 * 30 + 7  # + 7: the prediction pass
        sizes.clear()
        b = explain(model, x, "ig", steps=30, chunk_size=10_000)
        assert max(sizes) == 7 * 30
    finally:
        handle.remove()
    assert torch.allclose(a, b, atol=1e-6 * float(b.abs().max()))


def test_linear_model_ig_is_exact_and_trapezoid_follows_captum_weights(make_model):
    """On z = W x + b, IG with baseline 0 is W_t * x for any rule whose weights sum to 1.
    Captum's riemann_trapezoid weights (1/n, first and last halved) sum to 1 - 1/n."""
    model = make_model("logistic", 1)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 4, 4, 9])
    exact = model.linear.weight.detach()[t].view(4, 1, 8, 8) * x
    for rule in ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle"):
        assert torch.allclose(explain(model, x, "ig", t, rule=rule, steps=7), exact, atol=1e-6)
    trap = explain(model, x, "ig", t, rule="riemann_trapezoid", steps=7)
    assert torch.allclose(trap, exact * (1 - 1 / 7), atol=1e-6)
    res = explain(model, x, "ig", t, return_delta=True, steps=3)
    assert float(res.delta.max()) < 1e-5  # exact up to float32 round-off


def test_quadrature_rules():
    for n in (1, 2, 7, 50, 333):
        u, v = gauss_legendre(n)
        uu, vv = np.polynomial.legendre.leggauss(n)
        assert np.abs(u - uu).max() < 1e-13 and np.abs(v - vv).max() < 1e-13
        a, w = quadrature("gausslegendre", n)
        # exact for polynomials of degree 2n - 1 on [0, 1]
        assert abs((w * a ** (2 * n - 1)).sum() - 1 / (2 * n)) < 1e-12
    a, w = quadrature("riemann_middle", 4)
    assert np.allclose(a, [0.125, 0.375, 0.625, 0.875]) and np.allclose(w, 0.25)
    a, w = quadrature("riemann_left", 4)
    assert np.allclose(a, [0, 0.25, 0.5, 0.75])
    a, w = quadrature("riemann_right", 4)
    assert np.allclose(a, [0.25, 0.5, 0.75, 1])
    a, w = quadrature("riemann_trapezoid", 5)
    assert np.allclose(a, [0, 0.25, 0.5, 0.75, 1]) and np.allclose(w, [0.1, 0.2, 0.2, 0.2, 0.1])
    with pytest.raises(WhylensError, match="rule"):
        quadrature("simpson", 5)
    with pytest.raises(WhylensError, match="at least 2"):
        quadrature("riemann_left", 1)


def test_baselines_and_bad_options(make_model):
    model = make_model("cnn", 3)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    mean = x.mean(dim=(2, 3), keepdim=True)
    a = explain(model, x, "ig", 0, baseline="mean", steps=8)
    b = explain(model, x, "ig", 0, baseline=mean, steps=8)  # a broadcast tensor
    assert torch.allclose(a, b)
    assert torch.allclose(explain(model, x, "ig", 0, baseline=torch.zeros(3, 1, 1), steps=8),
                          explain(model, x, "ig", 0, steps=8))
    res = explain(model, x, "ig", 0, baseline="mean", steps=8, return_delta=True)
    assert isinstance(res, IGResult) and res.delta.shape == (2,)
    with pytest.raises(WhylensError, match="baseline"):
        explain(model, x, "ig", baseline=torch.zeros(2, 8))
    with pytest.raises(WhylensError, match="steps"):
        explain(model, x, "ig", steps=0)
    with pytest.raises(WhylensError, match="unknown option 'n_steps'"):
        explain(model, x, "ig", n_steps=5)
