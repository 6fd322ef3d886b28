"""Gates: what a run must achieve (an accuracy drop, a rate, a speed-up, an ONNX error), checked against
its report after everything is written, so that CI can fail a model that got worse without losing the
outputs that show why.

A recipe states them in its `gates` section; `run` and `batch` exit with GATE_EXIT_CODE when one is missed.
They change nothing a run computes (execution options): a completed run is re-judged, not rerun, when
only its gates change.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError, brief, opt
from ..options import Section, option
from .latency import RUNTIMES

GATE_EXIT_CODE = 4
RUNTIME_ALIASES = {"pytorch": "pytorch_cpu", "onnxruntime": "onnxruntime_cpu", "cuda": "pytorch_cuda"}


class GatesConfig(Section, name="gates", title="Gates (a run that misses one exits 4)", prefix="gate_"):
    max_accuracy_drop: float | None = option(
        None, "Most top-1 points the compressed model may lose against the original (needs --data).",
        minimum=0, execution=True, reuse=False)
    max_rate: float | None = option(None, "Largest parameter ratio compressed / original of the whole model.",
                                    above=0, execution=True, reuse=False)
    min_speedup: str | None = option(
        None, "Smallest latency speed-up, with its runtime and batch: 1.5@onnxruntime_cpu:1 (runtimes: "
              + ", ".join(RUNTIMES) + ").", execution=True, reuse=False)
    max_onnx_error: float | None = option(None, "Largest |onnxruntime - PyTorch| of the ONNX check.",
                                          minimum=0, execution=True, reuse=False)
    max_size_ratio: float | None = option(None, "Largest model.onnx bytes / the original model's ONNX bytes (float32, "
                                                "the same exporter).", above=0, execution=True, reuse=False)
    max_int8_accuracy_drop: float | None = option(
        None, "Most top-1 points model.int8.onnx (in onnxruntime) may lose against the original (needs --quantize "
              "int8).", minimum=0, execution=True, reuse=False)
    max_int8_size_ratio: float | None = option(None, "Largest model.int8.onnx bytes / the original model's ONNX bytes.",
                                               above=0, execution=True, reuse=False)

    def validate(self) -> None:
        if self.min_speedup is not None:
            parse_speedup(self.min_speedup)

    @property
    def enabled(self) -> bool:
        return any(getattr(self, o.name) is not None for o in self.OPTIONS)


def parse_speedup(text: str) -> tuple[float, str, str]:
    """"1.5@onnxruntime_cpu:1" -> (1.5, "onnxruntime_cpu", "1")."""
    value, at, where = str(text).partition("@")
    runtime, colon, batch = where.partition(":")
    runtime = RUNTIME_ALIASES.get(runtime.strip(), runtime.strip())
    try:
        limit = float(value)
    except ValueError:
        limit = None
    if not at or not colon or limit is None or limit <= 0 or runtime not in RUNTIMES or not batch.strip().isdigit():
        raise UsageError(f"{opt('gate_min_speedup')} {brief(text)}: expected SPEEDUP@RUNTIME:BATCH, e.g. "
                         f"1.5@onnxruntime_cpu:1 (runtimes: {', '.join(RUNTIMES)})")
    return limit, runtime, str(int(batch))


@dataclass
class GateResult:
    name: str  # the gate's key, e.g. "max_accuracy_drop"
    limit: float
    measured: float | None  # None: the run did not measure it
    passed: bool
    what: str  # the measured quantity in words, with its unit

    @property
    def relation(self) -> str:
        return "<=" if self.name.startswith("max") else ">="

    @property
    def measured_text(self) -> str:
        return "not measured" if self.measured is None else f"{self.measured:.4g}"

    def describe(self) -> str:
        if self.measured is None:
            return f"{self.name}: {self.what} was not measured"
        verdict = "passed" if self.passed else "MISSED"
        return f"{self.name}: {self.what} {self.measured_text} (limit {self.relation} {self.limit:g}) {verdict}"


def check_measurable(gates: GatesConfig, has_data: bool, latency: bool, batches: list[int], onnx: bool,
                     int8: bool = False) -> None:
    """Refuse, before any work, a gate the run would not measure."""
    if gates.max_accuracy_drop is not None and not has_data:
        raise UsageError(f"{opt('gate_max_accuracy_drop')} needs {opt('data')}: accuracy is measured on its test split")
    if gates.min_speedup is not None:
        _, runtime, batch = parse_speedup(gates.min_speedup)
        if not latency:
            raise UsageError(f"{opt('gate_min_speedup')} needs the latency measurement (drop {opt('no_latency')})")
        if int(batch) not in batches:
            raise UsageError(f"{opt('gate_min_speedup')} at batch {batch}: the run measures latency at batches "
                             f"{', '.join(map(str, batches))} ({opt('latency_batches')})")
    for name in ("max_onnx_error", "max_size_ratio"):
        if getattr(gates, name) is not None and not onnx:
            raise UsageError(f"{opt('gate_' + name)} needs the ONNX export (drop {opt('no_onnx')})")
    for name in ("max_int8_accuracy_drop", "max_int8_size_ratio"):
        if getattr(gates, name) is not None and not int8:
            raise UsageError(f"{opt('gate_' + name)} needs {opt('quantize')} int8")
    if gates.min_speedup is not None and parse_speedup(gates.min_speedup)[1] == "onnxruntime_int8" and not int8:
        raise UsageError(f"{opt('gate_min_speedup')} on onnxruntime_int8 needs {opt('quantize')} int8")


def judge(gates: GatesConfig, report) -> list[GateResult]:
    """Each stated gate against a RunReport; [] when none is stated."""
    results = []
    if gates.max_accuracy_drop is not None:
        acc = report.accuracy
        drop = (100 * (acc.original.top1 - acc.compressed.top1)
                if acc.original is not None and acc.compressed is not None else None)
        results.append(_result("max_accuracy_drop", gates.max_accuracy_drop, drop, "top-1 drop (points)"))
    if gates.max_rate is not None:
        results.append(_result("max_rate", gates.max_rate, report.params.rate, "parameter ratio"))
    if gates.min_speedup is not None:
        limit, runtime, batch = parse_speedup(gates.min_speedup)
        entry = report.latency.runtimes.get(runtime, {}).get(batch) if report.latency else None
        results.append(_result("min_speedup", limit, entry.speedup if entry else None,
                               f"speed-up on {RUNTIMES[runtime]} at batch {batch}"))
    if gates.max_onnx_error is not None:
        error = report.onnx.check.max_abs_error if report.onnx else None
        results.append(_result("max_onnx_error", gates.max_onnx_error, error, "max |onnxruntime - PyTorch|"))
    if gates.max_size_ratio is not None:
        ratio = report.sizes.ratio() if report.sizes else None
        results.append(_result("max_size_ratio", gates.max_size_ratio, ratio, "model.onnx bytes / the original's"))
    if gates.max_int8_accuracy_drop is not None:
        acc, int8 = report.accuracy, report.int8
        drop = (100 * (acc.original.top1 - int8.accuracy.top1)
                if acc.original is not None and int8 is not None and int8.accuracy is not None else None)
        results.append(_result("max_int8_accuracy_drop", gates.max_int8_accuracy_drop, drop,
                               "top-1 drop of model.int8.onnx (points)"))
    if gates.max_int8_size_ratio is not None:
        ratio = report.sizes.ratio("model.int8.onnx") if report.sizes else None
        results.append(_result("max_int8_size_ratio", gates.max_int8_size_ratio, ratio,
                               "model.int8.onnx bytes / the original's"))
    return results


def _result(name: str, limit: float, measured: float | None, what: str) -> GateResult:
    passed = measured is not None and (measured <= limit if name.startswith("max") else measured >= limit)
    return GateResult(name, limit, measured, passed, what)


def missed(results: list[GateResult] | None) -> list[GateResult]:
    return [g for g in results or [] if not g.passed]
