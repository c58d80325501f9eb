"""Audio DSP in numpy: torchaudio's sinc resampler and Kaldi-compatible log-mel filterbank.

Both follow the torchaudio functions they replace (``torchaudio.functional.resample`` with
``sinc_interp_hann``, ``torchaudio.compliance.kaldi.fbank``) step for step, so features made on a
device match the ones the models were trained with.
"""
from __future__ import annotations

import math

import numpy as np

FLOAT32_EPSILON = float(np.finfo(np.float32).eps)  # Kaldi's log floor (torch.finfo(float).eps)


def resample_sinc(
    waveform: np.ndarray,
    orig_freq: int,
    new_freq: int,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> np.ndarray:
    """Resample the last axis from ``orig_freq`` to ``new_freq`` Hz like ``torchaudio.functional.resample``.

    Band-limited (windowed-sinc, Hann-squared window) interpolation with the rates reduced by their
    gcd; the kernel is computed in the waveform's float dtype, as torchaudio does. The output has
    ``ceil(n * new_freq / orig_freq)`` samples.
    """
    waveform = np.asarray(waveform)
    if not np.issubdtype(waveform.dtype, np.floating):
        raise TypeError(f"expected a float waveform, found dtype {waveform.dtype}")
    orig_freq, new_freq = _positive_int(orig_freq, "orig_freq"), _positive_int(new_freq, "new_freq")
    if orig_freq == new_freq:
        return waveform.copy()
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    kernel, width = sinc_resample_kernel(orig, new, lowpass_filter_width, rolloff, waveform.dtype)
    rows = waveform.reshape(-1, waveform.shape[-1])
    length = rows.shape[1]
    padded = np.pad(rows, ((0, 0), (width, width + orig)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1], axis=1)[:, ::orig]
    resampled = (frames @ kernel.T).reshape(rows.shape[0], -1)
    target_length = math.ceil(new * length / orig)
    return resampled[:, :target_length].reshape(waveform.shape[:-1] + (target_length,))


def sinc_resample_kernel(
    orig: int, new: int, lowpass_filter_width: int, rolloff: float, dtype=np.float32
) -> tuple[np.ndarray, int]:
    """The ``(new, 2 * width + orig)`` polyphase kernel for gcd-reduced rates, and ``width``.

    Row ``j`` holds the weights of the output sample at phase ``j / new`` (in input-sample units of
    the reduced rate) over the input samples ``-width .. width + orig - 1`` of its block.
    """
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=dtype)[None, :] / orig
    t = np.arange(0, -new, -1, dtype=dtype)[:, None] / new + idx
    t = np.clip(t * base_freq, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(t == 0, np.asarray(1.0, dtype=t.dtype), np.sin(t) / t)
    return (kernel * (window * (base_freq / orig))).astype(dtype, copy=False), width


def kaldi_fbank(
    signal: np.ndarray,
    sample_frequency: float = 16000.0,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis_coefficient: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> np.ndarray:
    """Log-mel filterbank ``(frames, num_mel_bins)`` of a 1-D signal, as ``torchaudio.compliance.kaldi.fbank``.

    Fixed choices (the ones ImageBind uses): ``window_type="hanning"`` (symmetric Hann),
    ``dither=0``, ``remove_dc_offset``, ``snip_edges``, ``round_to_power_of_two``, power spectrum,
    ``use_energy=False`` (so ``htk_compat`` changes nothing), ``use_log_fbank``, no mean subtraction.
    Computed in float64. ``high_freq <= 0`` counts down from Nyquist, as in Kaldi.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"expected a 1-D signal, found shape {signal.shape}")
    window_size = int(sample_frequency * frame_length_ms * 0.001)
    window_shift = int(sample_frequency * frame_shift_ms * 0.001)
    padded_size = 1 << max(window_size - 1, 0).bit_length()
    frames = _preprocessed_frames(signal, window_size, window_shift, preemphasis_coefficient)
    power = np.abs(np.fft.rfft(frames, n=padded_size, axis=1)) ** 2
    banks = mel_banks(num_mel_bins, padded_size, sample_frequency, low_freq, high_freq)
    return np.log(np.maximum(power @ banks.T, FLOAT32_EPSILON))


def _preprocessed_frames(
    signal: np.ndarray, window_size: int, window_shift: int, preemphasis_coefficient: float
) -> np.ndarray:
    """Frames ``(num_frames, window_size)``: DC removed, pre-emphasised, Hann-windowed (snip_edges)."""
    if signal.shape[0] < window_size:
        raise ValueError(
            f"expected at least one frame of {window_size} samples, found a signal of {signal.shape[0]}"
        )
    num_frames = 1 + (signal.shape[0] - window_size) // window_shift
    frames = np.lib.stride_tricks.sliding_window_view(signal, window_size)[::window_shift][:num_frames]
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - preemphasis_coefficient * previous
    return frames * symmetric_hann(window_size)


def symmetric_hann(size: int) -> np.ndarray:
    """``0.5 - 0.5 cos(2 pi j / (size - 1))`` (``torch.hann_window(size, periodic=False)``)."""
    if size == 1:
        return np.ones(1)
    return 0.5 - 0.5 * np.cos(2.0 * math.pi * np.arange(size) / (size - 1))


def mel_scale(freq):
    """HTK mel scale ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def mel_banks(
    num_bins: int, padded_window_size: int, sample_frequency: float, low_freq: float, high_freq: float
) -> np.ndarray:
    """Kaldi triangular mel filters ``(num_bins, padded_window_size // 2 + 1)``; the Nyquist column is 0."""
    num_fft_bins = padded_window_size // 2
    nyquist = 0.5 * sample_frequency
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(
            f"expected 0 <= low_freq < high_freq <= Nyquist ({nyquist}), found low {low_freq}, high {high_freq}"
        )
    mel_low, mel_high = float(mel_scale(low_freq)), float(mel_scale(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + np.arange(num_bins)[:, None] * delta
    left, center, right = edges, edges + delta, edges + 2.0 * delta
    mel = mel_scale(sample_frequency / padded_window_size * np.arange(num_fft_bins))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1)))


def _positive_int(value, name: str) -> int:
    if int(value) != value or value <= 0:
        raise ValueError(f"expected {name} to be a positive integer rate in Hz, found {value!r}")
    return int(value)
