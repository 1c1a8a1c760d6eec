"""The call contract: targets, model state and hooks (also on error), input checks, in-place ops."""

import copy

import pytest
import torch
from torch import nn

from whylens.attribution import METHODS, GradCAM, IntegratedGradients, Saliency, explain
from whylens.errors import WhylensError

ALL = list(METHODS)
FAST = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 2},
        "occlusion": {"patch": 4, "stride": 4}}


def _x(c=1, n=4, seed=0):
    return torch.rand(n, c, 8, 8, generator=torch.Generator().manual_seed(seed))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


@pytest.mark.parametrize("method", ALL)
def test_mixed_targets_in_a_batch_equal_one_by_one_calls(method, make_model, rel):
    model = make_model("resnet", 3)
    x, t = _x(3), [4, 0, 9, 4]
    opts = FAST.get(method, {})
    batch = explain(model, x, method, target=t, **opts)
    if method != "smoothgrad":  # its noise depends on the image's place in the batch
        alone = torch.cat([explain(model, x[i:i + 1], method, target=t[i], **opts)
                           for i in range(4)])
        assert rel(batch, alone) < 1e-5
    same = explain(model, x, method, target=torch.tensor(t), **opts)
    assert torch.allclose(batch, same)
    # target None is the predicted class
    pred = model(x).argmax(1)
    assert torch.allclose(explain(model, x, method, **opts),
                          explain(model, x, method, pred, **opts))
    # different targets give different maps (the target is not ignored)
    assert rel(explain(model, x, method, target=[1, 2, 3, 5], **opts), batch) > 1e-3


@pytest.mark.parametrize("target,match", [([1, 2, 3], r"one class per image \(4 images\), got 3"),
                                          ([1, 2, 3, 4, 5], "got 5"),
                                          (10, r"\[0, 9\]"), (-1, ">= 0"),
                                          ([0.5, 1, 2, 3], "integer"), (True, "class index"),
                                          (torch.zeros(4, 2, dtype=torch.long), "1-D")])
def test_bad_targets_are_one_line_errors(target, match, make_model):
    model = make_model("cnn", 1)
    for method in ("saliency", "gradcam", "ig"):
        with pytest.raises(WhylensError, match=match) as err:
            explain(model, _x(), method, target=target)
        assert "\n" not in str(err.value)


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom from the user's layer")


@pytest.mark.parametrize("method", ALL)
def test_state_is_restored_and_hooks_removed_even_on_error(method, make_model):
    model = make_model("resnet", 1)
    model.train()
    model.layer1.eval()  # a caller's mixed per-module state
    model.layer2[0].bn1.weight.requires_grad_(False)
    flags = [m.training for m in model.modules()]
    req = [p.requires_grad for p in model.parameters()]
    opts = FAST.get(method, {})
    explain(model, _x(), method, target=1, **opts)
    with pytest.raises(WhylensError):
        explain(model, _x(), method, target=[1, 2], **opts)  # wrong length
    with pytest.raises(WhylensError):
        explain(model, _x(), method, target=10, **opts)  # found only after a forward pass
    broken = copy.deepcopy(model)
    broken.fc = nn.Sequential(Boom())
    broken_flags = [m.training for m in broken.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        explain(broken, _x(), method, target=1, **opts)
    for m, before in ((model, flags), (broken, broken_flags)):
        assert [mod.training for mod in m.modules()] == before
        assert _hooks(m) == 0
        assert all(p.grad is None for p in m.parameters())
    assert [p.requires_grad for p in model.parameters()] == req


def test_eval_mode_is_used_for_the_call(make_model):
    model = make_model("resnet", 1)
    x = _x()
    ref = explain(model, x, "saliency", 3)
    model.train()
    assert torch.allclose(explain(model, x, "saliency", 3), ref)
    assert model.training and model.bn1.training


def test_in_place_relu_gives_the_same_cams_as_out_of_place(make_model, rel):
    inplace = make_model("resnet", 3)
    plain = copy.deepcopy(inplace)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in inplace.modules())
    x = _x(3)
    # bn1's output is overwritten by relu(inplace=True); bn2's by ``out += identity``
    nonzero = 0
    for layer in (None, "layer2.0.bn1", "layer2.0.bn2", "layer1.0.conv1", "bn1"):
        for method in ("gradcam", "gradcam++", "hirescam"):
            a = explain(inplace, x, method, [2, 0, 1, 5], layer=layer, upsample=False)
            b = explain(plain, x, method, [2, 0, 1, 5], layer=layer, upsample=False)
            assert rel(a, b) < 1e-6, (layer, method)
            nonzero += bool(a.abs().max() > 0)
    assert nonzero == 15  # no comparison was between two all-zero maps
    assert torch.allclose(explain(inplace, x, "ig", 2, steps=5),
                          explain(plain, x, "ig", 2, steps=5))


def test_cam_shapes_and_layer_errors(make_model):
    model = make_model("resnet", 1)
    x = _x()
    assert explain(model, x, "gradcam").shape == (4, 8, 8)
    assert explain(model, x, "gradcam", upsample=False).shape == (4, 4, 4)
    assert explain(model, x, "gradcam", layer="layer1.0.conv2", upsample=False).shape == (4, 8, 8)
    assert explain(model, x, "gradcam", layer=model.layer1[0].conv2).shape == (4, 8, 8)
    with pytest.raises(WhylensError) as err:
        explain(model, x, "gradcam", layer="layer2.0.conv3")
    msg = str(err.value)
    assert "closest: layer2.0.conv2, layer2.0.conv1" in msg
    assert "conv layers: conv1, layer1.0.conv1" in msg
    assert "\n" not in msg
    with pytest.raises(WhylensError, match="ran 2 times"):
        explain(model, x, "gradcam", layer="layer1.0.relu")  # one ReLU module used twice
    with pytest.raises(WhylensError, match="feature map"):
        explain(model, x, "gradcam", layer="fc")
    with pytest.raises(WhylensError, match="no nn.Conv2d"):
        explain(make_model("logistic", 1), x, "gradcam")


def test_input_checks(make_model):
    cnn, logistic = make_model("cnn", 1), make_model("logistic", 1)
    with pytest.raises(WhylensError, match=r"\(3, 8, 8\).*expects 1 channels") as err:
        explain(cnn, _x(3), "saliency")
    assert "\n" not in str(err.value)
    with pytest.raises(WhylensError, match=r"\(3, 8, 8\).*in_features=64"):
        explain(logistic, _x(3), "ig")
    with pytest.raises(WhylensError, match=r"\(1, 6, 6\)"):
        explain(logistic, torch.rand(2, 1, 6, 6), "gradient_x_input")
    bad = _x()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(WhylensError, match="NaN"):
        explain(cnn, bad, "gradcam")
    bad[1, 0, 2, 2] = float("inf")
    with pytest.raises(WhylensError, match="NaN or inf"):
        explain(cnn, bad, "ig")
    with pytest.raises(WhylensError, match="shape"):
        explain(cnn, torch.rand(8, 8), "saliency")
    with pytest.raises(WhylensError, match="float"):
        explain(cnn, torch.ones(1, 1, 8, 8, dtype=torch.uint8), "saliency")
    with pytest.raises(WhylensError, match="empty"):
        explain(cnn, torch.rand(0, 1, 8, 8), "saliency")
    with pytest.raises(WhylensError, match="unknown method 'lime'.*saliency, gradient_x_input"):
        explain(cnn, _x(), "lime")
    with pytest.raises(WhylensError,
                       match="unknown option 'steps'; expected one of abs, chunk_size"):
        explain(cnn, _x(), "saliency", steps=3)
    with pytest.raises(WhylensError, match="stride"):
        explain(cnn, _x(), "occlusion", patch=2, stride=3)
    with pytest.raises(WhylensError, match="chunk_size"):
        explain(cnn, _x(), "gradcam", chunk_size=0)


def test_aliases_classes_and_float64_models(make_model, rel):
    model = make_model("cnn", 1)
    x = _x()
    assert torch.equal(explain(model, x, "IG", 1, steps=6),
                       explain(model, x, "integrated_gradients", 1, steps=6))
    assert torch.equal(explain(model, x, "Grad-CAM", 1), GradCAM(model).attribute(x, 1))
    assert torch.equal(explain(model, x, "gradcampp", 1), explain(model, x, "gradcam++", 1))
    assert torch.equal(explain(model, x, "gxi", 1), explain(model, x, "gradient_x_input", 1))
    double = copy.deepcopy(model).double()
    for method in ("saliency", "ig", "gradcam", "occlusion"):
        a = explain(double, x, method, 1)
        assert a.dtype == torch.float64
        # occlusion differences two close float32 scores, hence the looser bound
        bound = 1e-4 if method == "occlusion" else 1e-5
        assert rel(a.float(), explain(model, x, method, 1)) < bound
    res = IntegratedGradients(double).attribute(x, 1, return_delta=True, steps=100)
    assert res.delta.dtype == torch.float64
    assert Saliency(model).attribute(x, 1).shape == x.shape


def test_parameter_grads_are_not_touched(make_model):
    model = make_model("cnn", 1)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    for method in ALL:
        explain(model, _x(), method, 0, **FAST.get(method, {}))
    assert all(bool((p.grad == 7.0).all()) for p in model.parameters())
