"""What the spectral stage is told: a constraint on the compressed layers' singular values, kept during
distillation and applied once more at its end."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError, brief, opt
from ..options import Section, option

DEFAULT_EVERY = {"clip": 100, "divide": 1}  # the reference authors' choices (Senderovich; Gouk)


@dataclass(frozen=True)
class Constraint:
    kind: str  # "clip", "divide" or "orthogonal"
    value: float | None = None  # C of clip:C and divide:C


def parse_constraint(text: str) -> Constraint:
    kind, _, value = text.partition(":")
    if kind == "orthogonal" and not value:
        return Constraint(kind)
    if kind in ("clip", "divide"):
        try:
            c = float(value)
        except ValueError:
            raise UsageError(f"{opt('spectral')} {brief(text)}: {kind} needs a bound, e.g. {kind}:1") from None
        if not c > 0 or c != c or c == float("inf"):
            raise UsageError(f"{opt('spectral')} {brief(text)}: the bound must be a positive number")
        return Constraint(kind, c)
    raise UsageError(f"{opt('spectral')} {brief(text)}: use clip:C, divide:C or orthogonal")


class SpectralConfig(Section, name="spectral", title="Spectral control", prefix="spectral_"):
    constraint: str | None = option(None, "Constrain the compressed layers' singular values: clip:C (clip them to C "
                                          "through the core), divide:C (divide a layer by max(1, sigma/C)), or "
                                          "orthogonal (the selected convolutions become SC-Fac orthogonal ones "
                                          "instead of being factorised).", flat="spectral")
    every: int | None = option(None, "Steps between projections during distillation (clip: 100, divide: 1).",
                               minimum=1)
    orthogonality: float = option(0.0, "Weight of the penalty ||A^T A - I||^2 on the compressed layers' frame "
                                       "factors (the core trick is exact when it is 0).", flat="orthogonality",
                                  minimum=0)
    bn: float | None = option(None, "Also bound each batch norm after a constrained layer: gain |gamma| / "
                                    "sqrt(var + eps) <= this.", above=0)
    power_iters: int = option(1, "divide: power iterations per projection (the vector persists).", minimum=1)
    measure: bool = option(True, "Report every layer's sigma_max and the network bound before and after.")

    @property
    def orthogonal(self) -> bool:
        return self.constraint == "orthogonal"

    @property
    def enabled(self) -> bool:
        return self.constraint is not None or self.orthogonality > 0

    def parsed(self) -> Constraint | None:
        return parse_constraint(self.constraint) if self.constraint is not None else None

    def projection_every(self) -> int:
        c = self.parsed()
        return self.every or (DEFAULT_EVERY.get(c.kind, 1) if c else 1)

    def validate(self) -> None:
        if self.constraint is not None:
            self.parsed()
