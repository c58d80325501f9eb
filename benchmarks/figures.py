"""Line plots of the benchmark suites as SVG text: written beside the JSON by ``python -m benchmarks`` and drawn
on the generated docs page from the JSON's plot data (``docs/hooks/benchmark_pages.py``). Plain text, no
plotting library: the same function serves both."""
from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Mapping, Sequence

WIDTH, HEIGHT = 640, 400
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 180, 40, 55  # margins around the plot area
_COLOURS = ("#d4501a", "#1f4fc8", "#2f9e3a", "#9a2f96", "#1c8cc8", "#5a5a5a")
_Y_TICKS = 5

Series = Mapping[str, Sequence[Sequence[float]]]


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">{escape(text)}</text>'


def svg_line_plot(title: str, x_label: str, y_label: str, series: Series) -> str:
    """An SVG document: one line with point markers per series of (x, y) points, y from 0, a legend."""
    points = [(float(x), float(y)) for values in series.values() for x, y in values]
    if not points:
        raise ValueError(f"line plot {title!r}: expected at least one point, found none")
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x_low, x_high = min(xs), (max(xs) if max(xs) > min(xs) else min(xs) + 1)
    y_high = max(ys) * 1.1 if max(ys) > 0 else 1.0
    left, right, top, bottom = _LEFT, WIDTH - _RIGHT, _TOP, HEIGHT - _BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x_low) / (x_high - x_low) * (right - left), bottom - y / y_high * (bottom - top))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>', _text(left, 24, title, size=14)]
    for step in range(_Y_TICKS + 1):
        value = y_high * step / _Y_TICKS
        _, py = at(x_low, value)
        parts += [f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="#e4e4e4"/>',
                  _text(left - 6, py + 4, f"{value:.3g}", "end", 11)]
    for x in sorted(set(xs)):
        px, _ = at(x, 0.0)
        parts += [f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 5}" stroke="black"/>',
                  _text(px, bottom + 18, f"{x:g}", "middle", 11)]
    parts += [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="black"/>',
              _text((left + right) / 2, HEIGHT - 15, x_label, "middle"), _text(8, top - 8, y_label, size=11)]
    for index, (name, values) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        pixels = [at(float(x), float(y)) for x, y in sorted(values)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pixels)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"/>' for px, py in pixels]
        legend = top + 12 + 20 * index
        parts += [f'<line x1="{right + 10}" y1="{legend}" x2="{right + 34}" y2="{legend}" stroke="{colour}" '
                  'stroke-width="2"/>', _text(right + 40, legend + 4, name[:22], size=11)]
    return "\n".join(parts + ["</svg>"]) + "\n"


def line_plot(path: str | Path, title: str, x_label: str, y_label: str, series: Series) -> Path:
    """Write :func:`svg_line_plot` to ``path`` (an ``.svg`` file); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg_line_plot(title, x_label, y_label, series), encoding="utf-8")
    return path
