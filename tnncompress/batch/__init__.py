"""The batch stage: many runs from recipe files, folders and sweeps (jobs.py), each run or reused
(runner.py), judged against its gates, and summarised for people and CI (summary.py)."""

from ..report.gates import GATE_EXIT_CODE
from .jobs import Job, collect
from .runner import Outcome, run_batch
from .summary import counts, write_summary

__all__ = ["GATE_EXIT_CODE", "Job", "Outcome", "collect", "counts", "run_batch", "write_summary"]
