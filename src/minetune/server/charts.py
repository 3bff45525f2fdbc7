"""Tiny server-side SVG charts: a line chart, a bar chart with guide lines, and a chart of several
series on a numeric axis (loss curves).

Every chart carries its data as attributes (``data-points`` on the <svg>; ``data-label`` and
``data-value`` on each point or bar; ``data-series`` on each series' line), so a test or a script
can read what is drawn. Page charts are styled by ``app.css``; a standalone chart (served as an
image, like the loss curves) also carries its own size, font and colours.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

MUTED, GRID = "#667085", "#e4e7ec"  # app.css --muted and --line, for standalone charts
SERIES_COLOURS = ("#3b5bdb", "#e8590c", "#2b8a3e", "#862e9c")


@dataclass(frozen=True)
class Frame:
    """A chart's size and the padding around its plot area."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom

    def y(self, value: float, lo: float, hi: float) -> float:
        """The pixel row of ``value`` on a vertical axis from ``lo`` to ``hi``."""
        return self.top + self.plot_h - (value - lo) * self.plot_h / ((hi - lo) or 1.0)


PAGE = Frame(640, 220, left=44, right=16, top=14, bottom=34)
SERIES = Frame(640, 260, left=56, right=16, top=24, bottom=36)  # room for a legend and an axis name


def _fmt(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _short(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _title(chart_id: str, title: str) -> str:
    return f'<title id="{escape(chart_id)}-title">{escape(title)}</title>'


def _axis(
    chart_id: str,
    title: str,
    lo: float,
    hi: float,
    ticks: Sequence[float],
    frame: Frame = PAGE,
    fmt: Callable[[float], str] = _fmt,
) -> list[str]:
    parts = [_title(chart_id, title)]
    for tick in ticks:
        y = frame.y(tick, lo, hi)
        parts.append(
            f'<line class="grid" x1="{frame.left}" x2="{frame.width - frame.right}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text class="tick" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">'
            f"{fmt(tick)}</text>"
        )
    return parts


def _labels(
    labels: Sequence[str], xs: Sequence[float], frame: Frame = PAGE, y: float | None = None
) -> list[str]:
    step = max(1, len(labels) // 8)  # at most about 8 labels on the x axis
    row = frame.height - 10 if y is None else y
    return [
        f'<text class="xlabel" x="{x:.1f}" y="{row}" text-anchor="middle" fill="{MUTED}">'
        f"{escape(label)}</text>"
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % step == 0 or i == len(labels) - 1
    ]


def _svg(
    chart_id: str,
    kind: str,
    data: list[dict[str, object]],
    body: list[str],
    frame: Frame = PAGE,
    standalone: bool = False,
) -> Markup:
    points = escape(json.dumps(data, separators=(",", ":")))
    own = (
        f' xmlns="http://www.w3.org/2000/svg" width="{frame.width}" height="{frame.height}" '
        'font-family="system-ui, sans-serif" font-size="11"'
        if standalone
        else ""
    )
    return Markup(
        f'<svg class="chart" id="{escape(chart_id)}" data-kind="{kind}" data-points="{points}" '
        f'viewBox="0 0 {frame.width} {frame.height}" role="img" aria-labelledby="{escape(chart_id)}-title" '
        f'preserveAspectRatio="xMidYMid meet"{own}>' + "".join(body) + "</svg>"
    )


def _empty(
    chart_id: str, kind: str, title: str, message: str, frame: Frame = PAGE, standalone: bool = False
) -> Markup:
    body = [
        _title(chart_id, title),
        f'<text class="empty" x="{frame.width / 2}" y="{frame.height / 2}" text-anchor="middle" '
        f'fill="{MUTED}">{escape(message)}</text>',
    ]
    return _svg(chart_id, kind, [], body, frame, standalone)


def line_chart(
    chart_id: str,
    title: str,
    points: Sequence[tuple[str, float]],
    y_range: tuple[float, float] | None = None,
    empty: str = "No data yet.",
) -> Markup:
    """A line through ``points`` (label, value), each point a circle with its data attributes."""
    if not points:
        return _empty(chart_id, "line", title, empty)
    data: list[dict[str, object]] = [{"label": label, "value": value} for label, value in points]
    values = [v for _, v in points]
    lo, hi = y_range if y_range else (min(0.0, min(values)), max(values) or 1.0)
    ticks = [lo + (hi - lo) * i / 4 for i in range(5)]
    body = _axis(chart_id, title, lo, hi, ticks)
    n = len(points)
    xs = [PAGE.left + (PAGE.plot_w * (i + 0.5) / n) for i in range(n)]
    ys = [PAGE.y(v, lo, hi) for v in values]
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
    slot = PAGE.plot_w / max(1, len(bars))
    xs = []
    for i, (label, value) in enumerate(bars):
        x = PAGE.left + slot * i + slot * 0.2
        y = PAGE.y(value, 0.0, top)
        xs.append(x + slot * 0.3)
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.6:.1f}" '
            f'height="{PAGE.top + PAGE.plot_h - y:.1f}" '
            f'data-label="{escape(label)}" data-value="{_fmt(value)}">'
            f"<title>{escape(label)}: {_fmt(value)}</title></rect>"
        )
    for label, value in guides:
        y = PAGE.y(value, 0.0, top)
        body.append(
            f'<line class="guide" x1="{PAGE.left}" x2="{PAGE.width - PAGE.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'data-label="{escape(label)}" data-value="{_fmt(value)}"/>'
            f'<text class="guide-label" x="{PAGE.width - PAGE.right - 4}" y="{y - 4:.1f}" text-anchor="end">'
            f"{escape(label)} ({_fmt(value)})</text>"
        )
    body += _labels([label for label, _ in bars], xs)
    return _svg(chart_id, "bar", data, body)


def series_chart(
    chart_id: str,
    title: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_label: str = "",
    empty: str = "No data yet.",
) -> Markup:
    """Several (x, y) series on a numeric x axis, each a coloured line named in a legend; a
    standalone SVG. ``data-points`` lists ``{"series", "x", "value"}`` for every point."""
    frame = SERIES
    data: list[dict[str, object]] = [
        {"series": name, "x": x, "value": y} for name, values in series.items() for x, y in sorted(values)
    ]
    points = [p for values in series.values() for p in values]
    if not points:
        return _empty(chart_id, "series", title, empty, frame, standalone=True)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_low, x_high = min(xs), max(xs)
    lo, hi = min(ys), max(ys)
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad

    def sx(x: float) -> float:
        offset = frame.plot_w * (x - x_low) / (x_high - x_low) if x_high > x_low else frame.plot_w / 2
        return frame.left + offset

    body = _axis(chart_id, title, lo, hi, [lo + (hi - lo) * i / 4 for i in range(5)], frame, _short)
    body.append(f'<text class="chart-title" x="{frame.left}" y="14" font-weight="600">{escape(title)}</text>')
    x_ticks = [x_low + (x_high - x_low) * i / 4 for i in range(5)] if x_high > x_low else [x_low]
    if all(x.is_integer() for x in xs):  # steps: whole-number ticks only
        x_ticks = sorted({float(round(x)) for x in x_ticks})
    tick_row = frame.height - frame.bottom + 16
    body += _labels([_short(t) for t in x_ticks], [sx(t) for t in x_ticks], frame, tick_row)
    if x_label:
        body.append(
            f'<text class="xlabel" x="{frame.left + frame.plot_w / 2}" y="{frame.height - 4}" '
            f'text-anchor="middle" fill="{MUTED}">{escape(x_label)}</text>'
        )
    for index, (name, values) in enumerate(series.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{frame.y(y, lo, hi):.1f}" for x, y in sorted(values))
        body.append(
            f'<polyline class="series" data-series="{escape(name)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{coords}"/>'
        )
        if len(values) == 1:
            x, y = values[0]
            body.append(f'<circle cx="{sx(x):.1f}" cy="{frame.y(y, lo, hi):.1f}" r="3" fill="{colour}"/>')
        legend_x = frame.width - frame.right - 130 * (len(series) - index)
        body.append(
            f'<rect x="{legend_x}" y="6" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="15">{escape(name)}</text>'
        )
    return _svg(chart_id, "series", data, body, frame, standalone=True)


# -- loss curves -----------------------------------------------------------------------------------

LOSS_SERIES = (("train_loss", "train loss"), ("valid_loss", "validation loss"))


def curve_series(points: Sequence[Any]) -> dict[str, list[tuple[float, float]]]:
    """(step, value) series from a job's loss curve ({"step", "train_loss", "valid_loss", ...} rows)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for point in points:
        if not isinstance(point, dict) or not isinstance(point.get("step"), int | float):
            continue
        for key, label in LOSS_SERIES:
            value = point.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                series.setdefault(label, []).append((float(point["step"]), float(value)))
    return series


def loss_chart(chart_id: str, title: str, curve: Sequence[Any]) -> Markup:
    """The train and validation loss of a job's loss curve per step (see :func:`curve_series`)."""
    return series_chart(chart_id, title, curve_series(curve), x_label="step", empty="No loss values yet.")
