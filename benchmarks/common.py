"""Timing helpers shared by the benchmarks: warm-up, then the median of repeated runs."""

from __future__ import annotations

import json
import platform
import sys
from datetime import date
from pathlib import Path

import torch

from tnncompress.timing import median_seconds


def median_ms(fn, min_time: float = 0.3, max_reps: int = 15) -> float:
    """Median milliseconds of `fn` after warm-up (the same timer the "measure" strategy uses)."""
    return 1e3 * median_seconds(fn, min_time=min_time, max_reps=max_reps)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def today() -> str:
    return date.today().isoformat()


def load_rows(out: Path) -> dict:
    """The results document of a resumable benchmark (rows already measured are kept)."""
    return json.loads(out.read_text()) if out.exists() else {"rows": []}


def save_row(out: Path, doc: dict, row: dict) -> None:
    """Append a measured row and write the document at once, with the machine, date and command."""
    doc["rows"].append(row)
    doc.update(machine=machine(), date=today(), command=" ".join(sys.argv))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
