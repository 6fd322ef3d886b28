"""Latency of the original and the compressed model, measured the same way side by side.

Per runtime (PyTorch on the CPU, onnxruntime on the CPU, PyTorch on the GPU when there is one) and
batch size, both models are timed round-robin (so drift in the machine's load hits both alike) and the
median is kept. Times are wall-clock seconds per batch on the machine that ran, with its thread count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..export import INPUT, OUTPUT, session
from ..timing import interleaved_medians

RUNTIMES = {"pytorch_cpu": "PyTorch CPU", "onnxruntime_cpu": "onnxruntime CPU",
            "onnxruntime_int8": "onnxruntime CPU, model.int8.onnx against the original float graph",
            "pytorch_cuda": "PyTorch GPU"}


@dataclass
class LatencyEntry:
    original_ms: float
    compressed_ms: float
    speedup: float  # original / compressed


@dataclass
class Latency:
    threads: int
    unit: str = "milliseconds per batch (median)"
    runtimes: dict[str, dict[str, LatencyEntry]] = field(default_factory=dict)  # runtime -> batch -> entry
    cuda_device: str | None = None

    def rows(self) -> list[tuple[str, str, LatencyEntry]]:
        """(runtime, batch, entry) in a fixed order."""
        return [(runtime, batch, entry) for runtime in RUNTIMES
                for batch, entry in self.runtimes.get(runtime, {}).items()]

    def slower_than_original(self) -> list[str]:
        """One line per runtime and batch size where the compressed model is not faster."""
        return [f"the compressed model is not faster on {RUNTIMES[runtime]} at batch {batch}: "
                f"{e.compressed_ms:.2f} ms vs {e.original_ms:.2f} ms"
                for runtime, batch, e in self.rows() if e.speedup < 1]


def _entry(times: dict[str, float]) -> LatencyEntry:
    return LatencyEntry(1e3 * times["original"], 1e3 * times["compressed"], times["original"] / times["compressed"])


@torch.inference_mode()
def _torch_times(original: nn.Module, compressed: nn.Module, x: torch.Tensor, min_time: float) -> dict:
    return interleaved_medians({"original": lambda: original(x), "compressed": lambda: compressed(x)},
                               min_time=min_time, max_rounds=20, min_rounds=3)


def measure_latency(original: nn.Module, compressed: nn.Module, original_graph: bytes | None,
                    compressed_graph: bytes | None, input_size: tuple[int, int, int], batches=(1, 32),
                    min_time: float = 0.5, seed: int = 0, int8_graph: bytes | None = None) -> Latency:
    """Without graphs (no ONNX export), onnxruntime is left out; with `int8_graph`, it is timed in the same
    rounds and reported against the original float graph (`onnxruntime_int8`)."""
    generator = torch.Generator().manual_seed(seed)
    original, compressed = original.eval().cpu(), compressed.eval().cpu()
    result = Latency(threads=torch.get_num_threads(), runtimes={"pytorch_cpu": {}})
    sessions = None
    if original_graph is not None and compressed_graph is not None:
        sessions = {"original": session(original_graph), "compressed": session(compressed_graph)}
        result.runtimes["onnxruntime_cpu"] = {}
        if int8_graph is not None:
            sessions["int8"] = session(int8_graph)
            result.runtimes["onnxruntime_int8"] = {}
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=generator)
        result.runtimes["pytorch_cpu"][str(batch)] = _entry(_torch_times(original, compressed, x, min_time))
        if sessions is None:
            continue
        feed = {INPUT: x.numpy().astype(np.float32)}
        ort_times = interleaved_medians({name: (lambda s=s, feed=feed: s.run([OUTPUT], feed))
                                         for name, s in sessions.items()},
                                        min_time=min_time, max_rounds=20, min_rounds=3)
        result.runtimes["onnxruntime_cpu"][str(batch)] = _entry(ort_times)
        if int8_graph is not None:
            result.runtimes["onnxruntime_int8"][str(batch)] = _entry({"original": ort_times["original"],
                                                                       "compressed": ort_times["int8"]})
    if torch.cuda.is_available():
        result.cuda_device = torch.cuda.get_device_name()
        result.runtimes["pytorch_cuda"] = {}
        gpu_original, gpu_compressed = original.cuda(), compressed.cuda()
        for batch in batches:
            x = torch.randn(batch, *input_size, generator=generator).cuda()
            result.runtimes["pytorch_cuda"][str(batch)] = _entry(_torch_times(gpu_original, gpu_compressed, x,
                                                                              min_time))
        original.cpu(), compressed.cpu()
    return result
