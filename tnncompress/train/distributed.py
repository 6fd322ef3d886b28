"""One code path for one process and for torchrun: the process group, this process's rank, and its
share of every batch.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with more than one process the group is initialised
with NCCL on GPUs and gloo on CPUs. Every process draws the same global batch and takes its own
contiguous slice, so the averaged gradient is the single-process gradient of the whole batch (up to
the order of floating-point reductions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where and how a stage that learns runs: this process in its group, its device, and the run's
    seed, data-loader workers, where checkpoints are kept (None: nowhere) and whether to resume from them,
    and the memory activation caches may use."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    seed: int = 0
    workers: int = 0
    checkpoints: Path | None = None
    resume: bool = False
    cache_memory: int = 1 << 30

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch (sizes differ by at most one)."""
        return batch.tensor_split(self.world)[self.rank] if self.distributed else batch

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Make every process hold rank 0's parameters and buffers."""
        if self.distributed:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)

    def average(self, value: float) -> float:
        """The mean of `value` over the processes (a loss of each one's share of the batch: the loss of
        the whole batch when the shares are equal)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64,
                         device=self.device if self.device.startswith("cuda") else "cpu")
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def all_agree(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any (e.g. "the loss exploded")."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.device.startswith("cuda") else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> Context:
    """The context of this process; under torchrun, joins the process group (once)."""
    if not launched_by_torchrun():
        return Context(0, 1, device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Context(rank, world, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
