"""Attributions with a known answer: linear models, GAP-fed layers, Grad-CAM++'s derivatives."""

import pytest
import torch
from torch import nn

from whylens.attribution import explain


@pytest.fixture
def images3():
    return torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(4))


def test_logistic_gradient_x_input_is_w_times_x(make_model, images3):
    model = make_model("logistic", 3)
    t = torch.tensor([0, 9, 5, 5])
    w = model.linear.weight.detach()[t].view(4, 3, 8, 8)
    assert torch.allclose(explain(model, images3, "saliency", t), w, rtol=1e-6, atol=0)
    assert torch.allclose(explain(model, images3, "gradient_x_input", t), w * images3,
                          rtol=1e-6, atol=0)
    # the predicted class by default
    pred = model(images3).argmax(1)
    assert torch.equal(explain(model, images3, "gxi"), explain(model, images3, "gxi", pred))


def test_one_logit_binary_model_class_zero_is_minus_w_x(make_model, images3):
    model = make_model("logistic", 3, num_classes=2, single_logit=True)
    assert model.linear.out_features == 1
    w = model.linear.weight.detach().view(1, 3, 8, 8)
    one = explain(model, images3, "gxi", target=1)
    zero = explain(model, images3, "gxi", target=0)
    assert torch.allclose(one, w * images3, rtol=1e-6, atol=0)
    assert torch.allclose(zero, -w * images3, rtol=1e-6, atol=0)
    mixed = explain(model, images3, "gxi", target=[0, 1, 1, 0])
    assert torch.allclose(mixed, torch.stack([zero[0], one[1], one[2], zero[3]]))
    with pytest.raises(Exception, match=r"\[0, 1\]"):
        explain(model, images3, "gxi", target=2)


def test_occlusion_of_single_pixels_on_a_linear_model(make_model, images3):
    """Covering pixel (u, v) with 0 drops z_t by sum_c W_t[c, u, v] x[c, u, v]."""
    model = make_model("logistic", 3)
    t = torch.tensor([2, 2, 7, 1])
    w = model.linear.weight.detach()[t].view(4, 3, 8, 8)
    drop = (w * images3).sum(1, keepdim=True).expand(4, 3, 8, 8)
    occ = explain(model, images3, "occlusion", t, patch=1, stride=1)
    assert torch.allclose(occ, drop, atol=1e-5)
    # a 2x2 patch with stride 2 tiles the image: each pixel gets its patch's total drop
    occ2 = explain(model, images3, "occlusion", t, patch=2, stride=2)
    tiles = nn.functional.avg_pool2d(drop[:, :1], 2) * 4
    tiled = nn.functional.interpolate(tiles, scale_factor=2)[:, 0]
    assert torch.allclose(occ2[:, 0], tiled, atol=1e-5)


def test_smoothgrad_of_a_linear_model_is_its_gradient(make_model, images3):
    model = make_model("logistic", 3)
    sal = explain(model, images3, "saliency", 3)
    sg = explain(model, images3, "smoothgrad", 3, samples=8, noise=0.3)
    assert torch.allclose(sg, sal, atol=1e-6)


class HalfSquare(nn.Module):
    """One logit z = ||x||^2 / 2, so dz/dx = x."""

    def forward(self, x):
        return 0.5 * (x * x).flatten(1).sum(1, keepdim=True)


def test_smoothgrad_noise_is_relative_to_each_images_range():
    """With dz/dx = x: SG(saliency) = x + mean(eps), SG(gxi) = mean((x + eps)^2), so
    SG(gxi) - SG(saliency)^2 is the sample variance of eps; its mean is sigma^2 with
    sigma_b = noise * (max x_b - min x_b)."""
    model = HalfSquare()
    g = torch.Generator().manual_seed(5)
    x = torch.stack([0.2 + 0.5 * torch.rand(1, 8, 8, generator=g),
                     torch.rand(1, 8, 8, generator=g)])
    ranges = x.flatten(1).max(1).values - x.flatten(1).min(1).values
    kw = dict(target=1, samples=400, noise=0.1, seed=7)
    sal = explain(model, x, "smoothgrad", base="saliency", **kw)
    gxi = explain(model, x, "smoothgrad", base="gradient_x_input", **kw)
    sigma = (gxi - sal ** 2).flatten(1).mean(1).sqrt()
    assert torch.allclose(sigma / (0.1 * ranges), torch.ones(2), atol=0.03), sigma / (0.1 * ranges)
    assert torch.equal(explain(model, x, "smoothgrad", base="saliency", **kw), sal)  # seeded
    other = explain(model, x, "smoothgrad", base="saliency", **{**kw, "seed": 8})
    assert not torch.equal(other, sal)
    assert torch.allclose(explain(model, x, "smoothgrad", target=1, noise=0.0, samples=3), x)


def test_smoothgrad_over_integrated_gradients(make_model):
    model = make_model("cnn", 1)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    ig = explain(model, x, "ig", 4, steps=10)
    sg = explain(model, x, "smoothgrad", 4, base="ig", steps=10, samples=4, noise=0.0)
    assert torch.allclose(sg, ig, atol=1e-6)
    with pytest.raises(Exception, match="unknown option 'abs'"):
        explain(model, x, "smoothgrad", base="ig", abs=True)


def test_gradcam_equals_hirescam_where_the_layer_feeds_gap_and_linear(trained_cnn, test_images,
                                                                       rel):
    """After act2 only GAP and fc follow, so G_kij = W_tk / (h w) for all (i, j): Grad-CAM's
    spatial mean of G is G itself and both maps are ReLU(sum_k W_tk A_k / (h w)) exactly."""
    x = test_images[:16]
    model = trained_cnn
    t = model(x).argmax(1)
    grad_cam = explain(model, x, "gradcam", t, layer="act2", upsample=False)
    hires = explain(model, x, "hirescam", t, layer="act2", upsample=False)
    kept = []
    handle = model.act2.register_forward_hook(lambda m, i, out: kept.append(out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    acts = kept[0]
    h, w = acts.shape[-2:]
    with torch.no_grad():
        manual = torch.relu(torch.einsum("bk,bkij->bij", model.fc.weight[t], acts) / (h * w))
    assert rel(grad_cam, manual) < 1e-5 and rel(hires, manual) < 1e-5
    assert rel(explain(model, x, "gradcam", t, layer="act2"),
               explain(model, x, "hirescam", t, layer="act2")) < 1e-5
    # before the ReLU its mask makes G vary in space, and the two differ
    assert rel(explain(model, x, "gradcam", t, upsample=False),
               explain(model, x, "hirescam", t, upsample=False)) > 1e-2


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2, 3)

    def head(self, a):
        return self.fc(self.act(a).mean(dim=(2, 3)))

    def forward(self, x):
        return self.head(self.conv(x))


def test_gradcam_plus_plus_against_the_papers_general_formula():
    """alpha = Y'' / (2 Y'' + sum_ab A_ab Y''') with Y = exp(S) and its true diagonal second and
    third derivatives by autograd; w_k = sum_ij alpha ReLU(Y'); map = ReLU(sum_k w_k A_k).
    Y' = exp(S) G, so this is exp(S) times whylens's map (which drops that positive factor)."""
    torch.manual_seed(11)
    model = Tiny().eval()
    x = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(12))
    t = torch.tensor([0, 2])
    ours = explain(model, x, "gradcam++", t, layer="conv", upsample=False)
    for b in range(2):
        a = model.conv(x[b:b + 1]).detach().requires_grad_(True)
        s = model.head(a)[0, t[b]]
        y = torch.exp(s)
        (d1,) = torch.autograd.grad(y, a, create_graph=True)
        d2 = torch.zeros_like(a)
        d3 = torch.zeros_like(a)
        for e in range(a.numel()):
            (g2,) = torch.autograd.grad(d1.flatten()[e], a, create_graph=True)
            (g3,) = torch.autograd.grad(g2.flatten()[e], a, retain_graph=True)
            d2.view(-1)[e], d3.view(-1)[e] = g2.flatten()[e].detach(), g3.flatten()[e]
        d1 = d1.detach()
        denom = 2 * d2 + a.detach().sum(dim=(2, 3), keepdim=True) * d3
        alpha = torch.where(denom != 0, d2 / torch.where(denom != 0, denom, 1), 0)
        weights = (alpha * torch.relu(d1)).sum(dim=(2, 3))
        paper = torch.relu((weights[:, :, None, None] * a.detach()).sum(1))[0]
        assert paper.abs().max() > 0
        assert torch.allclose(ours[b] * torch.exp(s.detach()), paper, rtol=1e-5, atol=1e-7)
