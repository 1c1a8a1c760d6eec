"""Models shared across test folders, trained once per session (deterministic)."""

import pytest
import torch

import whylens

# The suite's models are small: on 2 cores one intra-op thread is as fast or faster, and it keeps
# timings and float reductions identical from run to run.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """The NOTES split: first 1,500 digits train, last 297 test."""
    return whylens.digits_split()


@pytest.fixture(scope="session")
def digits_logreg(digits):
    """Multinomial logistic regression on digits, L2 0.01, full-batch L-BFGS (89.2 % test)."""
    tr, _ = digits
    m = whylens.build_model("logistic", in_channels=1, image_size=8, num_classes=10)
    whylens.train(m, tr, l2=0.01, progress=False)
    return m


@pytest.fixture(scope="session")
def digits_cnn(digits):
    """The 5,130-parameter ReLU CNN on digits, Adam."""
    tr, _ = digits
    torch.manual_seed(0)
    m = whylens.build_model("cnn", in_channels=1, num_classes=10)
    whylens.train(m, tr, l2=1e-3, epochs=40, progress=False)
    return m


@pytest.fixture(scope="session")
def xrays():
    from whylens.data.synthetic import synthetic_xrays
    return synthetic_xrays(n_train=400, n_test=160, seed=0, shortcut=0.95)


@pytest.fixture(scope="session")
def xray_shortcut_cnn(xrays):
    """The demo's CNN: trained on the synthetic X-rays whose marker co-occurs with pneumonia."""
    from whylens.commands import train_reference
    model, _ = train_reference("cnn", xrays["train"], seed=0, epochs=15, lr=1e-2, batch_size=32, progress=False)
    return model
