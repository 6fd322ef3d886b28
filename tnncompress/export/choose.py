"""Choosing each layer's deployment form by timing the candidates in the runtime that will run them.

Eager PyTorch and onnxruntime disagree about small factor chains: eager pays Python and dispatch per
operation, onnxruntime does not (and fuses what follows a Conv), so a decision made in one runtime can
throw away the other's speed-up. So the decision is made per runtime:

1. per layer, every candidate (dense, and each factor chain worth trying) is timed at the layer's input
   shape for each deployment batch size: in onnxruntime as a one-layer graph, in PyTorch as the module;
   candidates are timed round-robin and the medians kept (and kept on disk for the next run on this
   machine: form_cache.py); one 3x slower than the fastest in the first round is not run again. The
   layer takes the candidate with the lowest geometric mean over the batch sizes;
2. per model, the assignment this gives is timed against the two pure assignments (every layer dense,
   every layer its FLOP-optimal chain; a chain too large for memory at the largest batch is dense
   in every assignment, see `deploy.chain_fits`), whole, round-robin, at each batch size, and the one
   kept is the one whose worst slowdown against the fastest, over the batch sizes, is least
   (`pick_assignment`): layers interact (memory traffic, operator fusion), and this is the guarantee
   that the chosen model is never slower than the better pure form by more than the timing noise.
   The models are timed in two passes (the second in the reverse order) and each keeps the slower of
   its two medians: on a shared machine one quiet or busy moment could otherwise keep chains that are
   slower whenever it is not (once seen in eager PyTorch: 6.4 ms kept against 3.8 ms dense).

Every time measured is kept in the result, so the report can show what each choice was made from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..threads import session_threads
from ..timing import interleaved_medians
from . import form_cache
from .deploy import DENSE, FORMS, DeployChoice, candidates, choice, deployed, fixed_choices, tensorized_inputs
from .onnx_graph import INPUT, OUTPUT, session, to_onnx

RUNTIMES = ("onnxruntime", "pytorch")
DROP_ABOVE = 3.0  # a layer's candidate 3x slower than its fastest in the first round is timed no more
ASSIGNMENTS = ("measured", "dense", "factors")  # the per-layer choice and the two pure forms


@dataclass
class FormDecision:
    """What a runtime's measured decision chose and from what."""

    runtime: str  # "onnxruntime" or "pytorch"
    batches: list[int]
    picked: str  # one of ASSIGNMENTS when measured, else the fixed form ("dense", "factors", "flops")
    layers: list[DeployChoice] = field(default_factory=list)
    models: dict[str, dict[str, float]] = field(default_factory=dict)  # assignment -> batch -> ms, whole model

    def why_no_speedup(self, hint: str = "") -> str | None:
        """One line, with the numbers, when no assignment beat every layer dense by 5% at some batch
        size: this model's factor chains are not faster than its dense layers in this runtime; `hint`
        (what the user may try) is appended."""
        dense = self.models.get("dense", {})
        slow = [b for b, ms in dense.items()
                if min(times.get(b, ms) for times in self.models.values()) > ms / 1.05]
        if not slow:
            return None
        times = "; ".join(f"batch {b}: dense {dense[b]:.2f} ms, all factors {self.models['factors'][b]:.2f} ms, "
                          f"each layer's fastest {self.models['measured'][b]:.2f} ms" for b in slow)
        return (f"no speed-up in {self.runtime} at batch {', '.join(slow)}: this model's factor chains are no "
                f"faster than its dense layers there ({times}){'; ' + hint if hint else ''}")

    def speedup_over(self, assignment: str) -> dict[str, float]:
        """Per batch size, how much faster the picked assignment was than `assignment` when timed."""
        mine, other = self.models.get(self.picked, {}), self.models.get(assignment, {})
        return {b: other[b] / mine[b] for b in mine if b in other}


def _onnx_runner(module: nn.Module, sample_shape: tuple):
    sess = session(to_onnx(module, sample_shape))
    return lambda x: sess.run([OUTPUT], {INPUT: x})


def _torch_runner(module: nn.Module, sample_shape: tuple):
    def run(x):
        with torch.inference_mode():
            return module(x)
    return run


def _runners(modules: dict[str, nn.Module], sample_shape: tuple, runtime: str) -> dict:
    make = _onnx_runner if runtime == "onnxruntime" else _torch_runner
    return {name: make(m, sample_shape) for name, m in modules.items()}


def _time(runners: dict, sample_shape: tuple, batches: list[int], runtime: str, min_time: float,
          seed: int = 0, warm_up: bool = True, drop_above: float | None = None) -> dict[str, dict[str, float]]:
    """candidate -> batch -> median ms, timed round-robin per batch size (`warm_up`: run each once first;
    `drop_above`: see `interleaved_medians`)."""
    out: dict[str, dict[str, float]] = {name: {} for name in runners}
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        x = torch.randn(batch, *sample_shape, generator=generator)
        feed = x.numpy().astype(np.float32) if runtime == "onnxruntime" else x
        times = interleaved_medians({name: (lambda run=run, feed=feed: run(feed)) for name, run in runners.items()},
                                    min_time=min_time, max_rounds=15, min_rounds=3, warm_up=warm_up,
                                    drop_above=drop_above)
        for name, seconds in times.items():
            out[name][str(batch)] = 1e3 * seconds
    return out


def _geomean(times: dict[str, float]) -> float:
    return math.exp(sum(math.log(max(t, 1e-9)) for t in times.values()) / max(len(times), 1))


def measured_choices(model: nn.Module, inputs: dict[str, tuple], batches: list[int], runtime: str,
                     min_time: float = 0.05) -> list[DeployChoice]:
    """Step 1: per layer, the candidate with the lowest geometric-mean time over `batches`."""
    out = []
    for name, shape in inputs.items():
        layer = model.get_submodule(name)
        forms = candidates(layer, shape, max(batches))
        sample = tuple(shape[1:])
        # times from an earlier run on this machine (form_cache), else timed now and kept
        entry = form_cache.key(runtime, layer, sample, batches, {k: p for k, (_, p) in forms.items()},
                               torch.get_num_threads() if runtime == "pytorch" else session_threads())
        ms = {} if len(forms) == 1 else form_cache.lookup(entry, forms, batches)  # dense alone: nothing to time
        if ms is None:
            ms = _time(_runners({k: m for k, (m, _) in forms.items()}, sample, runtime), sample, batches, runtime,
                       min_time, drop_above=DROP_ABOVE)
            form_cache.store(entry, ms)
        best = min(ms, key=lambda k: (_geomean(ms[k]), k != DENSE)) if ms else DENSE  # ties: dense, the simpler
        record = choice(name, layer, shape, best, forms[best][1])
        record.ms = ms
        out.append(record)
    return out


def decide(model: nn.Module, inputs: dict[str, tuple], input_size: tuple, batches: list[int], runtime: str,
           min_time: float = 0.05, model_min_time: float = 0.3) -> tuple[FormDecision, nn.Module]:
    """Both steps for `runtime`; returns the decision and the model deployed as it says."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    measured = measured_choices(model, inputs, batches, runtime, min_time)
    options = assignments(model, inputs, measured, batches)
    distinct = distinct_assignments(options)
    models = {name: deployed(model, inputs, cs) for name, cs in distinct.items()}
    ms = time_models(_runners(models, tuple(input_size), runtime), tuple(input_size), batches, runtime,
                     model_min_time)
    picked = pick_assignment(ms)
    ms = {name: ms[distinct_key(options, name, distinct)] for name in options}
    layers = [_with_times(c, m) for c, m in zip(options[picked], measured, strict=True)]
    return FormDecision(runtime, list(batches), picked, layers, ms), models[picked]


def assignments(model: nn.Module, inputs: dict[str, tuple], first: list[DeployChoice], batches,
                first_name: str = "measured") -> dict[str, list[DeployChoice]]:
    """The whole-model assignments worth timing: `first` (each layer's measured choice), every layer
    dense, and every layer its FLOP-optimal chain."""
    return {first_name: first,
            "dense": [choice(c.name, model.get_submodule(c.name), inputs[c.name], DENSE) for c in first],
            "factors": fixed_choices(model, inputs, "factors", max(batches))}


def _key(choices: list[DeployChoice]) -> tuple:
    return tuple(c.candidate for c in choices)


def distinct_assignments(options: dict[str, list[DeployChoice]]) -> dict[str, list[DeployChoice]]:
    """The assignments that differ from every one before them (only those need building and timing)."""
    out: dict[str, list[DeployChoice]] = {}
    for name, cs in options.items():
        if _key(cs) not in [_key(c) for c in out.values()]:
            out[name] = cs
    return out


def distinct_key(options: dict, name: str, distinct: dict) -> str:
    """The distinct assignment that `name` is the same as (itself, or an earlier one)."""
    return next(k for k in distinct if _key(distinct[k]) == _key(options[name]))


def time_models(runners: dict, input_size: tuple, batches, runtime: str, min_time: float) -> dict:
    """assignment -> batch -> ms of whole models, timed round-robin in two passes (the second in reverse
    order), each keeping the slower of its two medians (see the module docstring). The second pass does not
    warm up again: the first left every model warm at every batch size (a whole ResNet-50 at batch 32 is
    over a second a call)."""
    passes = [_time(dict(order), tuple(input_size), list(batches), runtime, min_time, seed, warm_up=seed == 0)
              for seed, order in enumerate((list(runners.items()), list(runners.items())[::-1]))]
    return {name: {b: max(p[name][b] for p in passes) for b in passes[0][name]} for name in runners}


def time_whole_models(models: dict[str, nn.Module], input_size: tuple, batches, runtime: str,
                      min_time: float = 0.3) -> dict[str, dict[str, float]]:
    """name -> batch -> ms of whole models in `runtime`, timed against each other as `time_models` does."""
    return time_models(_runners(models, tuple(input_size), runtime), tuple(input_size), batches, runtime, min_time)


def speedup_hint(decision: FormDecision, rank_multiple: int = 1, deploy_target: str = "size") -> str:
    """What may give a model its speed-up in onnxruntime on a CPU, for a run that found none: fewer
    FLOPs, when its chains need at least the dense layers' (reshaped formats at a high rate); else ranks
    that fill the convolutions' vector block (8 or 16 channels), when they were not rounded or measured
    for speed (ResNet-50 at 25% of the FLOPs: 1.5x -> 2.8x with multiples of 16)."""
    dense = sum(c.flops_dense for c in decision.layers)
    chains = sum(c.flops_factors for c in decision.layers)
    if dense and chains >= dense:
        return (f"the factor chains need {chains / dense:.2f}x the FLOPs of the layers they replace: a lower rate, "
                f"--rate-by flops or another format would give them fewer")
    if rank_multiple == 1 and deploy_target == "size":
        return ("ranks that fill the CPU's vector block often help: try --deploy-target onnxruntime-cpu (rounds "
                "them where that measures faster) or --rank-multiple 8 or 16 (every layer)")
    return ""


TIE = 0.02  # worst slowdowns this close are a tie, broken by the geometric mean over the batch sizes


def pick_assignment(ms: dict[str, dict[str, float]]) -> str:
    """The assignment (of `ms`: assignment -> batch -> ms) whose largest slowdown against the fastest
    assignment at the same batch size is least. A geometric mean alone would trade a large loss at one
    batch size for a small gain at another; the deployment must hold at each."""
    batches = next(iter(ms.values())).keys()
    best = {b: min(times[b] for times in ms.values()) for b in batches}
    worst = {k: max(times[b] / best[b] for b in batches) for k, times in ms.items()}
    least = min(worst.values())
    return min((k for k in ms if worst[k] <= least * (1 + TIE)), key=lambda k: _geomean(ms[k]))


def _with_times(picked: DeployChoice, measured: DeployChoice) -> DeployChoice:
    picked.ms = measured.ms
    return picked


def deployable(model: nn.Module, input_size: tuple, batches=(1,), form: str = "auto", runtime: str = "onnxruntime",
               **timing) -> tuple[nn.Module, FormDecision]:
    """A copy of `model` in eval mode with each tensorial layer in its deployment form for `runtime`:
    measured there ("auto"), or fixed ("dense", "factors", "flops"); and the decision, with its times."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    inputs = tensorized_inputs(model, input_size)
    if form == "auto" and inputs:  # nothing to decide (and time) without a tensorial layer
        decision, out = decide(model, inputs, input_size, list(batches), runtime, **timing)
        return out, decision
    layers = fixed_choices(model, inputs, "dense" if form == "auto" else form, max(batches))
    return deployed(model, inputs, layers), FormDecision(runtime, list(batches), form, layers)
