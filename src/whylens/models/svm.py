"""A binary RBF-kernel SVM as a PyTorch module, trained on the smoothed hinge (Koh & Liang 2017, 5.1).

Features are kernel values to ``m`` fixed anchor images ``a_1..a_m`` (flattened pixels,
``D = C H W``), then a fixed whitening, then one linear logit:

    k(x)_k = exp(-gamma * ||vec(x) - a_k||^2)          (kernel features, (m,))
    psi(x) = L^-1 k(x),   L L^T = K + eps I,   K_kl = k(a_k, a_l)
    z      = w^T psi(x) + b.

The predicted class is ``z > 0`` (label ``y in {0, 1}``, sign ``s = 2y - 1``). The whitening
``L^-1`` (the inverse Cholesky factor of the anchors' kernel matrix, ``eps = 1e-6`` for
duplicate images) makes the model the primal form of the kernel SVM: writing
``w = L^T alpha`` gives ``z = sum_k alpha_k k(x, a_k) + b`` and ``||w||^2 = alpha^T K alpha``, the
RKHS norm, so the L2 term of the objective is the SVM's regulariser (Koh & Liang's release
used the same Cholesky features). ``psi(x)^T psi(x') = k(x)^T K^-1 k(x')`` is the Nystrom
approximation of ``k(x, x')``, exact when either image is an anchor. With ``whiten=False``
``psi = k`` (plain kernel features, regularised by ``alpha^T alpha``).

The anchors and the whitening are *buffers*, not parameters: training, influence and
leave-one-out only differentiate ``(w, b)``, in which the objective

    J(w, b) = (1/n) sum_i L_t(s_i z_i) + (l2/2) (||w||^2 + b^2)

is convex (``L_t`` is :func:`whylens.losses.smooth_hinge`), so full-batch L-BFGS finds its
minimum deterministically and exact influence matches retraining.

Anchors and ``gamma`` come from the training data (:meth:`RBFSVM.prepare`):

* anchors: all training images in their order when ``n <= max_anchors``, otherwise a seeded
  random subset of ``max_anchors`` of them (``torch.Generator().manual_seed(seed)``, kept in
  dataset order);
* ``gamma="median"`` (default): ``1 / median_{k<l} ||a_k - a_l||^2``, the median heuristic, so a
  typical pair of images has kernel value ``e^-1``; ``gamma="scale"``: ``1 / (D var(pixels))``
  (scikit-learn's ``"scale"``); or a positive number, used as given.

``prepare`` records ``num_anchors`` and the resolved ``gamma`` in ``whylens_config["kwargs"]``, so a
saved SVM is rebuilt by ``build_model("svm", **kwargs)`` with buffers of the right shape, and
its anchors and whitening come back from the weights file.

The "probability" whylens displays for this model is ``sigmoid(z)`` (:mod:`whylens.outputs`
reads every one-logit model so); the SVM is not trained on a likelihood, so it is a
monotone display score, not a calibrated probability.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import WhylensError, check
from ..losses import smooth_hinge_loss


def median_gamma(anchors: torch.Tensor) -> float:
    """``1 / median_{k<l} ||a_k - a_l||^2`` over the rows of ``anchors`` ``(m, D)`` (m >= 2)."""
    a = anchors.double()
    d2 = squared_distances(a, a)
    iu = torch.triu_indices(len(a), len(a), offset=1)
    med = float(d2[iu[0], iu[1]].median())
    check(med > 0, "train: the anchor images are all identical; cannot pick the RBF width gamma")
    return 1.0 / med


def scale_gamma(anchors: torch.Tensor) -> float:
    """``1 / (D var(a))`` with ``var`` over all pixels of the anchors ``(m, D)``."""
    var = float(anchors.double().var())
    check(var > 0, "train: the anchor pixels are constant; cannot pick the RBF width gamma")
    return 1.0 / (anchors.shape[1] * var)


def squared_distances(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``(B, m)`` matrix ``||x_i - a_k||^2`` of rows ``x`` ``(B, D)`` and ``a`` ``(m, D)``, clamped at 0.

    Written as ``|x|^2 + |a|^2 - 2 x a^T`` (a matrix product, which ``torch.func.vmap`` batches);
    the clamp removes the tiny negatives that rounding leaves for ``x == a``.
    """
    return ((x * x).sum(1, keepdim=True) + (a * a).sum(1)[None] - 2 * x @ a.T).clamp_min(0)


# Added to the diagonal of the anchors' kernel matrix before its Cholesky factor (k(a, a) = 1):
# it only matters when two anchors (nearly) coincide, e.g. duplicate training images.
JITTER = 1e-6


def _zero_linear(m: int, dtype: torch.dtype) -> nn.Linear:
    """``nn.Linear(m, 1)`` with ``w = 0, b = 0``: the objective is convex, so training need not depend on the RNG."""
    # Built on the meta device at width 1 and then given its real tensors: no random draws (the
    # global RNG stays as the caller left it) and no warning for an empty weight when m = 0.
    layer = nn.Linear(1, 1, device="meta")
    layer.in_features = m
    layer.weight = nn.Parameter(torch.zeros(1, m, dtype=dtype))
    layer.bias = nn.Parameter(torch.zeros(1, dtype=dtype))
    return layer


def whitening(anchors: torch.Tensor, gamma: float, eps: float = JITTER) -> torch.Tensor:
    """``L^-T`` ``(m, m)`` in float64, with ``L L^T = K + eps I`` and ``K_kl = exp(-gamma ||a_k - a_l||^2)``.

    ``k(x) @ L^-T`` is ``(L^-1 k(x))^T``, the whitened features of a row of kernel values.
    """
    a = anchors.double()
    K = torch.exp(-gamma * squared_distances(a, a))
    K.diagonal().add_(eps)
    L, info = torch.linalg.cholesky_ex(K)
    check(int(info) == 0, "train: the anchors' kernel matrix is not positive definite; "
                          "try a larger gamma or whiten=False")
    eye = torch.eye(len(a), dtype=torch.float64)
    return torch.linalg.solve_triangular(L, eye, upper=False).T.contiguous()


class RBFSVM(nn.Module):
    """Binary RBF-kernel SVM ``(B, C, H, W) -> (B, 1)``: ``z = w^T L^-1 k(x) + b`` (see the module docstring).

    Args:
        input_shape: ``(C, H, W)`` of the images.
        num_anchors: ``m``; ``None`` until :meth:`prepare` picks the anchors (the model cannot
            be evaluated before). Given (as in a saved config), the buffers are allocated with
            zeros, to be filled by :meth:`prepare` or ``load_state_dict``.
        max_anchors: at most this many anchors (a seeded subset of larger training sets).
        gamma: ``"median"`` | ``"scale"`` | a positive number (see the module docstring).
        temperature: ``t`` of the smoothed hinge ``t log(1 + exp((1 - s z)/t))``: the width, in
            margin units, of the rounded corner; ``t -> 0`` is the hinge (the gap is at most
            ``t log 2``), ``t = 1`` a softplus of ``1 - s z``.
        whiten: multiply the kernel features by ``L^-1`` (default; ``||w||^2`` is then the RKHS
            norm of the SVM) or use the raw kernel values.
        seed: seed of the anchor subset.
        num_classes: must be 2 (the SVM is binary); accepted so that generic callers can pass it.
        single_logit: accepted and ignored: the SVM always has one logit.

    Buffers: ``anchors`` ``(m, D)`` and ``whitening`` ``(m, m)`` (``L^-T``; the identity when
    ``whiten=False``). Parameters: ``linear.weight`` ``(1, m)``, ``linear.bias`` ``(1,)``.
    ``convex = True``: :func:`whylens.train.train` defaults to full-batch L-BFGS for it.
    """

    convex = True

    def __init__(self, input_shape=(1, 8, 8), num_anchors: int | None = None, max_anchors: int = 500,
                 gamma: float | str = "median", temperature: float = 0.1, whiten: bool = True,
                 seed: int = 0, num_classes: int = 2, single_logit: bool = True):
        super().__init__()
        check(num_classes == 2, f"svm: the RBF SVM is binary; expected 2 classes, got {num_classes}")
        shape = tuple(int(v) for v in input_shape)
        check(len(shape) == 3 and all(v > 0 for v in shape),
              f"input_shape: expected (C, H, W) with positive sizes, got {input_shape!r}")
        check(isinstance(max_anchors, int) and max_anchors >= 2,
              f"max_anchors: expected an integer >= 2, got {max_anchors!r}")
        if isinstance(gamma, str):
            check(gamma in ("median", "scale"), f"gamma: expected 'median', 'scale' or a number > 0, got {gamma!r}")
        else:
            check(isinstance(gamma, (int, float)) and math.isfinite(float(gamma)) and float(gamma) > 0,
                  f"gamma: expected 'median', 'scale' or a number > 0, got {gamma!r}")
        t = float(temperature)
        check(math.isfinite(t) and t > 0, f"temperature: expected a number > 0, got {temperature!r}")
        m = 0 if num_anchors is None else num_anchors
        check(isinstance(m, int) and m >= 0, f"num_anchors: expected a positive integer, got {num_anchors!r}")
        self.input_shape = shape
        self.dim = math.prod(shape)
        self.max_anchors = int(max_anchors)
        self.gamma = gamma if isinstance(gamma, str) else float(gamma)
        self.temperature = t
        self.whiten = bool(whiten)
        self.seed = int(seed)
        self.register_buffer("anchors", torch.zeros(m, self.dim))
        self.register_buffer("whitening", torch.zeros(m, m))
        self.linear = _zero_linear(m, torch.float32)

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    @torch.no_grad()
    def prepare(self, train) -> "RBFSVM":
        """Pick the anchors (and ``gamma`` unless a number) from ``train``, build the whitening, zero ``w, b``.

        ``train`` is an ImageSet or ``(images, labels)`` pair of shape ``(N, *input_shape)``.
        Updates ``whylens_config["kwargs"]`` (``num_anchors``, ``gamma``, ...) so a saved model reloads.
        """
        from ..data.imageset import as_tensors
        images, _ = as_tensors(train, "train")
        check(tuple(images.shape[1:]) == self.input_shape,
              f"train: expected images of shape (N, {', '.join(map(str, self.input_shape))}), "
              f"got {tuple(images.shape)}")
        n = images.shape[0]
        check(n >= 2, f"train: expected at least 2 images to pick RBF anchors from, got {n}")
        flat = images.flatten(1).to(torch.float32)
        if n > self.max_anchors:
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(n, generator=g)[: self.max_anchors].sort().values
            flat = flat[idx]
        if isinstance(self.gamma, str):
            self.gamma = median_gamma(flat) if self.gamma == "median" else scale_gamma(flat)
        dtype = self.linear.weight.dtype
        W = whitening(flat, self.gamma) if self.whiten else torch.eye(len(flat), dtype=torch.float64)
        self.anchors = flat.to(dtype).clone()
        self.whitening = W.to(dtype)
        self.linear = _zero_linear(len(flat), dtype)
        cfg = getattr(self, "whylens_config", None)
        if cfg is not None:
            cfg["kwargs"].update(input_shape=list(self.input_shape), num_anchors=self.num_anchors,
                                 gamma=self.gamma, temperature=self.temperature, whiten=self.whiten)
        return self

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel values ``(B, m)``: ``k(x)_k = exp(-gamma ||vec(x) - a_k||^2)`` for images ``(B, C, H, W)``."""
        if self.num_anchors == 0 or isinstance(self.gamma, str):
            raise WhylensError("svm: no anchors yet; call model.prepare(train) before training or evaluating it")
        check(x.dim() == 4 and tuple(x.shape[1:]) == self.input_shape,
              f"images: expected shape (B, {', '.join(map(str, self.input_shape))}) for this SVM, "
              f"got {tuple(x.shape)}")
        flat = x.flatten(1)
        return torch.exp(-self.gamma * squared_distances(flat, self.anchors.to(flat.dtype)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the linear layer sees, ``(B, m)``: ``psi(x) = L^-1 k(x)`` (``k(x)`` if not whitened)."""
        k = self.kernel(x)
        return k @ self.whitening.to(k.dtype) if self.whiten else k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))

    def per_sample_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Smoothed hinge ``L_t(s z) = t log(1 + exp((1 - s z)/t))`` per row ``(B,)``, ``s = 2y - 1``."""
        return smooth_hinge_loss(logits, labels, self.temperature)

    def extra_repr(self) -> str:
        g = self.gamma if isinstance(self.gamma, str) else f"{self.gamma:.4g}"
        return f"input_shape={self.input_shape}, num_anchors={self.num_anchors}, gamma={g}, " \
               f"temperature={self.temperature}, whiten={self.whiten}"
