"""An SVG chart of every layer's singular values (no plotting library needed): one line per layer,
values descending against their rank as a fraction of the layer's count, on a log scale."""

from __future__ import annotations

import html
import math

from .layers import LayerSpectrum

WIDTH, HEIGHT, MARGIN = 760, 420, 56
POINTS = 200  # per layer: the spectrum is sampled, not drawn value by value


def _colour(i: int, n: int) -> str:
    hue = int(240 * i / max(1, n - 1))  # blue (first layer) to red (last)
    return f"hsl({240 - hue},70%,45%)"


def spectrum_svg(layers: list[LayerSpectrum], title: str) -> str:
    values = [float(v) for s in layers for v in s.values if v > 0]
    if not values:
        lo, hi = -1.0, 1.0
    else:
        lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
        hi = max(hi, lo + 1)
    plot_w, plot_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def xy(frac: float, v: float) -> tuple[float, float]:
        y = (math.log10(max(v, 10.0 ** lo)) - lo) / (hi - lo)
        return MARGIN + frac * plot_w, MARGIN + (1 - y) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
           'font-size="11">', f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{html.escape(title)}</text>',
           f'<rect x="{MARGIN}" y="{MARGIN}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>']
    for e in range(int(lo), int(hi) + 1):
        _, y = xy(0, 10.0 ** e)
        out.append(f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{MARGIN - 6}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
    out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 16}" text-anchor="middle">rank / count (each layer\'s '
               'singular values, descending)</text>')
    for i, s in enumerate(layers):
        n = s.values.numel()
        if n == 0:
            continue
        idx = sorted({min(n - 1, round(k * (n - 1) / (POINTS - 1))) for k in range(POINTS)})
        pts = " ".join("{:.1f},{:.1f}".format(*xy(j / max(1, n - 1), float(s.values[j]))) for j in idx)
        out.append(f'<polyline fill="none" stroke="{_colour(i, len(layers))}" stroke-width="1.2" points="{pts}">'
                   f'<title>{html.escape(s.name)}: sigma_max {s.sigma_max:.4g}</title></polyline>')
    out.append(f'<text x="{WIDTH - MARGIN}" y="{MARGIN - 8}" text-anchor="end">first layer blue, last red; '
               'hover a line for its name</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
