"""The tnncompress model zoo: reference architectures for teachers and tests."""

from . import resnet_cifar, small_cnn  # noqa: F401  (registers the constructors)
from .registry import MODELS, ModelEntry, create_model, get_entry, list_models, register

__all__ = ["MODELS", "ModelEntry", "create_model", "get_entry", "list_models", "register"]
