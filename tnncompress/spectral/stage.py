"""The spectral stage, in two halves around distillation: `start` sets up the constraint distillation
keeps (and measures every compressed layer's sigma_max before), `end` applies it once more to every
layer (the exported model meets it) and measures again. Told by its own options section
(`SpectralConfig`); returns its report section."""

from __future__ import annotations

import logging
import statistics

from torch import nn

from ..errors import UsageError, opt
from .config import SpectralConfig
from .control import SpectralControl
from .model import model_spectrum
from .replace import Orthogonalised, orthogonalise
from .result import SpectralLayer, SpectralReport, fill

log = logging.getLogger(__name__)
POWER_ITERS = 20  # for the report's zero-padding lower bounds: enough to be within a few %


def _spectrum(model: nn.Module, input_size) -> object:
    return model_spectrum(model, input_size, power_iters=POWER_ITERS, pairs=8)


def orthogonal(teacher: nn.Module, names: list[str], input_size: tuple[int, ...], seed: int = 0
               ) -> tuple[nn.Module, list[Orthogonalised]]:
    """--spectral orthogonal: the `names`d convolutions become SC-Fac orthogonal convolutions."""
    student, results = orthogonalise(teacher, names, input_size, seed=seed)
    done = [r for r in results if r.replaced]
    if not done:
        raise UsageError(f"{opt('spectral')} orthogonal: no selected layer can be an orthogonal convolution"
                         + (f" ({results[0].name}: {results[0].reason})" if results else " (none is selected)"))
    log.info("orthogonal convolutions: %d layers in %.1f s, median distance to the polar factor %.3f", len(done),
             sum(r.seconds for r in done), statistics.median(r.fit_distance for r in done))
    return student, results


def start(config: SpectralConfig, teacher: nn.Module, student: nn.Module, input_size: tuple[int, ...],
          replaced: list[str] = ()) -> tuple[SpectralControl | None, SpectralReport | None]:
    """The constraint distillation keeps, and the report with every compressed layer's sigma_max before
    (for layers `replaced` by orthogonal convolutions: the teacher's)."""
    if not config.enabled:
        return None, None
    control = SpectralControl(student, input_size, config)
    report = SpectralReport(config.constraint, control.every, config.orthogonality, config.bn,
                            orthogonal_layers=list(replaced))
    if config.measure:
        log.info("spectrum before the constraint (%d layers)", len(control.layers) + len(replaced))
        if control.layers:
            fill(report, _spectrum(student, input_size), "before", set(control.layers))
        if replaced:
            fill(report, _spectrum(teacher, input_size), "before", set(replaced))
    return control, report


def end(config: SpectralConfig, student: nn.Module, input_size: tuple[int, ...], control: SpectralControl,
        report: SpectralReport) -> SpectralReport:
    """The constraint applied once more to every layer (the exported model meets it), then measured."""
    results = control.project()
    rows = {r.name: r for r in report.layers}
    for r in results:
        if r.name not in rows:  # not measured (--no-spectral-measure)
            rows[r.name] = SpectralLayer(r.name, exact=False)
            report.layers.append(rows[r.name])
        rows[r.name].projection, rows[r.name].projection_error = r.path, r.error
    report.projections = control.projections
    if config.measure:  # orthogonal convolutions are plain ones by now (densified)
        names = set(control.layers) | set(report.orthogonal_layers)
        fill(report, _spectrum(student, input_size), "after", names)
    if results and control.constraint.kind == "clip":
        worst = max(results, key=lambda r: r.error)
        log.info("clip:%g: largest projection error %.3g (%s)", control.constraint.value, worst.error, worst.name)
    return report
