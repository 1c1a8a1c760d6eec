"""whylens against Captum on the same models, inputs, targets, rules and step counts.

Tolerance: max |whylens - captum| <= 1e-5 * max |captum| (float32 round-off only).
"""

import warnings

import pytest
import torch
from captum.attr import (
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    Occlusion,
)
from captum.attr import Saliency as CaptumSaliency

from whylens.attribution import RULES, explain, resolve_layer

TOL = 1e-5
CASES = [("cnn", 1), ("cnn", 3), ("resnet", 1), ("resnet", 3)]
CAM_LAYER = {"cnn": "conv2", "resnet": "layer2.0.conv2"}


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
        yield


def _inputs(channels, seed=1, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, 8, 8, generator=g), torch.tensor([0, 3, 7, 9, 2][:n])


@pytest.mark.parametrize("name,channels", CASES)
def test_gradient_methods_match_captum(name, channels, make_model, rel):
    model = make_model(name, channels)
    x, t = _inputs(channels)
    sal = explain(model, x, "saliency", target=t)
    assert rel(sal, CaptumSaliency(model).attribute(x, target=t, abs=False)) <= TOL
    assert rel(explain(model, x, "saliency", target=t, abs=True),
               CaptumSaliency(model).attribute(x, target=t, abs=True)) <= TOL
    gxi = InputXGradient(model).attribute(x, target=t)
    assert rel(explain(model, x, "gxi", target=t), gxi) <= TOL
    assert sal.shape == x.shape and sal.abs().max() > 0


@pytest.mark.parametrize("name,channels,rule",
                         [(n, c, r) for n, c in [("cnn", 1), ("resnet", 3)] for r in RULES]
                         + [("cnn", 3, "gausslegendre"), ("resnet", 1, "riemann_trapezoid")])
def test_integrated_gradients_matches_captum_for_every_rule(name, channels, rule, make_model, rel):
    model = make_model(name, channels)
    x, t = _inputs(channels)
    base = torch.full_like(x, 0.25)
    ours = explain(model, x, "ig", target=t, baseline=0.25, steps=12, rule=rule, chunk_size=17)
    ref = IntegratedGradients(model).attribute(x, baselines=base, target=t, n_steps=12, method=rule)
    assert rel(ours, ref) <= TOL


@pytest.mark.parametrize("name,channels", CASES)
def test_gradcam_matches_captum_layer_gradcam(name, channels, make_model, rel):
    model = make_model(name, channels)
    x, t = _inputs(channels)
    layer_name = CAM_LAYER[name]
    # the default layer is the last conv to run (for the ResNet: conv2, not the shortcut conv)
    assert resolve_layer(model, None, x[:1])[0] == layer_name
    layer = model.get_submodule(layer_name)
    ref = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
    ours = explain(model, x, "gradcam", target=t, upsample=False)
    assert ours.shape == ref.shape[:1] + ref.shape[2:]
    assert rel(ours, ref[:, 0]) <= TOL
    up = LayerAttribution.interpolate(ref, (8, 8), "bilinear")[:, 0]
    assert rel(explain(model, x, "grad_cam", target=t, layer=layer_name), up) <= TOL


@pytest.mark.parametrize("name,channels", [("cnn", 1), ("resnet", 3)])
def test_occlusion_matches_captum(name, channels, make_model, rel):
    model = make_model(name, channels)
    x, t = _inputs(channels)
    # stride 2 does not tile 8 - 3: the last window is cropped at the border in both
    for patch, stride, base in [(3, 2, 0.0), (2, 1, 0.5), ((2, 3), (1, 2), 0.0)]:
        ours = explain(model, x, "occlusion", target=t, patch=patch, stride=stride, baseline=base,
                       chunk_size=13)
        ph, pw = (patch, patch) if isinstance(patch, int) else patch
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        ref = Occlusion(model).attribute(x, target=t, sliding_window_shapes=(channels, ph, pw),
                                         strides=(channels, sh, sw), baselines=base,
                                         perturbations_per_eval=64)
        assert rel(ours, ref) <= TOL


def test_trained_cnn_on_digits_matches_captum(trained_cnn, test_images, rel):
    x = test_images[:20]
    t = trained_cnn(x).argmax(1)
    sal = CaptumSaliency(trained_cnn).attribute(x, target=t, abs=False)
    assert rel(explain(trained_cnn, x, "saliency"), sal) <= TOL
    ig = IntegratedGradients(trained_cnn).attribute(x, target=t, n_steps=50,
                                                    internal_batch_size=500)
    assert rel(explain(trained_cnn, x, "ig", steps=50), ig) <= TOL
    cam = LayerGradCam(trained_cnn, trained_cnn.conv2).attribute(x, target=t,
                                                                 relu_attributions=True)
    assert rel(explain(trained_cnn, x, "gradcam", upsample=False), cam[:, 0]) <= TOL
