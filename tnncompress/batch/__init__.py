"""The batch stage: many runs from recipe files, folders and sweeps (jobs.py), each run or reused when its
manifest vouches for it (runner.py), judged against its gates, and summarised for people and CI, truly at
every moment (summary.py)."""

from ..report.gates import GATE_EXIT_CODE
from .jobs import Job, collect
from .runner import Outcome, run_batch
from .summary import counts, summary_writer, write_summary

__all__ = ["GATE_EXIT_CODE", "Job", "Outcome", "collect", "counts", "run_batch", "summary_writer", "write_summary"]
