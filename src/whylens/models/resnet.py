"""A small ResNet with BatchNorm and in-place ReLU, as users' models have them.

stem: conv3x3 -> BN -> ReLU(inplace); ``layer1``: ``blocks`` basic blocks at
``width``; ``layer2``: ``blocks`` basic blocks at ``2*width``, the first with stride 2;
global average pool; ``fc``. Dotted names look like torchvision's
(``"layer2.1.conv2"``), so CAM layer paths read the same.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class SmallResNet(nn.Module):
    """``(B, C, H, W) -> (B, K)`` residual network; default CAM layer ``layer2.<last>.conv2``."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8, blocks: int = 1,
                 single_logit: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*[BasicBlock(width, width) for _ in range(blocks)])
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2),
                                    *[BasicBlock(2 * width, 2 * width) for _ in range(blocks - 1)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, 1 if (single_logit and num_classes == 2) else num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(self.avgpool(x).flatten(1))
