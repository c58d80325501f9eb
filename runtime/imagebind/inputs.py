"""ImageBind items -> graph feeds: reading files and applying each modality's preprocessing.

Accepted items per modality (what :func:`runtime.embed` takes):

=========  ==========================================================================
vision     a path, a PIL image, or an ``(H, W, 3)`` uint8 RGB array
text       a string
audio      a path (``.wav`` via the standard library; ``.flac`` needs ``soundfile``), a
           ``(waveform, sample_rate)`` pair, or a 1-D float array taken as 16 kHz
depth      a path (8/16-bit single-channel image) or a 2-D float array ``(224, 224)``
thermal    same as depth
imu        a ``(6, 2000)`` float array (accelerometer xyz, gyroscope xyz)
=========  ==========================================================================

The settings come from the bundle's constants, ``ImageBindConstants.modalities[m].preprocess``
(:mod:`runtime.imagebind.constants`).
"""
from __future__ import annotations

import os
import wave
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.constants import Constants
from runtime.imagebind.constants import AudioPreprocess, VisionPreprocess
from runtime.imagebind.preprocess import (as_depth_input, as_imu_input, as_thermal_input, load_and_transform_audio,
                                          load_and_transform_vision)
from runtime.tokenizer import ClipTokenizer

_PCM_SCALE = {1: 128.0, 2: 32768.0, 4: 2147483648.0}


def prepare(modality: str, items: Sequence[Any], preprocess: Constants,
            tokenizer: ClipTokenizer | None = None) -> tuple[np.ndarray, list[int]]:
    """The graph feed for ``items`` (all clips of all items stacked) and the clip count of each item;
    ``preprocess``: the modality's preprocessing constants."""
    if isinstance(items, (str, bytes, os.PathLike)) or not isinstance(items, Sequence):
        raise TypeError(f"expected a list of {modality} items, found {type(items).__name__}; wrap one item in a list")
    if not items:
        raise ValueError(f"expected at least one {modality} item, found an empty list")
    if modality == "text":
        bad = [type(t).__name__ for t in items if not isinstance(t, str)]
        if bad:
            raise TypeError(f"expected text items to be strings, found {bad}")
        return tokenizer(list(items), context_length=preprocess.context_length), [1] * len(items)
    if modality == "audio":
        clips = [audio_clips(item, preprocess) for item in items]
        return np.concatenate(clips), [len(c) for c in clips]
    loaders = {"vision": lambda item: vision_clip(item, preprocess),
               "depth": lambda item: single_channel(item, "depth"),
               "thermal": lambda item: single_channel(item, "thermal"), "imu": as_imu_input}
    if modality not in loaders:
        raise ValueError(f"unknown modality {modality!r}; expected one of vision, text, audio, depth, thermal, imu")
    return np.stack([loaders[modality](item) for item in items]), [1] * len(items)


def vision_clip(image, preprocess: VisionPreprocess) -> np.ndarray:
    """One image -> ``(3, frames, 224, 224)``: the normalised image repeated to the stem's frames."""
    pixels = load_and_transform_vision(image, resize=preprocess.resize, center_crop=preprocess.crop,
                                       mean=preprocess.mean, std=preprocess.std)
    return np.repeat(pixels[:, None], preprocess.frames, axis=1)


def audio_clips(item, preprocess: AudioPreprocess) -> np.ndarray:
    """One audio item -> ``(clips, 1, mel, frames)`` with the official loader's parameters."""
    if isinstance(item, (str, os.PathLike)):
        waveform, rate = read_audio(item)
    elif isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"expected an audio pair (waveform, sample_rate), found a tuple of {len(item)}")
        waveform, rate = item
    else:
        waveform, rate = np.asarray(item), preprocess.sample_rate
        if waveform.ndim != 1:
            raise ValueError(f"expected a bare audio array to be 1-D (taken as {rate} Hz), found shape "
                             f"{waveform.shape}; pass (waveform, sample_rate) for multi-channel audio")
    if int(rate) != rate or rate <= 0:
        raise ValueError(f"expected a positive integer sample rate, found {rate!r}")
    return load_and_transform_audio(
        np.asarray(waveform), int(rate), num_mel_bins=preprocess.num_mel_bins,
        target_length=preprocess.target_length, target_sample_rate=preprocess.sample_rate,
        clip_duration=preprocess.clip_duration, clips_per_video=preprocess.clips_per_video,
        mean=preprocess.mean, std=preprocess.std)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """``(channels, samples)`` float32 in [-1, 1] and the sample rate, as ``torchaudio.load`` gives them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.suffix.lower() == ".wav":
        return read_wav(path)
    if path.suffix.lower() == ".flac":
        try:
            import soundfile
        except ImportError:
            raise ImportError(f"reading {path} needs the 'soundfile' package (pip install soundfile), which is not "
                              "installed; convert it to .wav or pass (waveform, sample_rate) instead") from None
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(rate)
    raise ValueError(f"expected a .wav or .flac audio file, found {path.name!r}")


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """PCM wav (8/16/24/32-bit) with the standard-library ``wave`` module."""
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path} is not a PCM wav file the 'wave' module can read: {exc}") from exc
    if width == 3:  # 24-bit little endian -> int32 in the top three bytes
        packed = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        samples = (packed[:, 0].astype(np.int32) << 8 | packed[:, 1].astype(np.int32) << 16
                   | packed[:, 2].astype(np.int32) << 24)
        scale = _PCM_SCALE[4]
    elif width in _PCM_SCALE:
        dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
        samples = np.frombuffer(raw, dtype=dtype).astype(np.float64) - (128.0 if width == 1 else 0.0)
        scale = _PCM_SCALE[width]
    else:
        raise ValueError(f"expected 8, 16, 24 or 32-bit PCM in {path}, found {8 * width}-bit samples")
    waveform = (np.asarray(samples, dtype=np.float64) / scale).astype(np.float32)
    return np.ascontiguousarray(waveform.reshape(-1, channels).T), rate


def single_channel(item, modality: str) -> np.ndarray:
    """Depth / thermal: a 2-D array as is, or an image file scaled to [0, 1], short side resized to 224 and
    centre-cropped (ImageBind ships no loader for these; this one is the runtime's own)."""
    if isinstance(item, (str, os.PathLike)):
        item = read_single_channel(item)
    checks = {"depth": as_depth_input, "thermal": as_thermal_input}
    return checks[modality](item)


def read_single_channel(path: str | os.PathLike, size: int = 224) -> np.ndarray:
    import cv2

    data = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise FileNotFoundError(f"could not read an image from {os.fspath(path)!r}")
    if data.ndim == 3:
        raise ValueError(f"expected a single-channel image in {os.fspath(path)}, found {data.shape[2]} channels")
    scale = float(np.iinfo(data.dtype).max) if np.issubdtype(data.dtype, np.integer) else 1.0
    image = data.astype(np.float32) / np.float32(scale)
    height, width = image.shape
    short = min(height, width)
    new_h, new_w = int(size * height / short), int(size * width / short)
    if (new_h, new_w) != (height, width):
        interpolation = cv2.INTER_AREA if short > size else cv2.INTER_CUBIC
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    return image[top: top + size, left: left + size]
