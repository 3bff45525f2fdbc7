"""Tiny server-side SVG charts: a line chart and a bar chart with guide lines.

Every chart carries its data as attributes (``data-points`` on the <svg>, ``data-label`` and
``data-value`` on each point or bar), so a test or a script can read what is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 44, 16, 14, 34


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _scale(lo: float, hi: float, top: float, bottom: float) -> tuple[float, float]:
    span = (hi - lo) or 1.0
    return lo, (bottom - top) / span


def _axis(chart_id: str, title: str, lo: float, hi: float, ticks: Sequence[float]) -> list[str]:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    base, unit = _scale(lo, hi, 0, plot_h)
    parts = [f'<title id="{escape(chart_id)}-title">{escape(title)}</title>']
    for tick in ticks:
        y = PAD_TOP + plot_h - (tick - base) * unit
        parts.append(
            f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    return parts


def _labels(labels: Sequence[str], xs: Sequence[float]) -> list[str]:
    step = max(1, len(labels) // 8)  # at most about 8 labels on the x axis
    return [
        f'<text class="xlabel" x="{x:.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % step == 0 or i == len(labels) - 1
    ]


def _svg(chart_id: str, kind: str, data: list[dict[str, object]], body: list[str]) -> Markup:
    points = escape(json.dumps(data, separators=(",", ":")))
    return Markup(
        f'<svg class="chart" id="{escape(chart_id)}" data-kind="{kind}" data-points="{points}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{escape(chart_id)}-title" '
        f'preserveAspectRatio="xMidYMid meet">' + "".join(body) + "</svg>"
    )


def line_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float]],
    y_range: tuple[float, float] | None = None,
    empty: str = "No data yet.",
) -> Markup:
    """A line through ``points`` (label, value), each point a circle with its data attributes."""
    data: list[dict[str, object]] = [{"label": label, "value": value} for label, value in points]
    if not points:
        return _svg(
            chart_id,
            "line",
            data,
            [
                f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
                f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
                f"{escape(empty)}</text>",
            ],
        )
    values = [v for _, v in points]
    lo, hi = y_range if y_range else (min(0.0, min(values)), max(values) or 1.0)
    ticks = [lo + (hi - lo) * i / 4 for i in range(5)]
    body = _axis(chart_id, title, lo, hi, ticks)
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    base, unit = _scale(lo, hi, 0, plot_h)
    n = len(points)
    xs = [PAD_LEFT + (plot_w * (i + 0.5) / n) for i in range(n)]
    ys = [PAD_TOP + plot_h - (v - base) * unit for v in values]
    if n > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        body.append(f'<polyline class="line" points="{path}"/>')
    for (label, value), x, y in zip(points, xs, ys, strict=True):
        body.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" data-label="{escape(label)}" '
            f'data-value="{_fmt(value)}"><title>{escape(label)}: {_fmt(value)}</title></circle>'
        )
    body += _labels([label for label, _ in points], xs)
    return _svg(chart_id, "line", data, body)


def bar_chart(
    chart_id: str,
    title: str,
    bars: Sequence[tuple[str, float]],
    guides: Sequence[tuple[str, float]] = (),
) -> Markup:
    """Bars (label, value) with horizontal guide lines (label, value), e.g. thresholds."""
    data: list[dict[str, object]] = [{"label": label, "value": value} for label, value in bars]
    top = max([v for _, v in bars] + [v for _, v in guides] + [1.0])
    ticks = [top * i / 4 for i in range(5)]
    body = _axis(chart_id, title, 0.0, top, ticks)
    plot_w, plot_h = WIDTH - PAD_LEFT - PAD_RIGHT, HEIGHT - PAD_TOP - PAD_BOTTOM
    unit = plot_h / top
    n = max(1, len(bars))
    slot = plot_w / n
    xs = []
    for i, (label, value) in enumerate(bars):
        x = PAD_LEFT + slot * i + slot * 0.2
        h = value * unit
        xs.append(x + slot * 0.3)
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{PAD_TOP + plot_h - h:.1f}" width="{slot * 0.6:.1f}" '
            f'height="{h:.1f}" data-label="{escape(label)}" data-value="{_fmt(value)}">'
            f"<title>{escape(label)}: {_fmt(value)}</title></rect>"
        )
    for label, value in guides:
        y = PAD_TOP + plot_h - value * unit
        body.append(
            f'<line class="guide" x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'data-label="{escape(label)}" data-value="{_fmt(value)}"/>'
            f'<text class="guide-label" x="{WIDTH - PAD_RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">'
            f"{escape(label)} ({_fmt(value)})</text>"
        )
    body += _labels([label for label, _ in bars], xs)
    return _svg(chart_id, "bar", data, body)
