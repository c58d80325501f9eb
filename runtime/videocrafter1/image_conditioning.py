"""Image conditioning for VideoCrafter1 I2V, in numpy, as the official pipeline prepares it.

1. The image is read as RGB and resized to the video resolution with OpenCV's
   bilinear filter on float32 pixels, then mapped to [-1, 1]
   (``scripts/evaluation/funcs.py: load_image_batch``).
2. The CLIP embedder resizes that to 224x224 like ``kornia.geometry.resize(...,
   interpolation="bicubic", align_corners=True, antialias=True)``: a Gaussian blur
   (reflect border) when downscaling, then bicubic interpolation (A = -0.75,
   align_corners); maps to [0, 1] and normalises with the CLIP mean and std.
3. The unconditional branch embeds an all-zeros 224x224 image given at step 2.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from runtime.images import load_rgb

CUBIC_A = -0.75


def to_video_frame(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """HxWx3 uint8 -> (3, height, width) float32 in [-1, 1], resized as the official loader does."""
    import cv2

    resized = cv2.resize(rgb.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.transpose((resized / np.float32(255.0) - np.float32(0.5)) * np.float32(2.0), (2, 0, 1))


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float32) - size // 2
    weights = np.exp(-(x**2) / np.float32(2.0 * sigma**2))
    return weights / weights.sum()


def _blur_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    half = len(kernel) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    padded = np.pad(x, pad, mode="reflect")
    length = x.shape[axis]
    return sum(w * np.take(padded, np.arange(i, i + length), axis=axis) for i, w in enumerate(kernel))


def _cubic(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    near = ((CUBIC_A + 2) * t - (CUBIC_A + 3)) * t * t + 1
    far = ((CUBIC_A * t - 5 * CUBIC_A) * t + 8 * CUBIC_A) * t - 4 * CUBIC_A
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of bicubic interpolation with align_corners=True, borders clamped."""
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    matrix = np.zeros((size_out, size_in), dtype=np.float64)
    for i in range(size_out):
        real = i * scale
        base = int(np.floor(real))
        frac = real - base
        for offset in (-1, 0, 1, 2):
            matrix[i, min(max(base + offset, 0), size_in - 1)] += _cubic(np.array(frac - offset))
    return matrix


def antialiased_bicubic_resize(x: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) float32 -> (C, size, size), as kornia's resize(bicubic, align_corners=True, antialias=True)."""
    height, width = x.shape[1:]
    if (height, width) == (size, size):
        return x
    factors = (height / size, width / size)
    if max(factors) > 1:
        for axis, factor in ((1, factors[0]), (2, factors[1])):
            sigma = max((factor - 1.0) / 2.0, 0.001)
            ksize = int(max(2.0 * 2 * sigma, 3))
            ksize += 1 - ksize % 2
            x = _blur_axis(x, _gaussian_kernel(ksize, sigma), axis)
    rows, cols = bicubic_matrix(height, size), bicubic_matrix(width, size)
    return (rows @ x.astype(np.float64) @ cols.T).astype(np.float32)


def clip_pixels(frame: np.ndarray, size: int, mean, std) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (3, size, size) normalised CLIP input."""
    resized = antialiased_bicubic_resize(frame.astype(np.float32), size)
    unit = (resized + np.float32(1.0)) / np.float32(2.0)
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return (unit - mean) / std


def conditioning_pixels(image: Any, *, height: int, width: int, size: int, mean, std) -> np.ndarray:
    """Any supported image -> (1, 3, size, size) float32 for the image encoder."""
    return clip_pixels(to_video_frame(load_rgb(image), height, width), size, mean, std)[None]


def unconditional_pixels(size: int, mean, std) -> np.ndarray:
    """The official unconditional image: zeros given to the embedder, i.e. mid-grey after its mapping."""
    return clip_pixels(np.zeros((3, size, size), dtype=np.float32), size, mean, std)[None]
