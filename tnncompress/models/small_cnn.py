"""A small CNN for fast tests and demos: three 3x3 convolutions, three poolings and two linear layers.

Big enough that every layer kind the pipeline handles appears (a first conv, compressible middle convs,
a hidden linear layer, a last linear layer), small enough to train on the bundled data in seconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.fc1 = nn.Linear(4 * width * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2)
        # 7x7 -> 4x4 by a third pooling (ceil mode), which ONNX has; adaptive pooling to a size that
        # does not divide the input has no ONNX operator.
        x = F.max_pool2d(x, 2, ceil_mode=True).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


@register("small_cnn", (1, 28, 28), "small CNN (3 convs, 2 linear) for fast tests and demos")
def small_cnn(num_classes: int = 10, in_channels: int = 1) -> SmallCNN:
    return SmallCNN(num_classes, in_channels)
