"""A small text progress bar for long loops (sampling steps, AR decoding), on stderr."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar(i)`` after each of ``total`` steps; redraws one line, finishes with a newline."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, width: int = 30):
        self.label, self.total, self.width = label, max(int(total), 1), width
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.perf_counter()

    def __call__(self, done: int) -> None:
        done = min(int(done), self.total)
        filled = self.width * done // self.total
        elapsed = time.perf_counter() - self.started
        rate = f"{elapsed / done:.2f} s/step" if done else ""
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} {rate}")
        if done == self.total:
            self.stream.write(f" ({elapsed:.1f} s)\n")
        self.stream.flush()
