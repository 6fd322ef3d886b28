"""Datasets: spec parsing, loading without downloads, and batch iteration."""

from .datasets import ClassificationData, TensorImageDataset, iterate_batches
from .specs import DataSpec, fashion_mnist_dir, load_data, parse_spec

__all__ = ["ClassificationData", "DataSpec", "TensorImageDataset", "fashion_mnist_dir", "iterate_batches",
           "load_data", "parse_spec"]
