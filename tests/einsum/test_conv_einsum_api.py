"""conv_einsum's interface: parsing forms, errors that name the offending part, plan caching, printing,
checkpointing, and the layer expressions of the compression formats against their dense kernels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tnncompress import contract_expression, conv_einsum
from tnncompress.einsum import ExpressionError, parse
from tnncompress.einsum.contract import _cached

from .reference import reference


def test_parse_forms_are_equivalent():
    a = parse("b(s1)(s2)hw, r(t1)(s1), r(t2)(s2), rhw -> b(t1)(t2)hw | h,w")
    b = parse("b(s1)(s2)hw,r(t1)(s1),r(t2)(s2),rhw->b(t1)(t2)hw|hw")
    assert (a.inputs, a.output, a.conv) == (b.inputs, b.output, b.conv)
    assert a.inputs[0] == ("b", "s1", "s2", "h", "w") and a.conv == ("h", "w")
    assert str(a) == "b(s1)(s2)hw,r(t1)(s1),r(t2)(s2),rhw->b(t1)(t2)hw|hw"


@pytest.mark.parametrize("text, message", [
    ("bshw,tshw", "needs an explicit output"),
    ("bshw,tshw->bthz|hw", "output mode 'z' does not appear"),
    ("bshw,tshw->bt|hw", "convolution mode 'h' must appear in the output"),
    ("bshw,tshw->bthw|hx", "convolution mode 'x' does not appear"),
    ("bsshw,tshw->bthw|hw", "mode 's' repeated in operand 0"),
    ("bshw,tshw->bbthw|hw", "repeated in the output"),
    ("bs#hw,tshw->bthw|hw", "unexpected character '#' in operand 0"),
    ("bshw,tshw->bthw|hw|h", "more than one '|'"),
    ("abcdx,abcdx->abcdx|abcd", "at most 3 convolution modes"),
    ("->b", "has no operands"),
])
def test_malformed_expressions(text, message):
    with pytest.raises(ExpressionError, match=message):
        parse(text)


def test_operand_errors():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with pytest.raises(ExpressionError, match="mode 's' has size 3 in operand 0 but 5 in operand 1"):
        conv_einsum("bshw,tshw->bthw|hw", x, torch.randn(4, 5, 3, 3))
    with pytest.raises(ExpressionError, match="has 2 operands, got 3 tensors"):
        conv_einsum("bshw,tshw->bthw|hw", x, w, w)
    with pytest.raises(ExpressionError, match="operand 1 has 3 dimensions but its term 'tshw' has 4"):
        conv_einsum("bshw,tshw->bthw|hw", x, torch.randn(4, 3, 3))
    with pytest.raises(ExpressionError, match="stride .* gives 3 values for 2 convolution modes"):
        conv_einsum("bshw,tshw->bthw|hw", x, w, stride=(1, 2, 3))
    with pytest.raises(ExpressionError, match="'same' is not supported with a stride"):
        conv_einsum("bshw,tshw->bthw|hw", x, w, stride=2, padding="same")
    with pytest.raises(ExpressionError, match="shorter than the dilated effective filter"):
        conv_einsum("bshw,tshw->bthw|hw", x, w, dilation=4)
    with pytest.raises(ExpressionError, match="must appear in the input"):
        conv_einsum("bs,tsh->bth|h", torch.randn(2, 3), torch.randn(4, 3, 3))
    with pytest.raises(ExpressionError, match="apply only when the first operand is an input"):
        conv_einsum("rh,rh->rh|h", torch.randn(2, 3), torch.randn(2, 3), stride=2, weights_only=True)


def test_plan_is_cached_and_not_redone():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    _cached.cache_clear()
    conv_einsum("bshw,tshw->bthw|hw", x, w, padding=1)
    conv_einsum("bshw,tshw->bthw|hw", x, w, padding=1)
    conv_einsum("bshw,tshw->bthw|hw", x, w, padding=[1, 1])
    info = _cached.cache_info()
    assert (info.misses, info.hits) == (2, 1)  # a list padding is the tuple's key after normalisation
    conv_einsum("bshw,tshw->bthw|hw", torch.randn(5, 3, 8, 8), w, padding=1)  # new batch size: new plan
    assert _cached.cache_info().misses == 3


def test_expression_checks_shapes_and_prints_plan():
    x = torch.randn(2, 8, 10, 10)
    factors = [torch.randn(6, 8), torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 8)]
    expr = contract_expression("bshw,rs,rh,rw,rt->bthw|hw", x.shape, *(f.shape for f in factors), padding=1)
    y = expr(x, *factors)
    assert y.shape == expr.output_shape == (2, 8, 10, 10)
    text = expr.describe()
    for part in ("FLOPs (this plan)", "naive, left to right", "rebuild kernel", "largest intermediate", "step"):
        assert part in text
    assert len(expr.plan) == 4 and expr.flops == sum(s.flops for s in expr.plan)
    assert expr.flops <= expr.naive_flops and expr.flops <= expr.rebuild_flops
    with pytest.raises(ExpressionError, match="operand 0 has shape"):
        expr(torch.randn(3, 8, 10, 10), *factors)


def test_planner_picks_rebuild_for_high_rank_and_factorised_for_low_rank():
    """The order the search finds depends on the ranks, as section 3.4.2 argues."""
    shapes = lambda r: [(32, 64, 16, 16), (r, 64), (r, 3), (r, 3), (r, 64)]  # noqa: E731
    low = contract_expression("bshw,rs,rh,rw,rt->bthw|hw", *shapes(2), padding=1)
    high = contract_expression("bshw,rs,rh,rw,rt->bthw|hw", *shapes(400), padding=1)
    assert low.path[0][0] == 0 or low.path[0][1] == 0  # starts from the input: factorised order
    assert 0 in high.path[-1] and all(0 not in step for step in high.path[:-1])  # weights first, then one conv
    assert high.flops <= high.rebuild_flops and low.flops < low.rebuild_flops


def test_backward_cost_mode_plans_and_matches():
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    factors = [torch.randn(6, 8, requires_grad=True) for _ in range(2)]
    y = conv_einsum("bshw,rs,rt->bthw|hw", x, *factors)
    expr = contract_expression("bshw,rs,rt->bthw|hw", x.shape, *(f.shape for f in factors), backward=True)
    assert expr.backward
    assert torch.allclose(y, expr(x, *factors))


def test_checkpointing_gives_same_values_and_gradients():
    torch.manual_seed(0)
    ops = [torch.randn(3, 8, 12, 12), torch.randn(5, 2, 8), torch.randn(5, 3, 3), torch.randn(5, 2, 2)]
    text = "b(s)hw,r(t1)(s),rhw,r(t2)(t1)->b(t2)hw|hw"
    grads = []
    for ckpt in (False, True):
        leaves = [o.clone().requires_grad_() for o in ops]
        y = conv_einsum(text, *leaves, padding=1, checkpoint=ckpt)
        y.square().sum().backward()
        grads.append((y.detach(), [leaf.grad for leaf in leaves]))
    assert torch.allclose(grads[0][0], grads[1][0])
    for g0, g1 in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.allclose(g0, g1, rtol=1e-5, atol=1e-6)


# The layer expressions of the compression formats (dissertation Eq. 2.1-2.4), each checked against the
# dense kernel it represents: rebuilt independently with torch.einsum, then F.conv2d.
T1, T2, T3, S1, S2, S3, R, H = 2, 3, 2, 3, 2, 2, 4, 3
T, S = T1 * T2 * T3, S1 * S2 * S3
FORMATS = {
    "svd": ("bshw,rshw,tr->bthw|hw", [(R, S, H, H), (T, R)], "rshw,tr->tshw"),
    "cp": ("bshw,rs,rh,rw,rt->bthw|hw", [(R, S), (R, H), (R, H), (R, T)], "rs,rh,rw,rt->tshw"),
    "tk": ("bshw,sp,pqhw,qt->bthw|hw", [(S, R), (R, R + 1, H, H), (R + 1, T)], "sp,pqhw,qt->tshw"),
    "tt": ("bshw,sp,phq,qwu,ut->bthw|hw", [(S, R), (R, H, R), (R, H, R), (R, T)], "sp,phq,qwu,ut->tshw"),
    "tr": ("bshw,zsp,phq,qwu,utz->bthw|hw", [(2, S, R), (R, H, R), (R, H, R), (R, T, 2)],
           "zsp,phq,qwu,utz->tshw"),
    "mcp": ("b(s1)(s2)(s3)hw,r(t1)(s1),r(t2)(s2),r(t3)(s3),rhw->b(t1)(t2)(t3)hw|hw",
            [(R, T1, S1), (R, T2, S2), (R, T3, S3), (R, H, H)], "rad,rbe,rcf,rhw->abcdefhw"),
    "mtk": ("b(s1)(s2)(s3)hw,(s1)i,(s2)j,(s3)k,(t1)l,(t2)m,(t3)n,ijklmnhw->b(t1)(t2)(t3)hw|hw",
            [(S1, 2), (S2, 2), (S3, 2), (T1, 2), (T2, 2), (T3, 2), (2, 2, 2, 2, 2, 2, H, H)],
            "di,ej,fk,al,bm,cn,ijklmnhw->abcdefhw"),
    "mtt": ("b(s1)(s2)(s3)hw,(s1)(t1)p,p(s2)(t2)q,q(s3)(t3)u,uhw->b(t1)(t2)(t3)hw|hw",
            [(S1, T1, R), (R, S2, T2, R), (R, S3, T3, R), (R, H, H)], "dap,pebq,qfcu,uhw->abcdefhw"),
    "mtr": ("b(s1)(s2)(s3)hw,z(s1)(t1)p,p(s2)(t2)q,q(s3)(t3)u,uhwz->b(t1)(t2)(t3)hw|hw",
            [(2, S1, T1, R), (R, S2, T2, R), (R, S3, T3, R), (R, H, H, 2)], "zdap,pebq,qfcu,uhwz->abcdefhw"),
}


@pytest.mark.parametrize("name", list(FORMATS))
@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, "same", 2), (2, 0, 2)])
@pytest.mark.parametrize("optimize", ["optimal", "naive", "rebuild"])
def test_format_expressions_match_dense_kernel(name, stride, padding, dilation, optimize):
    text, factor_shapes, dense = FORMATS[name]
    g = torch.Generator().manual_seed(1)
    factors = [torch.randn(s, generator=g, dtype=torch.float64) for s in factor_shapes]
    kernel = torch.einsum(dense, *factors).reshape(T, S, H, H)
    x = torch.randn(2, S, 11, 11, generator=g, dtype=torch.float64)
    reshaped = x.reshape(2, S1, S2, S3, 11, 11) if name.startswith("m") else x
    y = conv_einsum(text, reshaped, *factors, stride=stride, padding=padding, dilation=dilation, optimize=optimize)
    want = F.conv2d(x, kernel, stride=stride, padding=padding, dilation=dilation)
    assert torch.allclose(y.reshape(want.shape), want, rtol=1e-10, atol=1e-10)
    # weights only: rebuilding the dense kernel from the factors with conv_einsum itself
    kernel_term = "(t1)(t2)(t3)(s1)(s2)(s3)hw" if name.startswith("m") else "tshw"
    weights = text.split("->")[0].split(",")[1:]
    rebuilt = conv_einsum(",".join(weights) + "->" + kernel_term + "|hw", *factors, weights_only=True)
    assert torch.allclose(rebuilt.reshape(kernel.shape), kernel, rtol=1e-12, atol=1e-12)


def _input_meets_all_at_once(net, path, group) -> bool:
    """Whether, following the SSA `path`, the input (operand 0) first meets any of `group` in a step
    that holds all of it."""
    nodes = {i: frozenset([i]) for i in range(net.n)}
    for k, (i, j) in enumerate(path):
        joined = nodes.pop(i) | nodes.pop(j)
        if 0 in joined and joined & group:
            return set(group) <= joined
        nodes[net.n + k] = joined
    return False


@pytest.mark.parametrize("name", list(FORMATS))
def test_the_partial_rebuild_joins_the_convolution_factors_first_and_computes_the_layer(name):
    from tnncompress.einsum import paths

    text, factor_shapes, dense = FORMATS[name]
    g = torch.Generator().manual_seed(2)
    factors = [torch.randn(s, generator=g, dtype=torch.float64) for s in factor_shapes]
    kernel = torch.einsum(dense, *factors).reshape(T, S, H, H)
    x = torch.randn(2, S, 11, 11, generator=g, dtype=torch.float64)
    reshaped = x.reshape(2, S1, S2, S3, 11, 11) if name.startswith("m") else x
    expr = contract_expression(text, reshaped.shape, *factor_shapes, padding=1)
    net = expr.network
    path = paths.partial_rebuild_path(net)
    group = frozenset().union(*(net.weights_with[c] for c in net.conv))
    if len(group) < 2:  # h and w in one factor: nothing to join first
        assert path is None
        return
    assert _input_meets_all_at_once(net, path, group)  # the convolution factors only all together
    y = conv_einsum(text, reshaped, *factors, padding=1, optimize=path)
    want = F.conv2d(x, kernel, padding=1)
    assert torch.allclose(y.reshape(want.shape), want, rtol=1e-10, atol=1e-10)


def test_the_partial_rebuild_takes_a_core_between_the_convolution_factors():
    """tensorly-torch's Tucker: kh and kw factored (ranks c, d) around the core. The core, bonded to
    them and holding no input or output mode, joins them into one q x p x 3 x 3 kernel before the input
    comes; the two channel factors stay 1x1 convolutions."""
    from tnncompress.einsum import paths

    text = "bshw,sp,qpcd,hc,wd,tq->bthw|hw"
    # rank 1 on kh and kw (as tensorly-torch picks at 10%): joining only kh and kw would let the input
    # meet the core first
    shapes = [(16, 8), (8, 8, 1, 1), (3, 1), (3, 1), (16, 8)]
    g = torch.Generator().manual_seed(3)
    factors = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    x = torch.randn(1, 16, 12, 12, generator=g, dtype=torch.float64)
    net = contract_expression(text, x.shape, *shapes, padding=1).network
    path = paths.partial_rebuild_path(net)
    assert _input_meets_all_at_once(net, path, {2, 3, 4})  # core, kh and kw joined before the input comes
    kernel = torch.einsum("sp,qpcd,hc,wd,tq->tshw", *factors)
    y = conv_einsum(text, x, *factors, padding=1, optimize=path)
    assert torch.allclose(y, F.conv2d(x, kernel, padding=1), rtol=1e-10, atol=1e-10)


def test_reference_agrees_with_torch_conv():
    """The loop reference itself, checked once against F.conv2d so that it can be trusted elsewhere."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64), torch.randn(4, 3, 3, 2, generator=g,
                                                                                 dtype=torch.float64)
    for kw in (dict(stride=2, padding=1, dilation=1), dict(stride=(1, 3), padding=(2, 0), dilation=(2, 1)),
               dict(stride=1, padding="same", dilation=2)):
        assert torch.allclose(reference("bshw,tshw->bthw|hw", x, w, **kw), F.conv2d(x, w, **kw))


MCP_EXPR = "b(s1)(s2)(s3)hw,r(t1)(s1),r(t2)(s2),r(t3)(s3),rhw->b(t1)(t2)(t3)hw|hw"


def _mcp_shapes(batch, size, rank=150):
    return [(batch, 8, 8, 8, size, size), (rank, 8, 8), (rank, 8, 8), (rank, 8, 8), (rank, 3, 3)]


def test_rebuild_order_contracts_the_weights_in_their_best_order():
    """Left to right, reshaped CP would keep the rank r to the end: an r x T x S intermediate (39M
    elements here); the rebuild candidate contracts r as soon as it can and holds only the kernel."""
    expr = contract_expression(MCP_EXPR, *_mcp_shapes(1, 7), padding=1, optimize="rebuild")
    assert all(0 not in step for step in expr.path[:-1]) and 0 in expr.path[-1]
    assert expr.largest_intermediate == 512 * 512 * 9


def test_measure_never_tries_plans_with_huge_intermediates(monkeypatch):
    from tnncompress.einsum import autotune

    monkeypatch.setattr(autotune, "MEMORY_FLOOR", 0)
    _cached.cache_clear()
    shapes = _mcp_shapes(2, 14)
    rebuild = contract_expression(MCP_EXPR, *shapes, padding=1, optimize="rebuild")
    for other in ("naive", "optimal", "greedy"):  # each holds a 30M-element intermediate, rebuild 2.4M
        big = contract_expression(MCP_EXPR, *shapes, padding=1, optimize=other)
        assert big.largest_intermediate > autotune.MEMORY_FACTOR * rebuild.largest_intermediate
    expr = contract_expression(MCP_EXPR, *shapes, padding=1, optimize="measure")
    assert expr.path == rebuild.path
    assert expr.timings == {}  # the only plan that fits was taken without running any of the others
