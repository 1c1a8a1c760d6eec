"""Shared fixtures for the influence tests: the digits models of shared/NOTES.md, fitted once.

Also closed forms for L2-regularised logistic regression, written independently of
``whylens.influence`` (plain numpy, float64), handed to tests by the ``refs`` fixture:

* multinomial: ``H = (1/n) sum_i (diag(p_i) - p_i p_i^T) kron (x~_i x~_i^T) + l2 I`` and
  ``g_i = (p_i - e_{y_i}) kron x~_i`` with ``x~ = [x, 1]``, reordered to whylens' flat parameter
  order (``linear.weight`` ``(K, D)`` row-major, then ``linear.bias`` ``(K,)``);
* binary one-logit: ``H = (1/n) X~^T diag(p (1-p)) X~ + l2 I``, ``g_i = (p_i - y_i) x~_i``.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

L2 = 0.01  # the lambda of J used throughout the influence tests


def _xt(images: torch.Tensor) -> np.ndarray:
    x = images.reshape(images.shape[0], -1).double().numpy()
    return np.hstack([x, np.ones((x.shape[0], 1))])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def kron_to_param_order(K: int, D: int) -> np.ndarray:
    """``perm`` with ``theta[perm] == kron_vector``: kron index ``k*(D+1)+d`` -> weight ``k*D+d`` or bias ``K*D+k``."""
    perm = np.empty(K * (D + 1), dtype=np.int64)
    for k in range(K):
        for d in range(D + 1):
            perm[k * (D + 1) + d] = K * D + k if d == D else k * D + d
    return perm


class SoftmaxClosedForm:
    """Closed-form Hessian, gradients and influence of a multinomial logistic regression."""

    def __init__(self, model, train_images, train_labels, l2: float):
        self.W = model.linear.weight.detach().double().numpy()
        self.b = model.linear.bias.detach().double().numpy()
        self.K, self.D = self.W.shape
        self.l2 = l2
        self.perm = kron_to_param_order(self.K, self.D)
        X = _xt(train_images)
        P = self.probs(X)
        n = X.shape[0]
        S = np.einsum("ik,kl->ikl", P, np.eye(self.K)) - np.einsum("ik,il->ikl", P, P)
        # H[(k,d),(l,e)] = (1/n) sum_i S_i[k,l] x_i[d] x_i[e]: the kron sum, as one contraction.
        H = np.einsum("ikl,id,ie->kdle", S, X, X, optimize=True).reshape(self.K * (self.D + 1), -1)
        H = H / n + l2 * np.eye(H.shape[0])
        # Reorder rows/cols from kron order to whylens' flat parameter order.
        Hp = np.empty_like(H)
        Hp[np.ix_(self.perm, self.perm)] = H
        self.H = Hp
        self.G_train = self.grads(train_images, train_labels)

    def probs(self, X):
        return _softmax(X[:, :-1] @ self.W.T + self.b)

    def _to_params(self, kron_rows: np.ndarray) -> np.ndarray:
        out = np.empty_like(kron_rows)
        out[:, self.perm] = kron_rows
        return out

    def grads(self, images, labels) -> np.ndarray:
        """``(n, p)`` rows ``(p_i - e_{y_i}) kron x~_i`` in parameter order."""
        X = _xt(images)
        R = self.probs(X)
        R[np.arange(len(X)), np.asarray(labels)] -= 1.0
        return self._to_params(np.einsum("nk,nd->nkd", R, X).reshape(len(X), -1))

    def output_grads(self, images, coef: np.ndarray) -> np.ndarray:
        """``(n, p)`` rows ``c_i kron x~_i`` for output-space coefficients ``coef`` ``(n, K)``."""
        X = _xt(images)
        return self._to_params(np.einsum("nk,nd->nkd", coef, X).reshape(len(X), -1))

    def scores(self, G_test: np.ndarray, G_train: np.ndarray | None = None) -> np.ndarray:
        G_train = self.G_train if G_train is None else G_train
        return -G_test @ np.linalg.solve(self.H, G_train.T)


class BinaryClosedForm:
    """One-logit logistic regression ``p = sigmoid(w^T x + b)``: Hessian, gradients, influence."""

    def __init__(self, model, train_images, train_labels, l2: float):
        self.w = model.linear.weight.detach().double().numpy()[0]
        self.b = float(model.linear.bias.detach().double().numpy()[0])
        X = _xt(train_images)
        p = self.probs(X)
        n = X.shape[0]
        self.H = (X.T * (p * (1 - p))) @ X / n + l2 * np.eye(X.shape[1])
        self.G_train = self.grads(train_images, train_labels)

    def probs(self, X):
        return 1.0 / (1.0 + np.exp(-(X[:, :-1] @ self.w + self.b)))

    def grads(self, images, labels) -> np.ndarray:
        X = _xt(images)
        return (self.probs(X) - np.asarray(labels, dtype=np.float64))[:, None] * X

    def scores(self, G_test: np.ndarray) -> np.ndarray:
        return -G_test @ np.linalg.solve(self.H, self.G_train.T)


def pearson(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def rel_err(a, b) -> float:
    """``max |a - b| / max |b|``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="session")
def logreg(digits_logreg):
    """Multinomial logistic regression on the first 1,500 digits, l2 = 0.01, L-BFGS (tests/conftest.py)."""
    return digits_logreg


@pytest.fixture(scope="session")
def logreg_exact(logreg, digits):
    """The exact-solver Influence on the logistic regression (fitted once per session)."""
    from whylens.influence import Influence
    return Influence(logreg, "exact", l2=L2, progress=False).fit(digits[0])


@pytest.fixture(scope="session")
def softmax_closed_form(logreg, digits):
    """:class:`SoftmaxClosedForm` of the logistic regression on the training set."""
    tr, _ = digits
    return SoftmaxClosedForm(logreg, tr.images, tr.labels, L2)


@pytest.fixture(scope="session")
def refs():
    """The closed forms and comparison helpers of this file."""
    return types.SimpleNamespace(SoftmaxClosedForm=SoftmaxClosedForm, BinaryClosedForm=BinaryClosedForm,
                                 pearson=pearson, rel_err=rel_err, L2=L2)

