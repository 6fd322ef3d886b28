"""Parsing and validating conv_einsum expressions.

Grammar: `TERM,TERM,...->TERM|CONV`. A term is a sequence of modes; a mode is one letter or a
parenthesised name such as `(s1)`. Spaces are ignored. CONV lists the convolution modes, with or
without commas (`|hw` and `|h,w` are the same). Every error names the offending part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\(([A-Za-z0-9_]+)\)|([A-Za-z])|(.)")


class ExpressionError(ValueError):
    """A malformed expression, or operands that do not fit it."""


def _modes(text: str, where: str) -> tuple[str, ...]:
    modes = []
    for match in _TOKEN.finditer(text):
        name, letter, other = match.groups()
        if other is not None:
            raise ExpressionError(f"unexpected character {other!r} in {where} {text!r}")
        modes.append(name or letter)
    return tuple(modes)


@dataclass(frozen=True)
class Expression:
    inputs: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]
    conv: tuple[str, ...]  # convolution modes, in the order stride/padding/dilation tuples refer to
    text: str

    def __str__(self) -> str:
        term = lambda modes: "".join(m if len(m) == 1 else f"({m})" for m in modes)  # noqa: E731
        conv = f"|{term(self.conv)}" if self.conv else ""
        return ",".join(term(t) for t in self.inputs) + "->" + term(self.output) + conv


def parse(text: str) -> Expression:
    """Parse the expression text; checks everything that does not depend on the operands."""
    compact = re.sub(r"\s+", "", text)
    body, bar, conv_text = compact.partition("|")
    if "|" in conv_text:
        raise ExpressionError(f"more than one '|' in {text!r}")
    if "->" not in body:
        raise ExpressionError(f"expression {text!r} needs an explicit output: 'inputs->output'")
    lhs, _, rhs = body.partition("->")
    if "->" in rhs:
        raise ExpressionError(f"more than one '->' in {text!r}")
    if not lhs:
        raise ExpressionError(f"expression {text!r} has no operands")
    inputs = tuple(_modes(term, f"operand {i}") for i, term in enumerate(lhs.split(",")))
    output = _modes(rhs, "output")
    conv = _modes(conv_text.replace(",", ""), "convolution modes") if bar else ()
    for i, term in enumerate(inputs):
        repeated = {m for m in term if term.count(m) > 1}
        if repeated:
            raise ExpressionError(f"mode {sorted(repeated)[0]!r} repeated in operand {i} (diagonals are not supported)")
    repeated = {m for m in output if output.count(m) > 1}
    if repeated:
        raise ExpressionError(f"mode {sorted(repeated)[0]!r} repeated in the output")
    if len(set(conv)) != len(conv):
        raise ExpressionError(f"a convolution mode is listed twice in {conv_text!r}")
    seen = {m for term in inputs for m in term}
    for m in output:
        if m not in seen:
            raise ExpressionError(f"output mode {m!r} does not appear in any operand")
    for m in conv:
        if m not in seen:
            raise ExpressionError(f"convolution mode {m!r} does not appear in any operand")
        if m not in output:
            raise ExpressionError(f"convolution mode {m!r} must appear in the output")
    if len(conv) > 3:
        raise ExpressionError(f"at most 3 convolution modes are supported, got {len(conv)}: {conv}")
    return Expression(inputs, output, conv, text)


def mode_sizes(expr: Expression, shapes: list[tuple[int, ...]]) -> list[dict[str, int]]:
    """Per operand, the size of each mode; checks operand count, ranks and non-convolution sizes."""
    if len(shapes) != len(expr.inputs):
        raise ExpressionError(f"expression {expr.text!r} has {len(expr.inputs)} operands, got {len(shapes)} tensors")
    sizes: list[dict[str, int]] = []
    common: dict[str, tuple[int, int]] = {}
    for i, (term, shape) in enumerate(zip(expr.inputs, shapes, strict=True)):
        if len(term) != len(shape):
            raise ExpressionError(f"operand {i} has {len(shape)} dimensions but its term "
                                  f"{''.join(m if len(m) == 1 else f'({m})' for m in term)!r} has {len(term)}")
        own = dict(zip(term, (int(d) for d in shape), strict=True))
        for m, d in own.items():
            if m in expr.conv:
                if d < 1:
                    raise ExpressionError(f"convolution mode {m!r} has size {d} in operand {i}")
                continue
            if m in common and common[m][0] != d:
                raise ExpressionError(f"mode {m!r} has size {common[m][0]} in operand {common[m][1]} "
                                      f"but {d} in operand {i}")
            common.setdefault(m, (d, i))
        sizes.append(own)
    return sizes
