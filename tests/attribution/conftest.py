"""Shared fixtures for the attribution tests: a briefly trained digits CNN, random models."""

import pytest
import torch

from whylens import build_model, train


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max |b|``: the error relative to the reference map's scale."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """SmallCNN (ReLU, 5,130 parameters) trained briefly with Adam on the 1,500 digits."""
    torch.manual_seed(0)
    model = build_model("cnn")
    train(model, digits[0], l2=1e-3, epochs=15, lr=0.03, batch_size=128, progress=False)
    return model.eval()


@pytest.fixture(scope="session")
def test_images(digits):
    """The first 100 digits test images ``(100, 1, 8, 8)``."""
    return digits[1].images[:100]


def random_model(name: str, channels: int, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A seeded reference model; BatchNorm statistics made non-trivial so eval mode matters."""
    torch.manual_seed(seed)
    model = build_model(name, in_channels=channels, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if name == "logistic" and isinstance(m, torch.nn.Linear):
                m.weight.normal_()
                m.bias.normal_()
    return model.eval()


@pytest.fixture(scope="session")
def rel():
    """The function ``rel_diff(a, b)`` (a fixture: conftest is not a module to import)."""
    return rel_diff


@pytest.fixture(scope="session")
def make_model():
    """The function ``random_model(name, channels, seed=0, **kwargs)``."""
    return random_model
