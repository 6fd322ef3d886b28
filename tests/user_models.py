"""A user's own model module, for `--arch package.module:factory`."""

import torch.nn.functional as F
from torch import nn

from tnncompress.models.small_cnn import SmallCNN


def make_net():
    return SmallCNN()


class _Net(nn.Module):
    """conv -> act -> conv -> norm -> act -> pool -> linear -> act -> linear (10 classes, 1x28x28), with the
    activation and the norm chosen, and optionally no pooling (a per-position head: not a classifier)."""

    def __init__(self, act=F.relu, norm=None, classify: bool = True):
        super().__init__()
        self.act, self.classify = act, classify
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.norm = norm or nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 7 * 7, 32)
        self.fc2 = nn.Linear(32, 10)
        self.head = nn.Conv2d(16, 10, 1)

    def forward(self, x):
        x = self.act(self.norm(self.conv2(self.act(self.conv1(x)))))
        if not self.classify:
            return self.head(x)
        x = F.max_pool2d(x, 4)
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def silu_net():
    """No ReLU anywhere."""
    return _Net(act=F.silu)


def group_norm_net():
    """A group norm (no moment rule) right after the second convolution."""
    return _Net(norm=nn.GroupNorm(4, 16))


def dense_head_net():
    """Logits per position, [batch, 10, 28, 28]."""
    return _Net(classify=False)
