"""A server-rendered SVG line chart: no script, no inline style, nothing fetched.

The markup carries classes only; static/admin.css colours the lines and also
gives each a dash pattern, so the series differ without colour. The chart has
a <title> and a <desc>, and the page shows the same figures as a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 36
GRID_LINES = 4
LABEL_EVERY = 15  # days between date labels on the x axis


@dataclass(frozen=True)
class Series:
    """One line: a CSS-safe key (becomes a class), its label and one value per day."""

    key: str
    label: str
    values: Sequence[int]


def nice_ceiling(value: int) -> int:
    """The top of the y scale: ``GRID_LINES`` times a round step, at or above ``value``.

    Steps are 1, 2, 2.5 and 5 times a power of ten (2.5 only from 25 up, so
    every grid line stays a whole number).
    """
    needed = max(value, 1) / GRID_LINES
    power = 1
    while True:
        steps = (power, 2 * power, 5 * power // 2, 5 * power) if power >= 10 else (1, 2, 5)
        for step in steps:
            if step >= needed:
                return step * GRID_LINES
        power *= 10


def x_at(index: int, count: int) -> float:
    """Horizontal position of the ``index``-th day of ``count``."""
    span = WIDTH - LEFT - RIGHT
    return LEFT + (span * index / (count - 1) if count > 1 else span / 2)


def y_at(value: int, top_value: int) -> float:
    """Vertical position of ``value`` on a scale from 0 to ``top_value``."""
    span = HEIGHT - TOP - BOTTOM
    return TOP + span * (1 - value / top_value)


def _number(value: float) -> str:
    """A coordinate with at most one decimal, without a trailing ``.0``."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def line_chart(
    days: Sequence[date], series: Sequence[Series], *, title: str, desc: str, chart_id: str
) -> Markup:
    """The chart as an inline <svg> element, labelled by its <title> and <desc>."""
    top_value = nice_ceiling(max((max(s.values, default=0) for s in series), default=0))
    count = len(days)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' role="img" aria-labelledby="{chart_id}-title {chart_id}-desc">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]
    parts.extend(_grid(top_value))
    parts.extend(_date_labels(days))
    for line in series:
        points = " ".join(
            f"{_number(x_at(i, count))},{_number(y_at(v, top_value))}"
            for i, v in enumerate(line.values)
        )
        parts.append(
            f'<polyline class="series series-{escape(line.key)}" points="{points}">'
            f"<title>{escape(line.label)}</title></polyline>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  (every text above is escaped)


def _grid(top_value: int) -> list[str]:
    """Horizontal grid lines with their values on the left."""
    parts = []
    for step in range(GRID_LINES + 1):
        value = top_value * step // GRID_LINES
        y = _number(y_at(value, top_value))
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y}" text-anchor="end">{value}</text>')
    return parts


def _date_labels(days: Sequence[date]) -> list[str]:
    """A date under every ``LABEL_EVERY``-th day and under the last one."""
    count = len(days)
    marks = sorted({*range(0, count, LABEL_EVERY), count - 1}) if count else []
    y = HEIGHT - BOTTOM + 20
    return [
        f'<text class="axis" x="{_number(x_at(i, count))}" y="{y}" text-anchor="middle">'
        f"{days[i].strftime('%d.%m')}</text>"
        for i in marks
    ]
