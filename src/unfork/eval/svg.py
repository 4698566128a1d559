"""Small SVG charts for the run report, with no plotting library.

The report must open anywhere (a browser, GitHub, an offline laptop), so each
chart is a standalone ``<svg>`` string with its own fonts and colours, and
every piece of text from the user (leaf paths, model names) is escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f"]
BASE_COLOR, TRAINED_COLOR = "#9aa5b1", "#2f7ed8"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\""


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def fmt(value: float) -> str:
    """A number as short as it can be shown: 0.25, 12, 1.2k."""
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``low``..``high``."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}" {FONT} font-size="12">',
            f"<title>{esc(title)}</title>",
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="15" font-weight="600">{esc(title)}</text>']


def _legend(names: Sequence[str], colors: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        out.append(f'<rect x="{x:.1f}" y="{y + i * 16:.1f}" width="12" height="10" fill="{color}"/>'
                   f'<text x="{x + 16:.1f}" y="{y + i * 16 + 9:.1f}">{esc(name)}</text>')
    return out


def line_chart(series: dict[str, Sequence[tuple[float, float]]], *, title: str, x_label: str, y_label: str,
               width: int = 720, height: int = 340) -> str:
    """Lines of (x, y) points, one per series, with ticked axes and a legend; empty series are skipped."""
    series = {name: [(float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
              for name, pts in series.items()}
    series = {name: pts for name, pts in series.items() if pts}
    out = _open(width, height, title)
    if not series:
        out.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle">no data</text></svg>')
        return "\n".join(out)
    left, right, top, bottom = 64, 196, 36, 48
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    xt, yt = nice_ticks(min(xs), max(xs), 6), nice_ticks(min(min(ys), 0.0), max(ys), 5)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def py(y: float) -> float:
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    for t in yt:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" stroke="#e5e7eb"/>'
                   f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{esc(fmt(t))}</text>')
    for t in xt:
        out.append(f'<line x1="{px(t):.1f}" y1="{top + ph}" x2="{px(t):.1f}" y2="{top + ph + 4}" stroke="#374151"/>'
                   f'<text x="{px(t):.1f}" y="{top + ph + 17}" text-anchor="middle">{esc(fmt(t))}</text>')
    out.append(f'<path d="M{left},{top} V{top + ph} H{left + pw}" fill="none" stroke="#374151"/>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{esc(x_label)}</text>')
    out.append(f'<text transform="translate(16 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f"{esc(y_label)}</text>")
    colors = [COLORS[i % len(COLORS)] for i in range(len(series))]
    for (name, pts), color in zip(series.items(), colors, strict=True):
        d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(pts))
        out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"><title>{esc(name)}</title></path>')
        if len(pts) <= 40:  # few points (an eval loss per epoch) are easier to read as dots
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}">'
                    f"<title>{esc(name)}: {esc(fmt(x))}, {esc(fmt(y))}</title></circle>" for x, y in pts]
    out += _legend(list(series), colors, left + pw + 16, top + 4)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(groups: Sequence[str], values: dict[str, Sequence[float | None]], *, title: str, unit: str = "",
              maximum: float | None = None, width: int = 720) -> str:
    """Horizontal grouped bars: for each group (a leaf) its label, then one labelled bar per series.

    Horizontal because leaf paths are long: each label gets the full width
    above its bars instead of being cut or slanted under a narrow column.
    """
    names = list(values)
    colors = ([BASE_COLOR, TRAINED_COLOR] if len(names) == 2
              else [COLORS[i % len(COLORS)] for i in range(len(names))])
    bar, gap, label_h = 16, 14, 18
    top = 40 + 16 * len(names)
    height = top + len(groups) * (label_h + bar * len(names) + gap) + 10
    out = _open(width, height, title)
    out += _legend(names, colors, 16, 32)
    numbers = [v for vs in values.values() for v in vs if v is not None and math.isfinite(v)]
    top_value = maximum if maximum is not None else max(numbers + [1.0])
    left, pw = 96, width - 96 - 70
    y = top
    for g, group in enumerate(groups):
        out.append(f'<text x="16" y="{y + 13}" font-weight="600">{esc(group)}</text>')
        y += label_h
        for name, color in zip(names, colors, strict=True):
            v = values[name][g] if g < len(values[name]) else None
            out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" fill="#4b5563">{esc(name)}</text>')
            if v is None or not math.isfinite(v):
                out.append(f'<text x="{left + 4}" y="{y + 12}" fill="#6b7280">n/a</text>')
            else:
                w = max(0.0, min(1.0, v / top_value if top_value else 0.0)) * pw
                out.append(f'<rect x="{left}" y="{y + 1}" width="{w:.1f}" height="{bar - 3}" fill="{color}">'
                           f"<title>{esc(group)}, {esc(name)}: {esc(fmt(v))}{esc(unit)}</title></rect>"
                           f'<text x="{left + w + 5:.1f}" y="{y + 12}">{esc(fmt(v))}{esc(unit)}</text>')
            y += bar
        y += gap
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y - gap}" stroke="#374151"/>')
    out.append("</svg>")
    return "\n".join(out)


def stack(charts: Sequence[str], *, width: int = 720, gap: int = 12) -> str:
    """Several charts one under the other, as one standalone SVG file (each keeps its own coordinates)."""
    parts, y = [], 0
    for chart in charts:
        m = re.search(r'height="(\d+(?:\.\d+)?)"', chart)
        h = float(m.group(1)) if m else 300.0
        parts.append(chart.replace("<svg ", f'<svg x="0" y="{y:.0f}" ', 1))
        y += h + gap
    total = max(0.0, y - gap)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total:.0f}" '
            f'viewBox="0 0 {width} {total:.0f}">\n' + "\n".join(parts) + "\n</svg>")
