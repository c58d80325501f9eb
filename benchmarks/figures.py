"""Line plots for the benchmark report, drawn with OpenCV (no matplotlib on the devices we target)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

_SIZE = (640, 420)  # width, height
_MARGIN = {"left": 80, "right": 170, "top": 40, "bottom": 60}
_COLOURS = [(200, 80, 20), (30, 30, 200), (40, 150, 40), (150, 40, 150), (20, 140, 200), (90, 90, 90)]
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    return list(np.linspace(low, high, count))


def line_plot(path: str | Path, title: str, x_label: str, y_label: str,
              series: Mapping[str, Sequence[tuple[float, float]]]) -> Path:
    """Write a PNG with one line (and point markers) per series of (x, y) points; returns the path."""
    import cv2

    width, height = _SIZE
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    points = [p for values in series.values() for p in values]
    if not points:
        raise ValueError(f"line_plot {title!r}: expected at least one point, found none")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y_low, y_high = 0.0, max(ys) * 1.1 if max(ys) > 0 else 1.0
    left, right = _MARGIN["left"], width - _MARGIN["right"]
    top, bottom = _MARGIN["top"], height - _MARGIN["bottom"]

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        return (int(left + (x - x_low) / (x_high - x_low) * (right - left)),
                int(bottom - (y - y_low) / (y_high - y_low) * (bottom - top)))

    cv2.rectangle(image, (left, top), (right, bottom), (0, 0, 0), 1)
    for x in sorted(set(xs)):
        px, _ = to_pixel(x, y_low)
        cv2.line(image, (px, bottom), (px, bottom + 5), (0, 0, 0), 1)
        cv2.putText(image, f"{x:g}", (px - 10, bottom + 20), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for y in _ticks(y_low, y_high):
        _, py = to_pixel(x_low, y)
        cv2.line(image, (left - 5, py), (right, py), (225, 225, 225), 1)
        cv2.putText(image, f"{y:.3g}", (5, py + 4), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, title, (left, 25), _FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, x_label, ((left + right) // 2 - 30, height - 15), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, y_label, (5, top - 8), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for index, (name, values) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        pixels = [to_pixel(x, y) for x, y in sorted(values)]
        for a, b in zip(pixels, pixels[1:]):
            cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
        for p in pixels:
            cv2.circle(image, p, 4, colour, -1, cv2.LINE_AA)
        legend_y = top + 15 + 22 * index
        cv2.line(image, (right + 10, legend_y), (right + 35, legend_y), colour, 2, cv2.LINE_AA)
        cv2.putText(image, name[:18], (right + 40, legend_y + 4), _FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write the plot {path}")
    return path
