"""A loss curve as a self-contained SVG line chart, drawn on the server (no JavaScript, no libraries)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

WIDTH, HEIGHT = 640, 260
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 24, 36
COLOURS = ("#3b5bdb", "#e8590c", "#2b8a3e", "#862e9c")
SERIES_KEYS = (("train_loss", "train loss"), ("valid_loss", "validation loss"))


def curve_series(points: Sequence[Any]) -> dict[str, list[tuple[float, float]]]:
    """(step, value) series from a job's loss curve ({"step", "train_loss", "valid_loss", ...} rows)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        if not isinstance(point, dict) or not isinstance(point.get("step"), int | float):
            continue
        for key, label in SERIES_KEYS:
            value = point.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                series.setdefault(label, []).append((float(point["step"]), float(value)))
    return series


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    return [low + (high - low) * i / count for i in range(count + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def line_chart_svg(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str = "Loss",
    x_label: str = "step",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> str:
    """An SVG chart of one or more (x, y) series; an empty chart says there is no data yet."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="system-ui, sans-serif" font-size="11">'
        f"<title>{escape(title)}</title>"
    )
    points = [p for values in series.values() for p in values]
    if not points:
        return (
            head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#667085">'
            "No loss values yet.</text></svg>"
        )
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    pad = (y_high - y_low) * 0.05
    y_low, y_high = y_low - pad, y_high + pad
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM

    def sx(x: float) -> float:
        return MARGIN_LEFT + (plot_w * (x - x_low) / (x_high - x_low) if x_high > x_low else plot_w / 2)

    def sy(y: float) -> float:
        return MARGIN_TOP + plot_h * (1 - (y - y_low) / (y_high - y_low))

    parts = [head, f'<text x="{MARGIN_LEFT}" y="14" font-weight="600">{escape(title)}</text>']
    for tick in _ticks(y_low, y_high):
        y = sy(tick)
        right = width - MARGIN_RIGHT
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7ec"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#667085">'
            f"{_label(tick)}</text>"
        )
    x_ticks = _ticks(x_low, x_high)
    if all(x.is_integer() for x in xs):  # steps: whole-number ticks only
        x_ticks = sorted({float(round(x)) for x in x_ticks})
    for tick in x_ticks:
        x = sx(tick)
        parts.append(
            f'<text x="{x:.1f}" y="{height - MARGIN_BOTTOM + 16}" text-anchor="middle" fill="#667085">'
            f"{_label(tick)}</text>"
        )
    parts.append(
        f'<text x="{MARGIN_LEFT + plot_w / 2}" y="{height - 4}" text-anchor="middle" fill="#667085">'
        f"{escape(x_label)}</text>"
    )
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(values))
        parts.append(
            f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{coords}"/>'
        )
        if len(values) == 1:
            x, y = values[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        legend_x = width - MARGIN_RIGHT - 130 * (len(series) - index)
        parts.append(
            f'<rect x="{legend_x}" y="6" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="15">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
