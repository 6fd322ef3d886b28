"""The data stage: dataset specs and their registry, loading without downloads, batching, augmentation."""

from . import sources  # noqa: F401  (registers the dataset kinds)
from .augment import augment_batch
from .config import DataConfig
from .datasets import ClassificationData, TensorImageDataset, iterate_batches, worker_errors
from .idx import read_idx, write_idx
from .sources import BUNDLED_FASHION_MNIST, SYSTEM_FASHION_MNIST, fashion_mnist_dir, read_image
from .specs import DATASETS, SPLITS, DatasetKind, DataSpec, list_datasets, load_data, parse_spec, register_dataset

__all__ = ["BUNDLED_FASHION_MNIST", "DATASETS", "SPLITS", "SYSTEM_FASHION_MNIST", "ClassificationData",
           "DataConfig", "DataSpec", "DatasetKind",
           "TensorImageDataset", "augment_batch", "fashion_mnist_dir", "iterate_batches", "list_datasets",
           "load_data", "parse_spec", "read_idx", "read_image", "register_dataset", "worker_errors", "write_idx"]
