"""Line charts as hand-written SVG: no plotting dependency, embeddable in a markdown artifact."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 360
LEFT, RIGHT, TOP, BOTTOM = 60, 170, 40, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Line:
    """One series: solid through ``points``, dashed through ``projection`` (a forecast)."""

    label: str
    points: Sequence[tuple[float, float]]
    projection: Sequence[tuple[float, float]] = ()


def line_chart(
    title: str,
    lines: Sequence[Line],
    *,
    x_label: str,
    y_label: str,
    y_max: float | None = None,
    limit_y: float | None = None,
) -> str:
    """An SVG document plotting ``lines``; ``limit_y`` draws a horizontal limit line."""
    xs = [x for line in lines for x, _ in [*line.points, *line.projection]] or [0.0, 1.0]
    ys = [y for line in lines for _, y in [*line.points, *line.projection]] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    y1 = y_max if y_max is not None else max([*ys, limit_y or 0.0]) * 1.05
    y0 = min(0.0, min(ys))
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (min(y, y1) - y0) / (y1 - y0) * plot_h

    def path(points: Sequence[tuple[float, float]]) -> str:
        return " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="black"/>',
    ]
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        x = x0 + (x1 - x0) * i / 4
        parts.append(
            f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>'
            f'<line x1="{LEFT}" y1="{sy(y):.1f}" x2="{LEFT + plot_w}" y2="{sy(y):.1f}" '
            'stroke="#eee"/>'
            f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 15}" text-anchor="middle">{x:.0f}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2})">{escape(y_label)}</text>'
    )
    if limit_y is not None:
        parts.append(
            f'<line x1="{LEFT}" y1="{sy(limit_y):.1f}" x2="{LEFT + plot_w}" '
            f'y2="{sy(limit_y):.1f}" stroke="black" stroke-dasharray="2,3"/>'
            f'<text x="{LEFT + plot_w - 4}" y="{sy(limit_y) - 4:.1f}" text-anchor="end">'
            "limit</text>"
        )
    for i, line in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        if line.points:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'points="{path(line.points)}"/>'
            )
        if line.projection:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                f'stroke-dasharray="6,4" points="{path(line.projection)}"/>'
            )
        legend_y = TOP + 14 * i
        parts.append(
            f'<rect x="{LEFT + plot_w + 10}" y="{legend_y}" width="10" height="10" '
            f'fill="{colour}"/><text x="{LEFT + plot_w + 24}" y="{legend_y + 9}">'
            f"{escape(line.label[:22])}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
