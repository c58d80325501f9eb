"""VideoCrafter1 T2V end to end: tiny bundle export, torch-vs-runtime parity, generate_video behaviour."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import runtime
from export.videocrafter1.bundle import build_modules, export_bundle
from export.videocrafter1.presets import tiny_t2v
from export.videocrafter1.reference_pipeline import generate_video_torch
from runtime.bundle import BundleError
from runtime.video_io import read_video
from runtime.arrays import psnr

PROMPT = "a corgi running on the beach"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "videocrafter1-tiny-t2v"
    lines: list[str] = []
    export_bundle(tiny_t2v(), out, seed=0, log=lines.append)
    return out, lines


@pytest.fixture(scope="module")
def pipeline(tiny):
    return runtime.VideoPipeline(tiny[0])


def test_export_prints_ort_check_per_graph(tiny):
    out, lines = tiny
    checks = [l for l in lines if "onnxruntime vs torch" in l]
    assert len(checks) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["components"]) == {"text_encoder", "unet", "vae_decoder", "vae_encoder"}
    assert manifest["pipeline"]["sampler"]["guidance_scale"] == 12.0
    unet = manifest["components"]["unet"]
    assert unet["inputs"][0]["shape"] == ["batch", 4, "frames", "latent_height", "latent_width"]
    assert unet["profile"]["x"]["opt"] == [2, 4, 8, 8, 8]
    for line in checks:
        assert float(line.split("max abs ")[1].split(",")[0]) < 1e-3


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_runtime_matches_torch_pipeline(pipeline, eta):
    config = tiny_t2v()
    modules = build_modules(config, None, trust=False, seed=0)
    kwargs = dict(steps=4, guidance_scale=7.5, eta=eta, seed=3, frames=config.frames, height=64, width=64)
    reference = generate_video_torch(modules, pipeline.constants, PROMPT, **kwargs)
    video = pipeline.generate(PROMPT, progress=False, **kwargs)
    assert video.shape == (8, 64, 64, 3) and video.dtype == np.uint8
    assert video.std() > 1.0  # not a flat image
    assert psnr(video, reference) >= 40.0


def test_generate_video_writes_mp4_and_is_seeded(tiny, tmp_path, capsys):
    out = tmp_path / "video.mp4"
    video = runtime.generate_video(PROMPT, bundle=tiny[0], steps=2, seed=1, output=out)
    assert "sampling [" in capsys.readouterr().err
    assert read_video(out).shape == video.shape
    again = runtime.generate_video(PROMPT, bundle=tiny[0], steps=2, seed=1, progress=False)
    other = runtime.generate_video(PROMPT, bundle=tiny[0], steps=2, seed=2, progress=False)
    assert np.array_equal(video, again)
    assert not np.array_equal(video, other)


def test_frames_and_size_outside_profile_are_refused(pipeline):
    with pytest.raises(BundleError, match=r"frames is 40, but this bundle supports 1\.\.24"):
        pipeline.generate(PROMPT, frames=40, steps=1, progress=False)
    with pytest.raises(ValueError, match="multiples of 8"):
        pipeline.generate(PROMPT, height=60, steps=1, progress=False)
    with pytest.raises(BundleError, match="latent_height is 32"):
        pipeline.generate(PROMPT, height=256, steps=1, progress=False)


def test_runtime_import_has_no_torch():
    import subprocess

    code = "import sys, runtime; assert 'torch' not in sys.modules, 'runtime imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
