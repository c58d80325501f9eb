"""VideoCrafter1 I2V: image preprocessing, torch-vs-runtime parity, image sensitivity and errors."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

import runtime
from export.videocrafter1.bundle import build_modules, export_bundle
from export.videocrafter1.presets import tiny_i2v
from export.videocrafter1.reference_pipeline import clip_preprocess, generate_video_torch
from runtime.images import load_rgb
from runtime.videocrafter1.image_conditioning import clip_pixels, to_video_frame, unconditional_pixels
from runtime.arrays import psnr
from tests.paths import ASSETS

SAMPLE = ASSETS / "beach.png"
PROMPT = "a dog running on the beach"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "videocrafter1-tiny-i2v"
    export_bundle(tiny_i2v(), out, seed=0, log=lambda line: None)
    return runtime.VideoPipeline(out)


@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate])
@example(height=320, width=512, seed=0)
@given(height=st.integers(8, 700), width=st.integers(8, 700), seed=st.integers(0, 2**16))
def test_clip_resize_matches_torch_interpolate_and_blur(height, width, seed):
    frame = np.random.default_rng(seed).uniform(-1, 1, (3, height, width)).astype(np.float32)
    ours = clip_pixels(frame, 224, MEAN, STD)
    reference = clip_preprocess(torch.from_numpy(frame)[None], 224, MEAN, STD)[0].numpy()
    assert ours.shape == (3, 224, 224)
    # float32 blur and interpolation sums in another order: about 1e-4 on white noise in normalised units
    np.testing.assert_allclose(ours, reference, atol=3e-4, rtol=0)


def test_unconditional_image_is_grey_after_mapping():
    pixels = unconditional_pixels(224, MEAN, STD)[0]
    np.testing.assert_allclose(pixels[:, 0, 0], (0.5 - np.array(MEAN)) / np.array(STD), rtol=1e-6)
    assert np.ptp(pixels, axis=(1, 2)).max() == 0


@pytest.mark.parametrize("image, expected", [
    (np.full((5, 7), 9, np.uint8), (5, 7, 3)),
    (np.zeros((4, 6, 4), np.uint8), (4, 6, 3)),
    (np.full((3, 3, 3), 65535, np.uint16), (3, 3, 3)),
])
def test_load_rgb_accepts_gray_rgba_and_16_bit(image, expected):
    rgb = load_rgb(image)
    assert rgb.shape == expected and rgb.dtype == np.uint8
    if image.dtype == np.uint16:
        assert rgb.max() == 255


def test_load_rgb_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="HxWx3"):
        load_rgb(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="dtype float64"):
        load_rgb(np.zeros((2, 2, 3)))
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="could not read"):
        load_rgb(tmp_path / "x.png")


def test_video_frame_is_official_scaling():
    frame = to_video_frame(np.array([[[0, 255, 51]]], np.uint8), 2, 2)
    np.testing.assert_allclose(frame[:, 0, 0], [-1.0, 1.0, -0.6], atol=1e-6)


def test_runtime_matches_torch_pipeline(pipeline):
    modules = build_modules(tiny_i2v(), None, trust=False, seed=0)
    image = load_rgb(SAMPLE)
    kwargs = dict(steps=4, guidance_scale=7.5, eta=1.0, seed=5, frames=8, height=64, width=64)
    reference = generate_video_torch(modules, pipeline.constants, PROMPT, image_rgb=image, **kwargs)
    video = pipeline.generate(PROMPT, image=SAMPLE, progress=False, **kwargs)
    assert video.std() > 1.0
    assert psnr(video, reference) >= 40.0


def test_image_changes_video_and_same_image_reproduces(pipeline):
    image = load_rgb(SAMPLE)
    kwargs = dict(steps=2, seed=0, progress=False)
    first = pipeline.generate(PROMPT, image=image, **kwargs)
    again = pipeline.generate(PROMPT, image=image.copy(), **kwargs)
    other = pipeline.generate(PROMPT, image=image[::-1].copy(), **kwargs)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_image_mode_mismatch_is_a_clear_error(pipeline, tmp_path):
    with pytest.raises(ValueError, match="image-to-video bundle: pass image="):
        pipeline.generate(PROMPT, steps=1, progress=False)


def test_text_bundle_refuses_an_image(tmp_path):
    from export.videocrafter1.presets import tiny_t2v

    out = tmp_path / "t2v"
    export_bundle(tiny_t2v(), out, seed=0, log=lambda line: None)
    with pytest.raises(ValueError, match="text-to-video bundle and takes no image"):
        runtime.generate_video(PROMPT, bundle=out, image=SAMPLE, steps=1, progress=False)
