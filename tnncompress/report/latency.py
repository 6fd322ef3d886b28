"""Latency of the original and the compressed model, measured the same way side by side.

Per runtime (PyTorch on the CPU, onnxruntime on the CPU, PyTorch on the GPU when there is one) and
batch size, both models are timed round-robin (so drift in the machine's load hits both alike) and the
median is kept. Times are wall-clock seconds per batch on the machine that ran, with its thread count.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..einsum.autotune import interleaved_medians
from ..export.onnx_graph import INPUT, OUTPUT, session


def _entry(times: dict[str, float]) -> dict:
    return {"original_ms": 1e3 * times["original"], "compressed_ms": 1e3 * times["compressed"],
            "speedup": times["original"] / times["compressed"]}


@torch.inference_mode()
def _torch_times(original: nn.Module, compressed: nn.Module, x: torch.Tensor, min_time: float) -> dict:
    return interleaved_medians({"original": lambda: original(x), "compressed": lambda: compressed(x)},
                               min_time=min_time, max_rounds=20, min_rounds=3)


def measure_latency(original: nn.Module, compressed: nn.Module, original_graph: bytes | None,
                    compressed_graph: bytes | None, input_size: tuple[int, int, int], batches=(1, 32),
                    min_time: float = 0.5, seed: int = 0) -> dict:
    """Without graphs (no ONNX export), onnxruntime is left out."""
    generator = torch.Generator().manual_seed(seed)
    original, compressed = original.eval().cpu(), compressed.eval().cpu()
    result: dict = {"threads": torch.get_num_threads(), "unit": "milliseconds per batch (median)",
                    "pytorch_cpu": {}}
    sessions = None
    if original_graph is not None and compressed_graph is not None:
        sessions = {"original": session(original_graph), "compressed": session(compressed_graph)}
        result["onnxruntime_cpu"] = {}
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=generator)
        result["pytorch_cpu"][str(batch)] = _entry(_torch_times(original, compressed, x, min_time))
        if sessions is None:
            continue
        feed = {INPUT: x.numpy().astype(np.float32)}
        ort_times = interleaved_medians({name: (lambda s=s, feed=feed: s.run([OUTPUT], feed))
                                         for name, s in sessions.items()},
                                        min_time=min_time, max_rounds=20, min_rounds=3)
        result["onnxruntime_cpu"][str(batch)] = _entry(ort_times)
    if torch.cuda.is_available():
        result["pytorch_cuda"] = {"device": torch.cuda.get_device_name()}
        gpu_original, gpu_compressed = original.cuda(), compressed.cuda()
        for batch in batches:
            x = torch.randn(batch, *input_size, generator=generator).cuda()
            result["pytorch_cuda"][str(batch)] = _entry(_torch_times(gpu_original, gpu_compressed, x, min_time))
        original.cpu(), compressed.cpu()
    return result


def slower_than_original(latency: dict) -> list[str]:
    """One line per runtime and batch size where the compressed model is not faster."""
    lines = []
    names = {"pytorch_cpu": "PyTorch CPU", "onnxruntime_cpu": "onnxruntime CPU", "pytorch_cuda": "PyTorch GPU"}
    for key, label in names.items():
        for batch, entry in latency.get(key, {}).items():
            if isinstance(entry, dict) and entry.get("speedup", 2) < 1:
                lines.append(f"the compressed model is not faster on {label} at batch {batch}: "
                             f"{entry['compressed_ms']:.2f} ms vs {entry['original_ms']:.2f} ms")
    return lines
