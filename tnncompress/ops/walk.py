"""One walker over a traced model (torch.fx) for every analysis that interprets it operation by
operation: the spectral stage's Lipschitz bound and the BQN's moment propagation.

Operations are declared once, in table.py, each with its rule for every interpretation (as opt_einsum
registers path functions by name); an interpretation walks the graph with `walk` and asks each node's
operation for its own rule. A module call and the functional call it stands for are one operation:
their arguments are bound to the same names (a module's from its attributes), so one rule serves both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Protocol

import torch
import torch.fx
from torch import nn


@dataclass(frozen=True)
class Operation:
    """One operation as the graph may hold it: as module types, functions or tensor methods. `signature`
    names a functional call's arguments in order (`defaults` fills those not given); `attributes` gives
    a module call's arguments from the module (its input is `input`). `rules` maps an interpretation's
    name to its rule, a function of the `Call`."""

    name: str
    modules: tuple[type, ...] = ()
    functions: tuple = ()
    methods: tuple[str, ...] = ()
    signature: tuple[str, ...] = ("input",)
    defaults: dict = field(default_factory=dict)
    attributes: Callable[[nn.Module], dict] | None = None
    rules: dict[str, Callable] = field(default_factory=dict)


class Call:
    """A node of the graph with its arguments' values under the interpretation walking it."""

    def __init__(self, node: torch.fx.Node, gm: torch.fx.GraphModule, args: tuple, kwargs: dict,
                 operation: Operation | None):
        self.node, self.gm, self.args, self.kwargs, self.operation = node, gm, args, kwargs, operation
        self.module = gm.get_submodule(node.target) if node.op == "call_module" else None

    @functools.cached_property
    def a(self) -> SimpleNamespace:
        """The arguments by name: a module's from its attributes plus `input`; a function's or method's
        from the operation's signature, defaults filled in."""
        op = self.operation
        if self.module is not None:
            bound = {"input": self.args[0], **(op.attributes(self.module) if op and op.attributes else {})}
        else:
            names = op.signature if op else ()
            bound = {**(op.defaults if op else {}), **dict(zip(names, self.args, strict=False)), **self.kwargs}
        return SimpleNamespace(**bound)

    def from_node(self, position: int) -> bool:
        """Whether positional argument `position` is a value of the graph (not a constant)."""
        return position < len(self.node.args) and isinstance(self.node.args[position], torch.fx.Node)

    def shape(self, node: torch.fx.Node | None = None) -> tuple:
        """The shape ShapeProp recorded for `node` (this node by default); () when none was."""
        meta = (node or self.node).meta.get("tensor_meta")
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    def describe(self) -> str:
        """The node as an error message names it."""
        if self.module is not None:
            return f"layer {self.node.target!r} ({type(self.module).__name__})"
        if self.node.op == "call_method":
            return f"method .{self.node.target}() (node {self.node.name})"
        return f"operation {getattr(self.node.target, '__name__', self.node.target)!r} (node {self.node.name})"


class Operations:
    """The declared operations, found by module type (the nearest class in its MRO), function or method."""

    def __init__(self) -> None:
        self._modules: dict[type, Operation] = {}
        self._functions: dict[object, Operation] = {}
        self._methods: dict[str, Operation] = {}

    def add(self, op: Operation) -> Operation:
        for kind, keys in ((self._modules, op.modules), (self._functions, op.functions), (self._methods, op.methods)):
            for key in keys:
                if key in kind:
                    raise ValueError(f"{key!r} is declared twice ({kind[key].name}, {op.name})")
                kind[key] = op
        return op

    def __iter__(self):
        """Each declared operation once, in the order declared."""
        seen = {}
        for op in [*self._modules.values(), *self._functions.values(), *self._methods.values()]:
            seen.setdefault(op.name, op)
        return iter(seen.values())

    def copy(self) -> Operations:
        """A table with the same operations, to which more can be added without touching this one."""
        table = Operations()
        for op in self:
            table.add(op)
        return table

    def of(self, node: torch.fx.Node, gm: torch.fx.GraphModule) -> Operation | None:
        if node.op == "call_module":
            for cls in type(gm.get_submodule(node.target)).__mro__:
                if cls in self._modules:
                    return self._modules[cls]
            return None
        if node.op == "call_function":
            found = self._functions.get(node.target)
            if found is None and getattr(node.target, "__name__", "") == "_assert":
                return self._functions.get(torch._assert)  # the libraries' copies of it (timm's)
            return found
        if node.op == "call_method":
            return self._methods.get(node.target)
        return None

    def rule(self, node: torch.fx.Node, gm: torch.fx.GraphModule, interpretation: str) -> Callable | None:
        op = self.of(node, gm)
        return op.rules.get(interpretation) if op is not None else None


class Interpretation(Protocol):
    def placeholder(self, node: torch.fx.Node) -> object: ...

    def attribute(self, node: torch.fx.Node, value: object) -> object: ...

    def call(self, call: Call) -> object: ...


def walk(gm: torch.fx.GraphModule, interpretation: Interpretation, operations: Operations) -> object:
    """The value of the graph's output under `interpretation`, node by node."""
    env: dict[str, object] = {}

    def value(a):
        return torch.fx.node.map_arg(a, lambda n: env[n.name])

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = interpretation.placeholder(node)
        elif node.op == "output":
            return value(node.args[0])
        elif node.op == "get_attr":
            env[node.name] = interpretation.attribute(node, functools.reduce(getattr, node.target.split("."), gm))
        else:
            env[node.name] = interpretation.call(Call(node, gm, value(node.args), value(node.kwargs),
                                                      operations.of(node, gm)))
    raise RuntimeError("the traced graph has no output")
