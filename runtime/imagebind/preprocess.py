"""ImageBind's official data loading (``imagebind/data.py``) in numpy, plus input checks for the
modalities the official repo ships no loader for (depth, thermal, IMU).

- vision: Pillow-exact bicubic resize of the short side to 224, centre crop, CLIP normalisation;
- audio: torchaudio resampling to 16 kHz, pytorchvideo's constant clip sampler, the official
  in-place mean subtraction, Kaldi fbank, pad/cut to 204 frames, AudioSet normalisation.
"""
from __future__ import annotations

import logging
import math
import os
from fractions import Fraction

import numpy as np

from runtime.imagebind.audio import kaldi_fbank, resample_sinc

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138
IMAGE_SIZE = 224
IMU_SHAPE = (6, 2000)

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point coefficient precision for 8-bit images
_BICUBIC_SUPPORT = 2.0

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- vision


def load_and_transform_vision(
    image,
    resize: int = IMAGE_SIZE,
    center_crop: int = IMAGE_SIZE,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> np.ndarray:
    """One image -> ``(3, center_crop, center_crop)`` float32, as ``load_and_transform_vision_data``.

    ``image``: an ``(H, W, 3)`` uint8 RGB array, a file path, or a PIL image (converted to RGB).
    """
    cropped = resize_and_crop_uint8(as_rgb_uint8(image), resize, center_crop)
    pixels = cropped.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None, None]
    return (pixels - mean32) / std32


def resize_and_crop_uint8(rgb: np.ndarray, resize: int = IMAGE_SIZE, center_crop: int = IMAGE_SIZE) -> np.ndarray:
    """torchvision ``Resize(resize, BICUBIC)`` on a PIL image, then ``CenterCrop(center_crop)``; uint8 HWC."""
    height, width = rgb.shape[:2]
    new_height, new_width = short_side_size(height, width, resize)
    if (new_height, new_width) != (height, width):
        rgb = pillow_bicubic_resize(rgb, new_height, new_width)
    return center_crop_hwc(rgb, center_crop)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's output size for an int ``size``: short side ``size``, long side truncated."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def center_crop_hwc(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``center_crop`` offsets (round half to even); the image must be at least ``size``."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"expected an image of at least {size}x{size} to crop, found {height}x{width}")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image[top : top + size, left : left + size]


def pillow_bicubic_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``PIL.Image.resize((width, height), BICUBIC)`` of a uint8 ``(H, W, C)`` array, bit for bit.

    Pillow resamples horizontally then vertically with an antialiased Keys cubic (a = -0.5),
    fixed-point coefficients and a uint8 intermediate image.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) array, found {image.dtype} {image.shape}")
    horizontal = _resample_axis(image, width, axis=1)
    return _resample_axis(horizontal, height, axis=0)


def _resample_axis(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = image.shape[axis]
    if in_size == out_size:
        return image
    first, weights = _pillow_coefficients(in_size, out_size)
    taps = np.minimum(first[:, None] + np.arange(weights.shape[1]), in_size - 1)
    source = np.moveaxis(image, axis, 0)
    total = np.full((out_size,) + source.shape[1:], 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    trailing = (1,) * (source.ndim - 1)
    for tap in range(weights.shape[1]):  # int32 accumulation, as Pillow's (it cannot overflow)
        total += source[taps[:, tap]].astype(np.int32) * weights[:, tap].reshape((out_size,) + trailing)
    result = np.clip(total >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(result, 0, axis)


def _pillow_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First input index per output and fixed-point weights ``(out_size, ksize)`` (Pillow's precompute_coeffs)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = _BICUBIC_SUPPORT * filter_scale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    last = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    offsets = np.arange(ksize)
    inside = offsets[None, :] < (last - first)[:, None]
    x = ((first[:, None] + offsets[None, :]) - center[:, None] + 0.5) * (1.0 / filter_scale)
    weights = np.where(inside, _bicubic(x), 0.0)
    norm = np.zeros(out_size)
    for tap in range(ksize):  # Pillow sums the taps in order; keep its rounding
        norm += weights[:, tap]
    weights = np.where(norm[:, None] != 0.0, weights / np.where(norm == 0.0, 1.0, norm)[:, None], weights)
    scaled = weights * (1 << _PRECISION_BITS)
    fixed = np.trunc(np.where(weights < 0, scaled - 0.5, scaled + 0.5)).astype(np.int32)
    return first, fixed


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def as_rgb_uint8(image) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array from an array, a PIL image or a file path."""
    if isinstance(image, (str, os.PathLike)):
        return _read_rgb(os.fspath(image))
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, found {array.dtype} {array.shape}")
    return array


def _read_rgb(path: str) -> np.ndarray:
    """Decode with Pillow when installed (as the official loader), else OpenCV without EXIF rotation."""
    try:
        from PIL import Image
    except ImportError:
        import cv2

        bgr = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise FileNotFoundError(f"could not read an image from {path!r}") from None
        return np.ascontiguousarray(bgr[:, :, ::-1])
    with Image.open(path) as opened:
        return np.asarray(opened.convert("RGB"))


# --------------------------------------------------------------------------- audio


def load_and_transform_audio(
    waveform: np.ndarray,
    sample_rate: int,
    num_mel_bins: int = 128,
    target_length: int = 204,
    target_sample_rate: int = 16000,
    clip_duration: float = 2,
    clips_per_video: int = 3,
    mean: float = AUDIO_MEAN,
    std: float = AUDIO_STD,
) -> np.ndarray:
    """One waveform -> ``(clips, 1, num_mel_bins, target_length)`` float32, as ``load_and_transform_audio_data``.

    ``waveform``: ``(samples,)`` or ``(channels, samples)`` float in [-1, 1] at ``sample_rate`` Hz
    (what ``torchaudio.load`` returns). ``target_sample_rate`` is the official ``sample_rate``
    argument. Each clip's mean (over all channels) is subtracted in place on the shared buffer, in
    clip order, as the official code does on tensor views; the fbank uses channel 0.
    """
    buffer = _as_channels_first(waveform)
    if sample_rate != target_sample_rate:
        buffer = resample_sinc(buffer, sample_rate, target_sample_rate)
    clips = []
    for start, end in clip_sample_bounds(buffer.shape[1], target_sample_rate, clip_duration, clips_per_video):
        clip = buffer[:, start:end]
        clip -= np.float32(clip.mean(dtype=np.float64))  # in place: later overlapping clips see it
        clips.append(_melspec(clip[0], target_sample_rate, num_mel_bins, target_length))
    spectrograms = np.stack(clips)[:, None].astype(np.float32)
    return (spectrograms - np.float32(mean)) / np.float32(std)


def clip_sample_bounds(
    num_samples: int, sample_rate: int = 16000, clip_duration: float = 2, clips_per_video: int = 3
) -> list[tuple[int, int]]:
    """``[start, end)`` sample indices of pytorchvideo's ``ConstantClipsPerVideoSampler`` clips.

    Exact rational arithmetic on the float64 duration, floored to samples; ``end`` may pass the
    waveform's end (the slice then stops there).
    """
    if clips_per_video < 1:
        raise ValueError(f"expected clips_per_video >= 1, found {clips_per_video}")
    duration = num_samples / sample_rate
    max_start = Fraction(max(duration - float(clip_duration), 0))
    step = max_start / max(clips_per_video - 1, 1)
    length = Fraction(clip_duration)
    bounds = []
    for index in range(clips_per_video):
        start = step * index
        bounds.append((int(start * sample_rate), int((start + length) * sample_rate)))
        if step * (index + 1) > max_start:
            break
    return bounds


def _melspec(signal: np.ndarray, sample_rate: int, num_mel_bins: int, target_length: int) -> np.ndarray:
    """Official ``waveform2melspec`` after the mean subtraction: fbank, ``(mel, frames)``, pad with 0 / cut."""
    fbank = kaldi_fbank(signal, sample_frequency=sample_rate, num_mel_bins=num_mel_bins).T
    frames = fbank.shape[1]
    if abs(target_length - frames) / frames > 0.2:
        log.warning("audio clip has %d frames, padded or cut to %d (more than 20%% off)", frames, target_length)
    fitted = np.zeros((num_mel_bins, target_length))
    kept = min(frames, target_length)
    fitted[:, :kept] = fbank[:, :kept]
    return fitted


def _as_channels_first(waveform: np.ndarray) -> np.ndarray:
    """A float32 ``(channels, samples)`` copy (the caller's array is never modified)."""
    array = np.asarray(waveform)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"expected a float waveform of shape (samples,) or (channels, samples), found {array.dtype} {array.shape}"
        )
    return array.astype(np.float32, copy=True)


# --------------------------------------------------------------------------- depth, thermal, IMU


def as_depth_input(depth: np.ndarray) -> np.ndarray:
    """Check a depth map: ``(224, 224)`` or ``(1, 224, 224)`` -> ``(1, 224, 224)`` float32 (no official loader)."""
    return _single_channel_image(depth, "depth")


def as_thermal_input(thermal: np.ndarray) -> np.ndarray:
    """Check a thermal image: ``(224, 224)`` or ``(1, 224, 224)`` -> ``(1, 224, 224)`` float32 (no official loader)."""
    return _single_channel_image(thermal, "thermal")


def as_imu_input(imu: np.ndarray) -> np.ndarray:
    """Check an IMU window: ``(6, 2000)`` (accelerometer xyz, gyroscope xyz) -> float32."""
    array = np.asarray(imu)
    if array.shape != IMU_SHAPE:
        raise ValueError(f"expected imu of shape {IMU_SHAPE} (channels, samples), found {array.shape}")
    return array.astype(np.float32)


def _single_channel_image(image: np.ndarray, modality: str) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.shape != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"expected {modality} of shape ({IMAGE_SIZE}, {IMAGE_SIZE}) or (1, {IMAGE_SIZE}, {IMAGE_SIZE}), "
            f"found {array.shape}; ImageBind ships no {modality} loader, so resize it yourself"
        )
    return array.astype(np.float32)
