"""A small CNN: (conv -> act -> [pool]) x L -> global average pool -> linear.

With ``widths=(16, 32)`` on 1-channel input and 10 classes it has 5,130
parameters (the model of ``shared/NOTES.md``). ``activation`` may be ``"relu"``
(the usual choice), ``"tanh"`` or ``"softplus"``: a smooth activation gives a
Hessian that exists everywhere, which influence functions and warm-started
leave-one-out retraining need (Koh & Liang's CNN used tanh). The activation after
the last conv (``act<L>``) feeds only global average pooling and a linear layer, so
Grad-CAM equals HiResCAM at that layer (at the conv itself the activation's
derivative makes the gradient vary in space, and the two differ).
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
    """``(B, C, H, W) -> (B, K)``: layers ``conv1 .. convL`` (the last is the default CAM layer) and ``fc``.

    ``widths`` gives the channels of each 3x3 conv (any length >= 1); with ``pool``
    a 2x2 max-pool follows every conv but the last, widening the receptive field on
    larger images (a 64x64 X-ray with four convs ends on an 8x8 grid).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths=(16, 32),
                 activation: str = "relu", pool: bool = False, single_logit: bool = False):
        super().__init__()
        widths = [int(w) for w in widths]
        self.depth = len(widths)
        cin = in_channels
        for i, cout in enumerate(widths, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1))
            setattr(self, f"act{i}", make_activation(activation))
            if pool and i < len(widths):
                setattr(self, f"pool{i}", nn.MaxPool2d(2))
            cin = cout
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 1 if (single_logit and num_classes == 2) else num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.depth + 1):
            x = getattr(self, f"act{i}")(getattr(self, f"conv{i}")(x))
            pool = getattr(self, f"pool{i}", None)
            if pool is not None:
                x = pool(x)
        return self.fc(self.gap(x).flatten(1))
