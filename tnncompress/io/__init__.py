"""The load stage: reading checkpoints and the small text inputs as untrusted files, and resolving a
checkpoint's architecture."""

from .arch import (
    ArchSpec,
    arch_from_file,
    build_model,
    check_arch_kwargs,
    check_fits,
    detect_arch,
    load_into,
    parse_arch,
    resolve_arch,
)
from .checkpoint import Checkpoint, nonfinite_tensors, read_checkpoint, save_state_dict
from .config import ModelConfig
from .files import check_file, inside, parse_yaml, read_json, read_text, read_yaml, write_atomically, write_text
from .load import LoadedModel, load_model, parse_input_size

__all__ = ["ArchSpec", "Checkpoint", "LoadedModel", "ModelConfig", "arch_from_file",
           "build_model", "check_arch_kwargs", "check_file", "check_fits", "detect_arch", "inside", "load_into",
           "load_model", "nonfinite_tensors", "parse_arch", "parse_input_size", "parse_yaml", "read_checkpoint",
           "read_json", "read_text", "read_yaml", "resolve_arch", "save_state_dict", "write_atomically",
           "write_text"]
