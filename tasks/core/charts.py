"""Line charts drawn by matplotlib as SVG, small enough to embed in a markdown artifact.

Each series is drawn solid through its points and dashed through its projection (a forecast);
their SVG groups carry the ids ``series-<label>`` and ``forecast-<label>`` so that a reader (or
a test) can find them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display: render to files only

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

WIDTH_IN, HEIGHT_IN = 7.2, 3.6


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
    """An SVG document (text) plotting ``lines``.

    Args:
        y_max: the top of the y axis (default: fitted to the data and ``limit_y``).
        limit_y: draws a dotted horizontal line labelled "limit" at this height.
    """
    figure, axes = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    try:
        for index, line in enumerate(lines):
            colour = f"C{index % 10}"
            if line.points:
                xs, ys = zip(*line.points, strict=True)
                axes.plot(xs, ys, color=colour, linewidth=2, label=line.label[:22])
                axes.get_lines()[-1].set_gid(f"series-{line.label}")
            if line.projection:
                xs, ys = zip(*line.projection, strict=True)
                axes.plot(xs, ys, color=colour, linewidth=1.5, linestyle="--")
                axes.get_lines()[-1].set_gid(f"forecast-{line.label}")
        if limit_y is not None:
            axes.axhline(limit_y, color="black", linestyle=":", linewidth=1)
            axes.annotate(
                "limit",
                (1, limit_y),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3),
                textcoords="offset points",
                ha="right",
                va="bottom",
            )
        top = y_max if y_max is not None else max(axes.get_ylim()[1], (limit_y or 0) * 1.08)
        axes.set_ylim(top=top)
        axes.set_ylim(bottom=min(0.0, axes.get_ylim()[0]))
        axes.set_title(title, fontsize=11)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.grid(color="#eeeeee")
        if lines:
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
        figure.tight_layout()
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
        return out.getvalue()
    finally:
        plt.close(figure)


def svg_data_uri(svg: str) -> str:
    """``data:image/svg+xml;base64,...``: an image markdown can embed without a file."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
