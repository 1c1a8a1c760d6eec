"""A small CNN: conv -> act -> [pool] -> conv -> act -> global average pool -> linear.

With ``widths=(16, 32)`` on 1-channel input and 10 classes it has 5,130
parameters (the model of ``shared/NOTES.md``). ``activation`` may be ``"relu"``
(the usual choice), ``"tanh"`` or ``"softplus"``: a smooth activation gives a
Hessian that exists everywhere, which influence functions and warm-started
leave-one-out retraining need (Koh & Liang's CNN used tanh). The last conv layer
feeds global average pooling and a linear layer, so Grad-CAM equals HiResCAM there.
"""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": lambda: nn.ReLU(), "tanh": nn.Tanh, "softplus": nn.Softplus}


def make_activation(name: str) -> nn.Module:
    from ..errors import check
    check(name in _ACTIVATIONS, f"activation: expected one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


class SmallCNN(nn.Module):
    """``(B, C, H, W) -> (B, K)``; layers ``conv1``, ``conv2`` (the default CAM layer), ``fc``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, int] = (16, 32),
                 activation: str = "relu", pool: bool = False, single_logit: bool = False):
        super().__init__()
        c1, c2 = widths
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.act1 = make_activation(activation)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.act2 = make_activation(activation)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2, 1 if (single_logit and num_classes == 2) else num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act1(self.conv1(x)))
        x = self.act2(self.conv2(x))
        return self.fc(self.gap(x).flatten(1))
