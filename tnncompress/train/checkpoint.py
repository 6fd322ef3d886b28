"""The states training keeps so an interrupted run can resume: written atomically by rank 0, with the
conv_einsum plans the run chose (a resumed run computes the same sums, bit for bit), and read back as
weights only, never as code; a file that is not one is refused in one line."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from ..einsum import chosen_plans, pin_plans
from ..errors import CheckpointError, opt
from .distributed import Context
from .hooks import checkpoint_saved


def save_checkpoint(path: Path | None, payload: dict, ctx: Context) -> dict:
    """Write `payload` (plus the plans chosen so far) to `path` on rank 0 (None: keep it in memory
    only); once every process is there, tell the observers of hooks.py. Returns what was written."""
    payload = {**payload, "plans": chosen_plans()}
    if path is not None and ctx.main:
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        torch.save(payload, tmp)
        os.replace(tmp, path)
    ctx.barrier()
    checkpoint_saved(payload)
    return payload


def read_checkpoint(path: Path, device: str, what: str, version: int, holds: str) -> dict:
    """A kept `what` checkpoint ("distillation", "BQN"): its payload, with the interrupted run's plans
    pinned. Refused unless it is a dict of this `version` holding `holds`."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable {what} checkpoint ({first[:160]}); pass {opt('force')} to "
                              "start the run over") from None
    if not isinstance(saved, dict) or saved.get("version") != version or holds not in saved:
        raise CheckpointError(f"{path}: not a tnncompress {what} checkpoint (version {version}); pass "
                              f"{opt('force')} to start the run over")
    pin_plans(saved.get("plans", {}))
    return saved
