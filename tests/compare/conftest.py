"""Shared fixtures of the model-comparison tests: digits 1 vs 7, an RBF SVM and CNNs trained once.

Small full-batch problems run several times faster on one intra-op thread than on two
(the ops are tiny and the threads only contend), so training here pins one thread.
"""

import contextlib

import pytest
import torch

from whylens.commands import train_reference
from whylens.data import load_digits


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def single_thread():
    """The context manager :func:`one_thread` (fixtures, not imports: conftest is not a module to import)."""
    return one_thread


@pytest.fixture(scope="session")
def ones_sevens():
    """Digits 1 vs 7 (label 0 = "1", 1 = "7"), 70 % of each class to train: 252 train, 109 test."""
    return load_digits(classes=[1, 7]).split(0.7, seed=0)


@pytest.fixture(scope="session")
def svm_1v7(ones_sevens):
    """The reference RBF SVM (recipe l2, median gamma, t = 0.1), trained by full-batch L-BFGS."""
    with one_thread():
        model, info = train_reference("svm", ones_sevens[0], progress=False)
    return model, info


@pytest.fixture(scope="session")
def cnn_1v7(ones_sevens):
    """The reference CNN (ReLU, recipe l2 and Adam epochs) on the same data."""
    with one_thread():
        model, info = train_reference("cnn", ones_sevens[0], seed=0, progress=False)
    return model, info


@pytest.fixture(scope="session")
def tanh_cnn_1v7(ones_sevens):
    """The reference CNN with tanh activations (smooth, as Koh & Liang's), same recipe and data."""
    with one_thread():
        model, info = train_reference("cnn", ones_sevens[0], seed=0, activation="tanh", progress=False)
    return model, info
