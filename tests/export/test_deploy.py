"""The deployment form and its ONNX graph: every form computes what the compressed model computes."""

from __future__ import annotations

import copy
import math

import onnx
import pytest
import torch
from torch import nn

from tnncompress.errors import ExportError
from tnncompress.export import deployable, operator_counts, tensorized_inputs, to_onnx, verify
from tnncompress.export.choose import pick_assignment
from tnncompress.export.deploy import candidates
from tnncompress.formats import TensorizedLayer, get_format, list_formats, tensorize
from tnncompress.formats.base import KernelShape


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.shortcut = nn.Conv2d(8, 12, 1, stride=2, bias=False)
        self.fc = nn.Linear(12 * 5 * 5, 6)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x) + self.shortcut(x)).flatten(1))


def _compressed(fmt: str) -> nn.Module:
    torch.manual_seed(0)
    net = Net().eval()
    f = get_format(fmt)
    for name in ("conv", "shortcut", "fc"):
        layer = net.get_submodule(name)
        w = layer.weight
        shape = KernelShape(w.shape[0], w.shape[1], *(w.shape[2:] if w.ndim == 4 else (1, 1)))
        tz = tensorize(shape.t, shape.in_channels) if f.reshaped else None
        ranks = f.ranks_for_budget(shape, tz, w.numel() // 3)
        net.set_submodule(name, TensorizedLayer.from_layer(layer, fmt, ranks, tz))
    return net


QUICK = dict(min_time=0.01, model_min_time=0.02)  # timings here are for the decision's logic, not its quality


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list_formats())
@pytest.mark.parametrize("form", ["dense", "factors", "flops", "auto-onnxruntime", "auto-pytorch"])
def test_every_form_computes_the_same_function(fmt, form):
    model = _compressed(fmt)
    form, _, runtime = form.partition("-")
    deployed, decision = deployable(model, (8, 9, 9), [1, 2], form=form, runtime=runtime or "onnxruntime",
                                    **(QUICK if form == "auto" else {}))
    assert [c.name for c in decision.layers] == ["conv", "shortcut", "fc"]
    if form in ("dense", "factors"):
        assert all(c.form == form for c in decision.layers)
    if form == "auto":
        # every candidate of every layer timed at both batch sizes, and the three whole-model assignments
        assert all(c.ms["dense"].keys() == {"1", "2"} and "optimal" in c.ms for c in decision.layers)
        assert decision.models.keys() == {"measured", "dense", "factors"}
        assert decision.picked == pick_assignment(decision.models)
    x = torch.randn(5, 8, 9, 9)  # another batch size than the ones the forms were chosen for
    with torch.no_grad():
        want = model(x)
        got = deployed(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    # the original is untouched: its factors are still trainable parameters
    assert all(isinstance(model.get_submodule(n), TensorizedLayer) and len(model.get_submodule(n).factors)
               for n in ("conv", "shortcut", "fc"))


def test_the_whole_model_assignment_is_least_slower_at_its_worst_batch_size():
    ms = {"measured": {"1": 1.5, "32": 7.0}, "dense": {"1": 1.0, "32": 10.0}, "factors": {"1": 2.0, "32": 6.0}}
    # the geometric mean keeps "dense", 1.67x slower than "factors" at batch 32; "measured" is at worst
    # 1.5x slower than the fastest (at batch 1), "factors" 2x
    assert min(ms, key=lambda k: math.prod(ms[k].values())) == "dense"
    assert pick_assignment(ms) == "measured"
    ms["measured"]["1"] = 1.8  # now 1.8x at worst: dense's 1.67x is less
    assert pick_assignment(ms) == "dense"
    # worst slowdowns within 2% of each other are a tie, broken by the geometric mean
    ms = {"measured": {"1": 1.01, "32": 9.0}, "dense": {"1": 1.0, "32": 10.0}, "factors": {"1": 1.5, "32": 9.0}}
    assert pick_assignment(ms) == "measured"
    assert pick_assignment({"dense": {"1": 3.0}}) == "dense"


@pytest.mark.parametrize("fmt", ["cp", "tk", "mcp"])
def test_every_candidate_chain_computes_the_dense_layer(fmt):
    """Each factor chain the decision may pick (each plan) is the dense layer, to float tolerance."""
    model = _compressed(fmt)
    for name, shape in tensorized_inputs(model, (8, 9, 9)).items():
        layer = model.get_submodule(name)
        forms = candidates(layer, shape)
        assert "dense" in forms and "optimal" in forms
        x = torch.randn(3, *shape[1:], dtype=torch.float32)
        with torch.no_grad():
            want = layer.eval()(x)
            for candidate, (module, path) in forms.items():
                assert (path is None) == (candidate == "dense")
                torch.testing.assert_close(module(x), want, rtol=1e-4, atol=1e-5)


def test_a_chain_beyond_the_memory_limit_at_the_largest_batch_deploys_dense(monkeypatch):
    """The limit bounds the largest intermediate, in float32 bytes, at the largest deployment batch:
    set just above one layer's FLOP-optimal chain at batch 2, that chain is kept at batch 2 and left
    out at batch 3, in the measured, fixed and all-factors assignments alike."""
    from tnncompress.einsum import paths
    from tnncompress.export.deploy import chain_paths, fixed_choices

    model = _compressed("cp")
    inputs = tensorized_inputs(model, (8, 9, 9))
    name, shape = next(iter(inputs.items()))
    layer = model.get_submodule(name)
    expr = layer.plan_for(shape)
    per_sample = max(paths.path_cost(expr.network, p)[1] for p in chain_paths(layer, shape).values())
    monkeypatch.setenv("TNNCOMPRESS_MAX_CHAIN_BYTES", str(4 * per_sample * 2))
    assert "optimal" in chain_paths(layer, shape, batch=2)
    assert not chain_paths(layer, shape, batch=3)  # none fits: only the dense form is a candidate
    assert list(candidates(layer, shape, 3)) == ["dense"]
    assert [c.form for c in fixed_choices(model, inputs, "factors", 3) if c.name == name] == ["dense"]
    assert [c.form for c in fixed_choices(model, inputs, "factors", 2) if c.name == name] == ["factors"]
    _, decision = deployable(model, (8, 9, 9), (1, 3), "auto", runtime="pytorch", min_time=0.001,
                             model_min_time=0.001)
    assert next(c.form for c in decision.layers if c.name == name) == "dense"


def _layer_net(conv: nn.Module) -> nn.Module:
    return nn.Sequential(conv).eval()


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "pytorch"])
def test_the_measured_decision_picks_the_faster_form(runtime):
    """Two layers built to favour each form by a wide margin: a rank-4 CP of a 128-channel 3x3
    convolution (the chain needs 3% of the dense FLOPs) and a rank-256 CP of a 32-channel one (8x the
    channels in every intermediate of its chain, and about as many FLOPs as the dense layer). Each must
    get its form, in either runtime."""
    torch.manual_seed(0)
    cheap = TensorizedLayer.from_layer(nn.Conv2d(128, 128, 3, padding=1, bias=False), "cp", {"r": 4})
    dear = TensorizedLayer.from_layer(nn.Conv2d(32, 32, 3, padding=1, bias=False), "cp", {"r": 256})
    for layer, size, want in ((cheap, (128, 16, 16), "factors"), (dear, (32, 16, 16), "dense")):
        model = _layer_net(layer)
        _, decision = deployable(model, size, [8], form="auto", runtime=runtime, min_time=0.05, model_min_time=0.1)
        (chosen,) = decision.layers
        assert chosen.form == want, chosen.ms
        best_chain = min(v["8"] for k, v in chosen.ms.items() if k != "dense")
        faster, slower = sorted([chosen.ms["dense"]["8"], best_chain])
        assert slower > 1.3 * faster  # the margin the construction promises


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["cp", "mtt", "tr"])
def test_onnx_of_the_factor_chain_is_plain_and_checked(fmt):
    model = _compressed(fmt)
    deployed, _ = deployable(model, (8, 9, 9), form="factors")
    graph = to_onnx(deployed, (8, 9, 9))
    ops = operator_counts(graph)
    assert ops["Conv"] >= 3 and "Einsum" not in ops  # weight-only steps folded into initialisers
    if fmt == "cp":  # no Reshape to the same shape between the chain's convolutions (it blocks fusion)
        nodes = onnx.load_from_string(graph).graph.node
        made_by = {out: n.op_type for n in nodes for out in n.output}
        conv_after = [made_by.get(n.input[0]) for n in nodes if n.op_type == "Conv"]
        reshape_after = {n.output[0]: made_by.get(n.input[0]) for n in nodes if n.op_type == "Reshape"}
        conv_inputs = [made_by.get(n.input[0]) for n in nodes if n.op_type == "Conv" and n.input[0] in reshape_after
                       and reshape_after[n.input[0]] == "Conv"]
        assert conv_after.count("Conv") >= 6 and not conv_inputs
    result = verify(graph, model, (8, 9, 9), batches=(1, 4))
    assert result.matches and result.max_abs_error < 1e-4


def test_a_graph_that_disagrees_fails_verification():
    model = _compressed("cp")
    graph = to_onnx(deployable(model, (8, 9, 9), form="dense")[0], (8, 9, 9))
    with torch.no_grad():
        model.fc.bias += 1.0  # the PyTorch model changes after the export
    with pytest.raises(ExportError, match="onnxruntime differs from PyTorch"):
        verify(graph, model, (8, 9, 9))


def test_quantised_activations_may_differ_on_a_few_inputs_and_no_more():
    """A rounding threshold between the runtimes' float32 results moves a quantised activation by a level:
    the check of such a graph allows a 2% share of the inputs to differ. Here the PyTorch model's bias is
    moved by a little after the export, so the inputs near a threshold differ, counted exactly."""
    from tnncompress.bayes.activations import QuantizedActivation
    from tnncompress.export.onnx_graph import DISCONTINUOUS_BATCHES

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1), QuantizedActivation(2)).eval()
    graph = to_onnx(model, (1, 2, 2))
    exported = copy.deepcopy(model)
    for shift, passes in ((1e-2, True), (0.3, False)):
        with torch.no_grad():
            model[1].bias.copy_(exported[1].bias + shift)
        g = torch.Generator().manual_seed(0)  # the inputs verify() draws
        xs = [torch.randn(b, 1, 2, 2, generator=g) for b in DISCONTINUOUS_BATCHES]
        with torch.no_grad():
            moved = sum(int((model(x) != exported(x)).sum()) for x in xs)
        if passes:
            assert 0 < moved <= 0.02 * sum(DISCONTINUOUS_BATCHES)
            result = verify(graph, model, (1, 2, 2), discontinuous=True)
            assert result.matches and result.differing == moved and result.max_abs_error < 1e-5
        else:
            with pytest.raises(ExportError, match=f"on {moved} of {sum(DISCONTINUOUS_BATCHES)} random inputs"):
                verify(graph, model, (1, 2, 2), discontinuous=True)


def test_a_model_the_exporter_cannot_trace_is_a_clear_error():
    class Adaptive(nn.Module):
        def forward(self, x):
            return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    with pytest.raises(ExportError, match="cannot be exported to ONNX .*onnx=False skips the export"):
        to_onnx(Adaptive(), (3, 7, 7))


def test_the_hint_for_a_model_without_a_speed_up():
    from tnncompress.export import FormDecision
    from tnncompress.export.choose import speedup_hint
    from tnncompress.export.deploy import DeployChoice

    layers = [DeployChoice("a", "dense", None, 100, 80), DeployChoice("b", "dense", None, 100, 140)]
    decision = FormDecision("onnxruntime", [1], "measured", layers)
    assert speedup_hint(decision) == ("the factor chains need 1.10x the FLOPs of the layers they replace: a lower "
                                      "rate, --rate-by flops or another format would give them fewer")
    layers[1].flops_factors = 110  # 0.95x: fewer FLOPs, so the chains themselves are slow
    assert "--rank-multiple 8 or 16" in speedup_hint(decision)
    assert "--deploy-target onnxruntime-cpu" in speedup_hint(decision)
    assert speedup_hint(decision, rank_multiple=8) == ""
    assert speedup_hint(decision, deploy_target="onnxruntime-cpu") == ""


def test_a_model_without_a_speed_up_says_why_with_the_numbers():
    from tnncompress.export import FormDecision

    models = {"measured": {"1": 1.0, "32": 9.0}, "dense": {"1": 1.02, "32": 10.0}, "factors": {"1": 1.3, "32": 9.5}}
    line = FormDecision("onnxruntime", [1, 32], "measured", [], models).why_no_speedup()
    assert line == ("no speed-up in onnxruntime at batch 1: this model's factor chains are no faster than its dense "
                    "layers there (batch 1: dense 1.02 ms, all factors 1.30 ms, each layer's fastest 1.00 ms)")
    assert FormDecision("onnxruntime", [1, 32], "measured", [], models).why_no_speedup("try this") == \
        line + "; try this"
    models["measured"]["1"] = 0.9
    assert FormDecision("onnxruntime", [1, 32], "measured", [], models).why_no_speedup() is None
    assert FormDecision("onnxruntime", [1, 32], "measured", [], models).why_no_speedup("try this") is None


def test_a_chain_with_intermediates_far_larger_than_the_flop_optimal_ones_is_not_a_candidate(monkeypatch):
    """ResNet-50's layer1 3x3 convolution as mcp at rank 32, at 56x56: left to right holds an intermediate
    32x the FLOP-optimal chain's (it ran 20x slower than the dense layer); it is not timed, unless the
    factor allows it."""
    from tnncompress.einsum.autotune import candidate_paths
    from tnncompress.einsum.paths import path_cost
    from tnncompress.export import deploy
    from tnncompress.export.deploy import chain_paths

    layer = TensorizedLayer.from_layer(nn.Conv2d(64, 64, 3, padding=1, bias=False), "mcp", {"r": 32})
    shape = (1, 64, 56, 56)
    expr = layer.plan_for(shape)
    every = candidate_paths(expr, backward=False)
    largest = {k: path_cost(expr.network, p)[1] for k, p in every.items()}
    assert largest["naive"] > deploy.MEMORY_FACTOR * largest["optimal"]
    assert "naive" not in chain_paths(layer, shape) and "optimal" in chain_paths(layer, shape)
    monkeypatch.setattr(deploy, "MEMORY_FACTOR", 1e6)
    assert "naive" in chain_paths(layer, shape)
