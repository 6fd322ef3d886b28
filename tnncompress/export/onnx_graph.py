"""ONNX export of a deployable model, and the check that gates it.

Plain operators only, opset 17, a dynamic batch axis. The graph is checked with `onnx.checker` and run
with onnxruntime against the PyTorch model on random inputs at two batch sizes (which also proves the
batch axis is dynamic); a mismatch beyond rtol/atol raises ExportError.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ExportError, opt
from ..threads import session_threads

OPSET = 17
RTOL, ATOL = 1e-3, 1e-4
INPUT, OUTPUT = "input", "logits"


@dataclass
class OnnxCheck:
    """What the check of a graph found."""

    checker: str  # onnx.checker's verdict
    batches: list[int]  # compared at these batch sizes
    max_abs_error: float  # the largest |onnxruntime - PyTorch| seen
    rtol: float
    atol: float
    matches: bool
    # with quantised activations: samples allowed to differ (a rounding threshold between the two
    # runtimes' float32 results moves one activation by a level), and how many did; the error above is
    # over the other samples
    samples: int = 0
    differing: int = 0


def to_onnx(model: nn.Module, input_size: tuple[int, int, int], opset: int = OPSET, fold: bool = True) -> bytes:
    """Serialise `model` (in eval mode, on the CPU, float32) as a compact ONNX graph. `fold=False` keeps
    what initializers compute as nodes (the in-graph kernel rebuild of rebuild.py) instead of folding it."""
    model = model.eval().cpu().float()
    buffer = io.BytesIO()
    chatter = io.StringIO()  # on failure the exporter prints the whole graph; keep the terminal readable
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        # The TorchScript exporter is deprecated in favour of torch.export's, which needs onnxscript and
        # reshapes the graph; this one gives plain Conv/Gemm graphs and is what onnxruntime users expect.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (torch.zeros(1, *input_size),), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT], output_names=[OUTPUT], do_constant_folding=fold,
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
        except Exception as exc:  # the exporter raises many types; its first line says what is unsupported
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"the model cannot be exported to ONNX ({first[:300]}); "
                              f"{opt('no_onnx')} skips the export") from None
    return compact(buffer.getvalue())


def compact(graph: bytes) -> bytes:
    """The same graph with less around the weights: no doc strings, no node names, short value names, and each
    Constant node an initializer shared by every equal constant (an unfolded export holds hundreds of
    reshape shapes). Initializers keep their names (the parameters'); inputs and outputs theirs."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(graph)
    g = model.graph
    model.doc_string = g.doc_string = ""
    keep = {v.name for v in g.input} | {v.name for v in g.output} | {t.name for t in g.initializer}
    names: dict[str, str] = {}
    constants: dict[tuple, str] = {}
    nodes = []
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            key = (value.dtype.str, value.shape, value.tobytes())
            if key not in constants:
                constants[key] = f"c{len(constants)}"
                g.initializer.append(numpy_helper.from_array(value, constants[key]))
            names[node.output[0]] = constants[key]
            continue
        nodes.append(node)
    for node in nodes:
        for i, v in enumerate(node.input):
            if v and v not in keep:
                node.input[i] = names.setdefault(v, f"v{len(names)}")
        for i, v in enumerate(node.output):
            if v and v not in keep:
                node.output[i] = names.setdefault(v, f"v{len(names)}")
    nodes = _merge_reshapes(nodes, {v.name for v in g.output})
    for node in nodes:
        node.name, node.doc_string = "", ""
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    return model.SerializeToString()


def _merge_reshapes(nodes: list, outputs: set[str]) -> list:
    """Reshape(Reshape(x, a), b) -> Reshape(x, b) where the inner result is read by nothing else (a
    rebuild step's result reshaped back to its modes, then to the next step's matrix)."""
    producer = {out: node for node in nodes for out in node.output}
    readers: dict[str, int] = {}
    for node in nodes:
        for v in node.input:
            readers[v] = readers.get(v, 0) + 1
    dropped = set()
    for node in nodes:
        inner = producer.get(node.input[0]) if node.op_type == "Reshape" else None
        while (inner is not None and inner.op_type == "Reshape" and readers.get(inner.output[0]) == 1
               and inner.output[0] not in outputs):
            node.input[0] = inner.input[0]
            dropped.add(id(inner))
            inner = producer.get(node.input[0])
    return [node for node in nodes if id(node) not in dropped]


INT4_OPSET = 21  # the first opset whose Cast reads INT4 tensors


def to_int4(graph: bytes, names: set[str]) -> bytes:
    """The graph with the INT8 initializers `names` stored as INT4 (two values a byte, the first in the low
    nibble) where every value fits -8..7, at opset 21 (operators keep their meaning; 21 adds the type)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load_from_string(graph)
    changed = False
    for k, t in enumerate(model.graph.initializer):
        if t.name not in names or t.data_type != TensorProto.INT8:
            continue
        values = numpy_helper.to_array(t).astype(np.int16).ravel()
        if values.size == 0 or values.min() < -8 or values.max() > 7:
            continue
        nibbles = (values & 0xF).astype(np.uint8)
        if nibbles.size % 2:
            nibbles = np.append(nibbles, np.uint8(0))
        packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
        model.graph.initializer[k].CopyFrom(onnx.helper.make_tensor(t.name, TensorProto.INT4, list(t.dims), packed,
                                                                     raw=True))
        changed = True
    if changed:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, INT4_OPSET)
    return model.SerializeToString()


def folds(graph: bytes, initializers: set[str]) -> bool:
    """Whether onnxruntime's constant folding consumes `initializers` when it creates a session: none of
    them is read by a node of the graph it runs (saved from a session at the basic level, whose
    optimisations are the portable ones)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    if not initializers:
        return True
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = f"{tmp}/optimized.onnx"
        ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(f"{tmp}/optimized.onnx")
    read = {v for node in optimized.graph.node for v in node.input}
    return not (read & initializers)


def opset(graph: bytes) -> int:
    """The graph's default-domain opset (17, or 21 when it stores INT4 tensors)."""
    import onnx

    return max(o.version for o in onnx.load_from_string(graph).opset_import if o.domain in ("", "ai.onnx"))


def operator_counts(graph: bytes) -> dict[str, int]:
    import onnx

    model = onnx.load_from_string(graph)
    return dict(Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                        for n in model.graph.node))


def session(graph: bytes, spinning: bool = False):
    """An onnxruntime CPU session. Its worker threads do not spin-wait for the next run unless
    `spinning`: a spinning session's idle threads take the cores from whichever session runs next,
    which makes sessions timed in turns (as every comparison here is) look up to 2.5x slower than
    they are (measured: ResNet-32 at batch 32, 30.6 ms in turns with spinning, 11.8 ms alone)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = session_threads()  # the run's --threads (0: onnxruntime's default)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


DISCONTINUOUS_BATCHES = (1, 3, 96)
DIFFERING_SHARE = 0.02  # of the samples of a graph with quantised activations (measured: 1 in 2,000)


def verify(graph: bytes, model: nn.Module, input_size: tuple[int, int, int], batches=(1, 3), seed: int = 0,
           rtol: float = RTOL, atol: float = ATOL, discontinuous: bool = False) -> OnnxCheck:
    """Check the graph and compare onnxruntime with `model`; returns the worst errors seen. A
    `discontinuous` model (quantised activations) is compared on more samples, of which a few may
    differ beyond the tolerance."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(graph), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX graph is invalid: {str(exc).splitlines()[0]}") from None
    sess = session(graph)
    generator = torch.Generator().manual_seed(seed)
    model = model.eval().cpu()
    batches = DISCONTINUOUS_BATCHES if discontinuous else batches
    worst_abs, samples, differing = 0.0, 0, 0
    for batch in batches:
        x = torch.randn(batch, *input_size, generator=generator)
        with torch.no_grad():
            expected = model(x).float().numpy()
        got = sess.run([OUTPUT], {INPUT: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"onnxruntime returned shape {got.shape} for batch {batch}, "
                              f"PyTorch {expected.shape}")
        # NaN compares false with everything, so a max over differences would pass it as 0
        for name, values in (("PyTorch", expected), ("onnxruntime", got)):
            if not np.isfinite(values).all():
                raise ExportError(f"{name} outputs are not finite (NaN or infinity) on random inputs at batch "
                                  f"{batch}: the model cannot be checked, and would not be usable")
        diff = np.abs(got - expected).reshape(batch, -1)
        ok = (diff <= atol + rtol * np.abs(expected).reshape(batch, -1)).all(1)
        samples, differing = samples + batch, differing + int((~ok).sum())
        kept = diff[ok] if discontinuous else diff
        worst_abs = max(worst_abs, float(kept.max()) if kept.size else 0.0)
    allowed = int(DIFFERING_SHARE * samples) if discontinuous else 0
    result = OnnxCheck("passed", list(batches), worst_abs, rtol, atol, differing <= allowed, samples, differing)
    if not result.matches:
        raise ExportError(f"onnxruntime differs from PyTorch beyond atol {atol} + rtol {rtol} x |value| on "
                          f"{differing} of {samples} random inputs (allowed: {allowed}); max |error| "
                          f"{worst_abs:.3g} on the others")
    return result
