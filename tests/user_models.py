"""A user's own model module, for `--arch package.module:factory`."""

from tnncompress.models.small_cnn import SmallCNN


def make_net():
    return SmallCNN()
