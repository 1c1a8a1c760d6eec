"""The smoothed hinge L_t(m) = t log(1 + exp((1 - m)/t)) against finite differences and its hinge limit."""

import math

import pytest
import torch

from whylens.errors import WhylensError
from whylens.losses import hinge, label_signs, smooth_hinge, smooth_hinge_derivatives, smooth_hinge_loss

TEMPERATURES = [0.01, 0.1, 1.0, 3.0]


def grid(t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits for margins from -3 to 3 (dense around the kink m = 1, at the scale t) and both signs."""
    margins = torch.cat([torch.linspace(-3, 3, 61, dtype=torch.float64),
                         1 + t * torch.linspace(-5, 5, 41, dtype=torch.float64)])
    s = torch.cat([torch.ones_like(margins), -torch.ones_like(margins)])
    return torch.cat([margins, -margins]), s  # z = s m


@pytest.mark.parametrize("t", TEMPERATURES)
def test_derivatives_match_central_differences(t):
    z, s = grid(t)
    d1, d2 = smooth_hinge_derivatives(z, s, t)
    h = 1e-4 * t  # well inside the kink's width t, where L changes fastest
    fd1 = (smooth_hinge(z + h, s, t) - smooth_hinge(z - h, s, t)) / (2 * h)
    fd2 = (smooth_hinge_derivatives(z + h, s, t)[0] - smooth_hinge_derivatives(z - h, s, t)[0]) / (2 * h)
    # second differences of L itself, at a step where rounding (~eps/h^2) stays small
    H = 1e-3 * t
    fd2_direct = (smooth_hinge(z + H, s, t) - 2 * smooth_hinge(z, s, t) + smooth_hinge(z - H, s, t)) / H**2
    err1 = float((fd1 - d1).abs().max())
    err2 = float((fd2 - d2).abs().max() / d2.abs().max())
    err2b = float((fd2_direct - d2).abs().max() / d2.abs().max())
    print(f"t={t}: max |FD - dL/dz| = {err1:.2e}; rel. max |FD - d2L/dz2| = {err2:.2e} (of L'), {err2b:.2e} (of L)")
    assert err1 < 1e-8
    assert err2 < 1e-7
    assert err2b < 1e-4
    assert float(d2.max()) == pytest.approx(1 / (4 * t), rel=1e-3)  # sigma(1 - sigma)/t peaks at the kink


@pytest.mark.parametrize("t", TEMPERATURES)
def test_autograd_equals_closed_forms(t):
    z, s = grid(t)
    z = z.clone().requires_grad_(True)
    L = smooth_hinge(z, s, t)
    (g,) = torch.autograd.grad(L.sum(), z, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), z)
    d1, d2 = smooth_hinge_derivatives(z.detach(), s, t)
    assert torch.allclose(g.detach(), d1, rtol=1e-12, atol=1e-14)
    assert torch.allclose(gg, d2, rtol=1e-10, atol=1e-14)


def test_limit_is_the_hinge():
    m = torch.cat([torch.linspace(-4, 6, 2001, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)])
    s = torch.ones_like(m)
    hinge_m = hinge(m, s)
    gaps = []
    for t in [1.0, 0.3, 0.1, 0.03, 0.01, 0.001]:
        gap = smooth_hinge(m, s, t) - hinge_m
        worst = float(gap.max())
        at = float(m[gap.argmax()])
        gaps.append(worst)
        print(f"t={t}: max gap {worst:.6g} at margin {at:.4f}; t log 2 = {t * math.log(2):.6g}")
        assert float(gap.min()) >= -1e-14                # never below the hinge (up to rounding)
        assert worst <= t * math.log(2) * (1 + 1e-12)    # the bound
        assert at == pytest.approx(1.0, abs=1e-12)       # attained at the kink
        assert float(gap[-1]) == pytest.approx(t * math.log(2), rel=1e-12)
    assert all(b < a for a, b in zip(gaps, gaps[1:]))   # shrinks with t ...
    assert gaps[-1] < 7e-4                              # ... towards 0


def test_extreme_margins_do_not_overflow():
    z = torch.tensor([-1e4, -50.0, 50.0, 1e4], dtype=torch.float64)
    s = torch.ones_like(z)
    L = smooth_hinge(z, s, 1e-3)
    assert bool(torch.isfinite(L).all())
    assert torch.allclose(L, hinge(z, s), rtol=1e-12, atol=1e-300)
    d1, d2 = smooth_hinge_derivatives(z, s, 1e-3)
    assert bool(torch.isfinite(d1).all() and torch.isfinite(d2).all())


def test_per_sample_loss_uses_label_signs():
    logits = torch.tensor([[2.0], [-0.5], [0.3]], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0])
    expected = smooth_hinge(logits[:, 0], label_signs(labels, torch.float64), 0.1)
    assert torch.equal(smooth_hinge_loss(logits, labels, 0.1), expected)
    assert label_signs(labels).tolist() == [1.0, -1.0, -1.0]
    # label 1 with z = 2: margin 2, nearly zero loss; label 0 with z = -0.5: margin 0.5
    assert float(expected[0]) < 1e-4
    assert float(expected[1]) == pytest.approx(0.5, abs=0.01)


def test_bad_input_is_one_line_error():
    with pytest.raises(WhylensError, match="temperature"):
        smooth_hinge(torch.zeros(2), torch.ones(2), 0.0)
    with pytest.raises(WhylensError, match=r"logits: expected shape \(B, 1\)"):
        smooth_hinge_loss(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 0.1)
    with pytest.raises(WhylensError, match="labels"):
        smooth_hinge_loss(torch.zeros(3, 1), torch.zeros(2, dtype=torch.long), 0.1)
