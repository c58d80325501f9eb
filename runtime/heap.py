"""Handing freed heap memory back to the operating system (glibc's ``malloc_trim``).

glibc's malloc keeps freed blocks in its arenas, and after a large block is freed it
raises its mmap threshold (up to 32 MiB), so most tensors of a closed ONNX Runtime or
OpenVINO session (a released UNet's weights are thousands of blocks of a few MiB) come
from, and stay in, the heap: free, yet resident. A low-memory pipeline calls
:func:`trim` after closing a component so the next one starts from the returned pages.
Where there is no ``malloc_trim`` (musl, macOS, Windows) :func:`trim` does nothing.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Callable


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library symbols here, or no malloc_trim in them
        return None


def trim() -> bool:
    """Return the heap's free pages to the operating system; False where the C library has no way to."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True
