"""Choosing the order of pairwise steps.

A path is a list of (left, right) node ids in SSA form: operands are nodes 0..n-1 and the k-th step
creates node n+k. Strategies:
  optimal   opt_einsum's dynamic programming over subsets, with our convolution-aware step cost
  naive     left to right: ((x . w1) . w2) . w3 ...
  rebuild   all weights first, in their FLOP-optimal order, then one step with the input (the
            dense-kernel order; a left-to-right rebuild can be far worse, e.g. for reshaped CP)
  greedy    opt_einsum's greedy search (used above OPTIMAL_LIMIT operands)
or an explicit path (a sequence of pairs), as opt_einsum also accepts: how a plan measured at export
is replayed at load time without measuring again.
"""

from __future__ import annotations

from collections.abc import Callable

import opt_einsum
from opt_einsum.paths import DynamicProgramming, linear_to_ssa

from ..registry import Registry
from .network import Network

OPTIMAL_LIMIT = 12


def naive_path(n: int) -> list[tuple[int, int]]:
    path, last = [], 0
    for i in range(1, n):
        path.append((last, i))
        last = n + i - 1
    return path


def rebuild_path(net: Network, backward: bool = False) -> list[tuple[int, int]]:
    if net.signal is None or net.n < 3:
        return optimal_path(net, backward)
    return optimal_path(net, backward, signal_last=True)


def _leaves(tree) -> frozenset[int]:
    """Original operand ids in one of opt_einsum's contraction trees (an int, or nested tuples of them);
    unlike its bitmaps, these do not shift when opt_einsum sets aside operands that reduce to scalars."""
    if isinstance(tree, int):
        return frozenset([tree])
    return frozenset().union(*(_leaves(t) for t in tree))


def partial_rebuild_path(net: Network, backward: bool = False) -> list[tuple[int, int]] | None:
    """The best order in which the factors holding the convolution modes (CP's kh and kw vectors, say)
    are first contracted together into one small kernel, which then meets the input as one convolution
    (a depthwise 3x3 instead of a 3x1 and a 1x3): more FLOPs than the optimal order, fewer passes over
    the activations. A core bonded to those factors that holds no input or output mode joins them
    (tensorly-torch's Tucker, kh and kw factored around the core, becomes one r x r x 3 x 3 kernel).
    None when no two factors share the convolution modes."""
    group = set().union(*(net.weights_with[c] for c in net.conv)) if net.conv else set()
    if net.signal is None or net.n > OPTIMAL_LIMIT:
        return None
    free = set(net.expr.inputs[net.signal]) | set(net.expr.output)
    bonds = {m for i in group for m in net.expr.inputs[i]}
    group |= {i for i, term in enumerate(net.expr.inputs)
              if i != net.signal and not set(term) & free and set(term) & bonds}
    if len(group) < 2:
        return None
    return optimal_path(net, backward, together=frozenset(group))


def optimal_path(net: Network, backward: bool, signal_last: bool = False,
                 together: frozenset[int] = frozenset()) -> list[tuple[int, int]]:
    """Exact search: opt_einsum's DP over subsets, with `Network.step_cost` as the local cost.
    With `signal_last`, the input may only join in the final step (the best rebuild-the-kernel order);
    operands in `together` are all joined to each other before any of them meets the input."""
    inputs = [frozenset(t) for t in net.expr.inputs]
    output = frozenset(net.expr.output)

    def compare(cost1, cost2, i1_union_i2, size_dict, cost_cap, s1, s2, xn, g, all_tensors, inputs_, i1_cut,
                memory_limit, contract1, contract2):
        a, b = _leaves(contract1), _leaves(contract2)
        if signal_last and net.has_signal(a | b) and len(a | b) < net.n:
            return
        if together and net.has_signal(a | b) and (a | b) & together and not together <= (a | b):
            return
        cost = cost1 + cost2 + net.step_cost(a, b, backward)
        s = s1 | s2
        if s not in xn or cost < xn[s][1]:
            # opt_einsum's own bookkeeping of the new node's legs, in its integer index space
            rest = g & (all_tensors ^ s)
            outside = frozenset().union(*(inputs_[k] for k in range(len(inputs_)) if rest >> k & 1))
            xn[s] = (i1_union_i2 - (i1_cut - outside), cost, (contract1, contract2))

    # Sizes are only used by opt_einsum for its cost cap, which is off; conv modes differ per operand.
    size_dict = {m: max(s.get(m, 1) for s in net.sizes) for t in inputs for m in t}
    linear = DynamicProgramming(minimize=compare, cost_cap=False, search_outer=True)(inputs, output, size_dict)
    return [tuple(step) for step in linear_to_ssa(linear)]


def greedy_path(net: Network) -> list[tuple[int, int]]:
    inputs = [set(t) for t in net.expr.inputs]
    size_dict = {m: max(s.get(m, 1) for s in net.sizes) for t in inputs for m in t}
    linear = opt_einsum.paths.greedy(inputs, set(net.expr.output), size_dict)
    return [tuple(step) for step in linear_to_ssa(linear)]


def check_path(n: int, path) -> list[tuple[int, int]]:
    """An explicit SSA path for `n` operands, validated (it may come from a file): each step joins two
    distinct live nodes, and the steps leave exactly one."""
    live, steps = set(range(n)), []
    for k, step in enumerate(path):
        if (not isinstance(step, (list, tuple)) or len(step) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in step)):
            raise ValueError(f"path step {k}: expected a pair of node ids, got {step!r}")
        i, j = step
        if i == j or i not in live or j not in live:
            raise ValueError(f"path step {k}: ({i}, {j}) does not join two distinct live nodes")
        live -= {i, j}
        live.add(n + k)
        steps.append((i, j))
    if len(live) != 1:
        raise ValueError(f"the path leaves {len(live)} nodes, not one")
    return steps


def find_path(net: Network, strategy, backward: bool = False) -> list[tuple[int, int]]:
    if not isinstance(strategy, str):
        return check_path(net.n, strategy)
    if strategy not in PATH_STRATEGIES:  # (a ValueError, as an invalid explicit path is)
        raise ValueError(PATH_STRATEGIES.unknown(strategy))
    return [] if net.n == 1 else PATH_STRATEGIES.get(strategy)(net, backward)


PATH_STRATEGIES: Registry[Callable[[Network, bool], list[tuple[int, int]]]] = Registry("path strategy")
PATH_STRATEGIES.add("optimal", lambda net, backward: (greedy_path(net) if net.n > OPTIMAL_LIMIT
                                                      else optimal_path(net, backward)))
PATH_STRATEGIES.add("naive", lambda net, backward: naive_path(net.n))
PATH_STRATEGIES.add("rebuild", rebuild_path)
PATH_STRATEGIES.add("greedy", lambda net, backward: greedy_path(net))


def path_cost(net: Network, path: list[tuple[int, int]], backward: bool = False) -> tuple[int, int, list]:
    """(total cost, largest intermediate, per-step (subset_a, subset_b, cost)) of an SSA path."""
    nodes = {i: frozenset([i]) for i in range(net.n)}
    total, largest, steps = 0, 0, []
    for k, (i, j) in enumerate(path):
        a, b = nodes.pop(i), nodes.pop(j)
        cost = net.step_cost(a, b, backward)
        nodes[net.n + k] = a | b
        total += cost
        largest = max(largest, net.numel(a | b))
        steps.append((a, b, cost))
    return total, largest, steps
