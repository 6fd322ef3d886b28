"""The errors tnncompress raises on bad input, each mapped to a documented exit code.

The CLI turns any `TnncompressError` into a one-line message and its exit code; other exceptions are
bugs and exit 1 with a traceback only under `--debug`.
"""


class TnncompressError(Exception):
    exit_code = 1


class UsageError(TnncompressError):
    """Bad option values, missing files or directories: exit code 2."""

    exit_code = 2


class CheckpointError(TnncompressError):
    """A checkpoint that cannot be read or does not fit the architecture."""

    exit_code = 1


class UntrustedCheckpointError(CheckpointError):
    """A pickled module given without --trust-checkpoint."""

    exit_code = 2


class DataError(TnncompressError):
    """A dataset that is missing, malformed, or does not fit the model."""

    exit_code = 1


class ExportError(TnncompressError):
    """The ONNX export failed, or does not reproduce the model (onnx.checker, onnxruntime mismatch): exit 3."""

    exit_code = 3
