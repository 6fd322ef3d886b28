"""The spectral stage's record in the report: each compressed layer's sigma_max before and after the
constraint, and the network's Lipschitz bounds."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import ModelSpectrum


@dataclass
class SpectralLayer:
    name: str
    exact: bool  # False: sigma_max is the zero-padding upper bound, sigma_max_lower a power iteration
    sigma_before: float | None = None
    sigma_before_lower: float | None = None
    sigma_after: float | None = None
    sigma_after_lower: float | None = None
    with_bn_before: float | None = None  # with the batch norm after it folded in
    with_bn_after: float | None = None
    projection: str | None = None  # how the last projection reached it: kernel, core, core-refit, ...
    projection_error: float | None = None  # of the last projection: sigma_after <= C + this (clip)


@dataclass
class NetworkBounds:
    upper: float | None = None  # certified (None: the model has an operation without a rule, see `why`)
    lower: float | None = None  # measured
    why: str | None = None


@dataclass
class SpectralReport:
    constraint: str | None
    every: int
    orthogonality: float
    bn: float | None
    projections: int = 0  # projection passes during and after distillation
    layers: list[SpectralLayer] = field(default_factory=list)
    network_before: NetworkBounds | None = None
    network_after: NetworkBounds | None = None
    orthogonal_layers: list[str] = field(default_factory=list)  # replaced by SC-Fac orthogonal convolutions


def network_bounds(spectrum: ModelSpectrum) -> NetworkBounds | None:
    n = spectrum.network
    return None if n is None else NetworkBounds(n.upper, n.lower, n.reason)


def fill(report: SpectralReport, spectrum: ModelSpectrum, when: str, names: set[str]) -> None:
    """Put a model spectrum's numbers for the named layers into the report's rows (`when`: before, after)."""
    rows = {r.name: r for r in report.layers}
    for s in spectrum.layers:
        if s.name not in names:
            continue
        row = rows.get(s.name)
        if row is None:
            row = SpectralLayer(s.name, s.exact)
            report.layers.append(row)
            rows[s.name] = row
        setattr(row, f"sigma_{when}", s.sigma_max)
        setattr(row, f"sigma_{when}_lower", s.sigma_max if s.exact else s.lower)
        setattr(row, f"with_bn_{when}", spectrum.folded.get(s.name))
    setattr(report, f"network_{when}", network_bounds(spectrum))
