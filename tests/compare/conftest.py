"""Shared fixtures of the model-comparison tests: digits 1 vs 7, an RBF SVM and CNNs trained once."""

import pytest

from whylens.commands import train_reference
from whylens.data import load_digits


@pytest.fixture(scope="session")
def ones_sevens():
    """Digits 1 vs 7 (label 0 = "1", 1 = "7"), 70 % of each class to train: 252 train, 109 test."""
    return load_digits(classes=[1, 7]).split(0.7, seed=0)


@pytest.fixture(scope="session")
def svm_1v7(ones_sevens):
    """The reference RBF SVM (recipe l2, median gamma, t = 0.1), trained by full-batch L-BFGS."""
    model, info = train_reference("svm", ones_sevens[0], progress=False)
    return model, info


@pytest.fixture(scope="session")
def cnn_1v7(ones_sevens):
    """The reference CNN (ReLU, recipe l2 and Adam epochs) on the same data."""
    model, info = train_reference("cnn", ones_sevens[0], seed=0, progress=False)
    return model, info


@pytest.fixture(scope="session")
def tanh_cnn_1v7(ones_sevens):
    """The reference CNN with tanh activations (smooth, as Koh & Liang's), same recipe and data."""
    model, info = train_reference("cnn", ones_sevens[0], seed=0, activation="tanh", progress=False)
    return model, info
