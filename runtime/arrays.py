"""Array maths shared by the pipelines and the tools above them: softmax, and how closely two results agree
(one definition of cosine, max/mean abs error, SNR and PSNR for export checks, calibration reports,
benchmarks and tests)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so large logits do not overflow."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@dataclass(frozen=True)
class Agreement:
    """How closely ``found`` agrees with ``reference`` (both flattened, in float64)."""

    max_abs: float
    mean_abs: float
    cosine: float  # 1.0 for two all-zero arrays, NaN when only one is all zeros
    snr_db: float  # signal = reference; inf when identical, -inf for an all-zero reference

    def as_dict(self) -> dict[str, float]:
        return {"cosine": self.cosine, "max_abs": self.max_abs, "mean_abs": self.mean_abs, "snr_db": self.snr_db}


def agreement(reference: np.ndarray, found: np.ndarray) -> Agreement:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(found, dtype=np.float64).ravel()
    if ref.shape != got.shape:
        raise ValueError(f"shape mismatch: expected {np.shape(reference)}, found {np.shape(found)}")
    if not ref.size:
        return Agreement(0.0, 0.0, 1.0, float("inf"))
    diff = got - ref
    norms = np.linalg.norm(ref) * np.linalg.norm(got)
    cosine = float(ref @ got / norms) if norms > 0 else (1.0 if not ref.any() and not got.any() else float("nan"))
    signal, noise = float(ref @ ref), float(diff @ diff)
    snr = float("inf") if not noise else (10.0 * math.log10(signal / noise) if signal else float("-inf"))
    return Agreement(float(np.abs(diff).max()), float(np.abs(diff).mean()), cosine, snr)


def psnr(reference: np.ndarray, found: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two images or videos (uint8 by default: ``peak`` 255); inf when identical."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(found, np.float64)) ** 2))
    return 10.0 * math.log10(peak ** 2 / mse) if mse else float("inf")


def max_relative_error(reference: np.ndarray, found: np.ndarray) -> float:
    """The largest absolute error over the largest reference magnitude (e.g. sampler against sampler)."""
    return agreement(reference, found).max_abs / float(np.abs(np.asarray(reference, np.float64)).max())
