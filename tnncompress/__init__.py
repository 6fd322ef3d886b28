"""tnncompress: compress pretrained CNNs into tensorial neural networks."""

__version__ = "0.1.0"
