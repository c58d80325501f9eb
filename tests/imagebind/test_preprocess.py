"""ImageBind preprocessing in numpy: golden cases of the official loaders, an independent resampler
check, and shape/invariant properties for random rates, durations, channels and image sizes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.imagebind.audio import kaldi_fbank, resample_sinc
from runtime.imagebind.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    as_depth_input,
    as_imu_input,
    as_thermal_input,
    clip_sample_bounds,
    load_and_transform_audio,
    load_and_transform_vision,
    resize_and_crop_uint8,
)


def _golden(reference, name):
    folder = reference / "imagebind" / "golden" / name
    case = json.loads((folder / "case.json").read_text())
    with np.load(folder / "io.npz") as io:
        return case, {key: io[key] for key in io.files}


def _audio_kwargs(config):
    return dict(
        num_mel_bins=config["num_mel_bins"],
        target_length=config["target_length"],
        target_sample_rate=config["sample_rate"],
        clip_duration=config["clip_duration"],
        clips_per_video=config["clips_per_video"],
        mean=config["mean"],
        std=config["std"],
    )


# --------------------------------------------------------------------------- golden cases


def test_vision_golden(reference):
    case, io = _golden(reference, "preprocess_vision")
    config = case["config"]
    kwargs = dict(resize=config["resize"], center_crop=config["center_crop"])
    cropped = resize_and_crop_uint8(io["image_uint8_hwc"], **kwargs)
    np.testing.assert_array_equal(cropped, io["debug_cropped_uint8_hwc"])  # Pillow bit for bit
    pixels = load_and_transform_vision(io["image_uint8_hwc"], mean=config["mean"], std=config["std"], **kwargs)
    assert pixels.dtype == np.float32 and pixels.shape == io["pixels"].shape[1:]
    np.testing.assert_allclose(pixels, io["pixels"][0], atol=case["atol"], rtol=case["rtol"])
    assert np.abs(pixels - io["pixels"][0]).max() < 1e-6


@pytest.mark.parametrize("name", ["preprocess_audio", "preprocess_audio_resample"])
def test_audio_golden(reference, name):
    case, io = _golden(reference, name)
    waveform, sample_rate = io["waveform"], int(io["sample_rate"])
    original = waveform.copy()
    clips = load_and_transform_audio(waveform, sample_rate, **_audio_kwargs(case["config"]))
    np.testing.assert_array_equal(waveform, original)  # the in-place quirk stays on our own copy
    assert clips.dtype == np.float32 and clips.shape == io["clips"].shape[1:]
    np.testing.assert_allclose(clips, io["clips"][0], atol=case["atol"], rtol=case["rtol"])
    assert np.abs(clips - io["clips"][0]).max() < 2e-4


@pytest.mark.parametrize("name", ["preprocess_audio", "preprocess_audio_resample"])
def test_audio_clip_bounds_golden(reference, name):
    case, io = _golden(reference, name)
    config = case["config"]
    num_samples = math.ceil(io["waveform"].shape[1] * config["sample_rate"] / int(io["sample_rate"]))
    bounds = clip_sample_bounds(num_samples, config["sample_rate"], config["clip_duration"], config["clips_per_video"])
    assert bounds == [tuple(row) for row in io["clip_bounds"].tolist()]


# --------------------------------------------------------------------------- resampler and fbank


def _direct_windowed_sinc(signal, orig_rate, new_rate, width=6, rolloff=0.99):
    """Every output sample as a float64 sum over all inputs of the Hann-squared windowed sinc."""
    base = rolloff * min(orig_rate, new_rate)
    out_len = math.ceil(len(signal) * new_rate / orig_rate)
    times = np.arange(len(signal))[None, :] / orig_rate - np.arange(out_len)[:, None] / new_rate
    u = base * times
    window = np.where(np.abs(u) <= width, np.cos(np.pi * u / (2 * width)) ** 2, 0.0)
    return (np.sinc(u) * window * (base / orig_rate)) @ signal


@pytest.mark.parametrize("orig_rate,new_rate", [(22050, 16000), (48000, 16000), (8000, 16000), (16000, 44100), (11025, 16000)])
def test_resampler_matches_direct_windowed_sinc(orig_rate, new_rate):
    signal = np.random.default_rng(orig_rate + new_rate).standard_normal(257)
    expected = _direct_windowed_sinc(signal, orig_rate, new_rate)
    np.testing.assert_allclose(resample_sinc(signal, orig_rate, new_rate), expected, rtol=0, atol=1e-10)
    float32 = resample_sinc(signal.astype(np.float32)[None], orig_rate, new_rate)
    assert float32.dtype == np.float32 and float32.shape == (1, expected.shape[0])
    # torchaudio computes the kernel in the waveform's dtype: float32 sin/cos arguments cost ~1e-5
    np.testing.assert_allclose(float32[0], expected, rtol=0, atol=1e-4)


def test_resampler_keeps_a_low_tone():
    time_16k = np.arange(16000) / 16000
    upsampled = resample_sinc(np.sin(2 * np.pi * 440 * time_16k), 16000, 48000)
    time_48k = np.arange(48000) / 48000
    interior = slice(600, -600)  # away from the zero-padded edges
    np.testing.assert_allclose(upsampled[interior], np.sin(2 * np.pi * 440 * time_48k)[interior], atol=2e-3)


def test_fbank_peaks_at_the_tone_and_counts_frames():
    time = np.arange(16000) / 16000
    fbank = kaldi_fbank(np.sin(2 * np.pi * 1000 * time))
    assert fbank.shape == (1 + (16000 - 400) // 160, 128)
    mel_centres = np.linspace(1127 * np.log1p(20 / 700), 1127 * np.log1p(8000 / 700), 130)[1:-1]
    expected_bin = np.argmin(np.abs(mel_centres - 1127 * np.log1p(1000 / 700)))
    assert abs(int(np.argmax(fbank.mean(axis=0))) - expected_bin) <= 1


def test_fbank_rejects_a_signal_shorter_than_one_frame():
    with pytest.raises(ValueError, match="at least one frame of 400 samples"):
        kaldi_fbank(np.zeros(399))


# --------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(
    rate=st.integers(8, 96).map(lambda k: 500 * k),
    duration=st.floats(0.05, 7.0),
    channels=st.integers(1, 3),
    clips_per_video=st.integers(1, 4),
)
def test_audio_shapes_for_any_rate_duration_and_channels(rate, duration, channels, clips_per_video):
    samples = max(int(duration * rate), 1)
    waveform = np.random.default_rng(samples).uniform(-1, 1, (channels, samples)).astype(np.float32)
    clips = load_and_transform_audio(waveform, rate, clips_per_video=clips_per_video)
    assert clips.shape == (clips_per_video, 1, 128, 204) and clips.dtype == np.float32
    assert np.isfinite(clips).all()
    num_16k = math.ceil(samples * 16000 / rate)
    bounds = clip_sample_bounds(num_16k, clips_per_video=clips_per_video)
    frames = [1 + (min(end, num_16k) - start - 400) // 160 for start, end in bounds]
    for clip, count in zip(clips, frames):  # beyond the real frames: zero padding, normalised
        np.testing.assert_allclose(clip[0, :, count:], 4.268 / 9.138, rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(num_samples=st.integers(400, 200_000), clips_per_video=st.integers(1, 6))
def test_clip_bounds_are_two_second_windows_spread_over_the_waveform(num_samples, clips_per_video):
    bounds = clip_sample_bounds(num_samples, clips_per_video=clips_per_video)
    assert len(bounds) == clips_per_video
    starts = [start for start, _ in bounds]
    assert starts[0] == 0 and starts == sorted(starts)
    assert all(end - start == 32000 for start, end in bounds)
    if num_samples >= 32000 and clips_per_video > 1:
        assert num_samples - 1 <= bounds[-1][1] <= num_samples


@settings(max_examples=25, deadline=None)
@given(height=st.integers(8, 400), width=st.integers(8, 400), value=st.integers(0, 255))
def test_vision_shape_and_constant_image(height, width, value):
    if max(height, width) > 4 * min(height, width):
        height = width = min(height, width) * 2
    image = np.full((height, width, 3), value, dtype=np.uint8)
    pixels = load_and_transform_vision(image)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    expected = (value / 255.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    np.testing.assert_allclose(pixels, np.broadcast_to(expected[:, None, None], pixels.shape), atol=1e-5)


def test_vision_rejects_non_rgb_arrays():
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        load_and_transform_vision(np.zeros((224, 224), dtype=np.uint8))


def test_depth_thermal_imu_checks():
    assert as_depth_input(np.zeros((224, 224))).shape == (1, 224, 224)
    assert as_thermal_input(np.zeros((1, 224, 224), dtype=np.float64)).dtype == np.float32
    assert as_imu_input(np.zeros((6, 2000))).shape == (6, 2000)
    with pytest.raises(ValueError, match="expected depth of shape"):
        as_depth_input(np.zeros((3, 224, 224)))
    with pytest.raises(ValueError, match=r"expected imu of shape \(6, 2000\)"):
        as_imu_input(np.zeros((2000, 6)))
