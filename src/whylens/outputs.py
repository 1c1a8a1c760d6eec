"""How whylens reads a classifier's output, for one-logit and K-logit models alike.

A model maps ``(B, C, H, W)`` images to logits ``(B, K)``. ``K == 1`` is a binary
model with a sigmoid: the logit ``z`` is the log-odds of class 1. Everything that
needs class probabilities, a per-class score or a loss goes through here, so one-
and two-logit binary models mean the same thing everywhere:

* probabilities: ``softmax(z)`` for ``K >= 2``; ``[1 - sigmoid(z), sigmoid(z)]`` for ``K == 1``;
* class score (what attribution explains): ``z[c]`` for ``K >= 2``; for ``K == 1`` it is
  ``z`` for class 1 and ``-z`` for class 0 (the log-odds of the chosen class);
* loss: cross-entropy ``-log p[y]``; for ``K == 1`` that is the binary cross-entropy
  ``softplus(z) - y z``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import check


def num_classes_of(logits: torch.Tensor) -> int:
    """Number of classes a ``(B, K)`` logit tensor stands for (2 when ``K == 1``)."""
    return 2 if logits.shape[-1] == 1 else int(logits.shape[-1])


def _check_logits(logits: torch.Tensor) -> None:
    check(logits.dim() == 2, f"model output: expected logits of shape (B, K), got {tuple(logits.shape)}")


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, num_classes)`` from logits ``(B, K)``."""
    _check_logits(logits)
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits)
        return torch.cat([1 - p1, p1], dim=1)
    return torch.softmax(logits, dim=1)


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    """Arg-max class ``(B,)``; for one logit, ``z > 0``."""
    _check_logits(logits)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def check_labels(labels: torch.Tensor, k: int, argument: str = "labels") -> torch.Tensor:
    """Return ``labels`` as int64 ``(B,)`` after checking each is in ``[0, k)``."""
    labels = torch.as_tensor(labels)
    check(not labels.is_floating_point() or bool((labels == labels.round()).all()),
          f"{argument}: expected integer class indices")
    labels = labels.long().reshape(-1)
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        check(lo >= 0 and hi < k, f"{argument}: expected class indices in [0, {k - 1}], got range [{lo}, {hi}]")
    return labels


def class_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Score ``(B,)`` of class ``targets[b]`` for each row: ``z[b, t]``, or ``±z`` for one logit."""
    _check_logits(logits)
    targets = targets.to(logits.device).long()
    if logits.shape[1] == 1:
        sign = targets.to(logits.dtype) * 2 - 1
        return logits[:, 0] * sign
    return logits.gather(1, targets[:, None])[:, 0]


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``L_i = -log p(y_i | x_i)`` per row, shape ``(B,)``.

    For one logit ``z``: ``L = softplus(z) - y z`` (binary cross-entropy with logits).
    """
    _check_logits(logits)
    labels = labels.to(logits.device).long()
    if logits.shape[1] == 1:
        z = logits[:, 0]
        return F.softplus(z) - labels.to(z.dtype) * z
    return F.cross_entropy(logits, labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Margin ``z_y - max_{c != y} z_c`` per row (``(2y-1) z`` for one logit), shape ``(B,)``."""
    _check_logits(logits)
    labels = labels.to(logits.device).long()
    if logits.shape[1] == 1:
        return class_score(logits, labels)
    correct = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return correct - others.max(dim=1).values


def loss_for(model) -> "callable":
    """The per-sample training loss ``(logits (B,K), labels (B,)) -> (B,)`` of ``model``.

    A model may define its own ``per_sample_loss(logits, labels)`` method (the SVM's
    smoothed hinge does); otherwise it is the cross-entropy :func:`per_sample_loss`.
    Training, influence and leave-one-out all use this one function, so they
    differentiate the same objective.
    """
    own = getattr(model, "per_sample_loss", None)
    return own if callable(own) else per_sample_loss
