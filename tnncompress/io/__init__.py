"""The load stage: reading checkpoints safely and resolving their architecture."""

from .arch import ArchSpec, build_model, detect_arch, parse_arch, resolve_arch
from .checkpoint import Checkpoint, read_checkpoint, save_state_dict
from .load import LoadedModel, load_model, parse_input_size

__all__ = ["ArchSpec", "Checkpoint", "LoadedModel", "build_model", "detect_arch", "load_model", "parse_arch",
           "parse_input_size", "read_checkpoint", "resolve_arch", "save_state_dict"]
