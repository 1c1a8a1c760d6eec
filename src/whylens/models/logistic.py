"""Logistic regression on raw pixels: ``z = W vec(x) + b``.

With ``num_classes == 2`` and ``single_logit=True`` it is the binary model
``p(y=1|x) = sigmoid(w^T x + b)``; otherwise multinomial (softmax over K logits).
Gradient x Input on this model is exact: ``d z_c / d x = W_c``, so
``attr = W_c * x`` (reshaped to the image).
"""

from __future__ import annotations

import torch
from torch import nn


class LogisticRegression(nn.Module):
    """Linear classifier on flattened pixels, ``(B, C, H, W) -> (B, K)``."""

    def __init__(self, in_channels: int = 1, image_size: int | tuple[int, int] = 8,
                 num_classes: int = 10, single_logit: bool = False):
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        out = 1 if (single_logit and num_classes == 2) else num_classes
        self.linear = nn.Linear(in_channels * h * w, out)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))
