"""VideoCrafter1 T2V end to end: tiny bundle export, torch-vs-runtime parity, generate_video behaviour."""
from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import runtime
from export.videocrafter1.bundle import build_modules, export_bundle
from export.videocrafter1.presets import tiny_t2v
from export.videocrafter1.reference_pipeline import generate_video_torch
from runtime.bundle import BundleError
from runtime.tokenizer import ClipTokenizer
from runtime.arrays import max_relative_error, psnr
from tests.recording import Recorder
from tests.videos import read_video

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


def test_opened_with_defaults_the_unet_runs_its_fused_graph_and_the_rest_openvino(pipeline):
    """``backend="auto"`` (the default) on a CPU with OpenVINO: the UNet has ONNX Runtime's graph (fused
    attention) and runs there; no component extends a cache, the others run on OpenVINO (docs/backends.md)."""
    pytest.importorskip("openvino")
    assert {name: session.label for name, session in pipeline.sessions.items()} == {
        "text_encoder": "OpenVINO", "unet": "ONNX Runtime", "vae_decoder": "OpenVINO"}


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


# ---------------------------------------------------------------- samplers and the diffusers-style call

SMALL = dict(frames=8, height=64, width=64, progress=False)


@pytest.fixture
def recorded(pipeline):
    with pipeline.substituted(lambda name, session: Recorder(session) if name in ("unet", "vae_decoder") else None):
        yield pipeline



@torch.no_grad()
def torch_latents_with_diffusers(modules, constants, x_T, scheduler, guidance_scale):
    """The torch modules driven by a diffusers scheduler: guided eps of the official prompt pair, step by step."""
    tokens = ClipTokenizer()([PROMPT, constants.uncond_prompt], context_length=constants.context_length)
    context = modules["text_encoder"](torch.from_numpy(tokens))
    x = torch.from_numpy(x_T)
    for t in scheduler.timesteps:
        timesteps = torch.full((1,), int(t), dtype=torch.int64)
        e_cond, e_uncond = (modules["unet"](x, timesteps, context[i:i + 1]) for i in (0, 1))
        x = scheduler.step(e_uncond + guidance_scale * (e_cond - e_uncond), t, x).prev_sample
    return x.numpy()


def test_dpmpp_pipeline_matches_torch_modules_with_diffusers(pipeline):
    from diffusers import DPMSolverMultistepScheduler

    assert not pipeline.constants.fps_cond
    x_T = np.random.default_rng(4).standard_normal((1, 4, 8, 8, 8), dtype=np.float32)
    found = pipeline.generate(PROMPT, sampler="dpmpp-2m", steps=6, guidance_scale=7.5, latents=x_T,
                              output_type="latent", **SMALL)
    diffusion = pipeline.constants.sampling.diffusion
    scheduler = DPMSolverMultistepScheduler(beta_start=diffusion.linear_start, beta_end=diffusion.linear_end,
                                            beta_schedule="scaled_linear", final_sigmas_type="sigma_min")
    scheduler.set_timesteps(6)
    expected = torch_latents_with_diffusers(build_modules(tiny_t2v(), None, trust=False, seed=0),
                                            pipeline.constants, x_T, scheduler, 7.5)
    assert found.shape == x_T.shape and max_relative_error(expected, found) < 1e-4


@pytest.mark.parametrize("sampler, eta", [("dpmpp-2m", None), ("unipc", None), ("ddim", 0.0)])
def test_latents_reproduce_a_seeded_run_bit_for_bit(pipeline, sampler, eta):
    seeded = pipeline.generate(PROMPT, sampler=sampler, eta=eta, steps=4, seed=3, output_type="latent", **SMALL)
    x_T = np.random.default_rng(3).standard_normal((1, 4, 8, 8, 8), dtype=np.float32)
    again = pipeline.generate(PROMPT, sampler=sampler, eta=eta, steps=4, seed=99, latents=x_T, output_type="latent",
                              **SMALL)
    assert np.array_equal(seeded, again)
    with pytest.raises(ValueError, match=r"latents has shape \[1, 4, 8, 4, 8\], expected \[1, 4, 8, 8, 8\]"):
        pipeline.generate(PROMPT, steps=2, latents=x_T[:, :, :, :4], **SMALL)


def test_negative_prompt_is_the_unconditional_branch(pipeline):
    kwargs = dict(steps=4, guidance_scale=7.5, eta=1.0, seed=5, frames=8, height=64, width=64)
    default = pipeline.generate(PROMPT, progress=False, **kwargs)
    assert np.array_equal(default, pipeline.generate(PROMPT, negative_prompt="", progress=False, **kwargs))
    negative = pipeline.generate(PROMPT, negative_prompt="blurry, low quality", progress=False, **kwargs)
    modules = build_modules(tiny_t2v(), None, trust=False, seed=0)
    reference = generate_video_torch(modules, replace(pipeline.constants, uncond_prompt="blurry, low quality"),
                                     PROMPT, **kwargs)
    # the tiny random text encoder separates prompts weakly: 90 dB to the reference, under 50 dB to the default
    assert psnr(negative, reference) >= 70.0 and psnr(negative, default) < 60.0
    with pytest.raises(ValueError, match=r"negative_prompt has 1 entries, expected one per prompt \(2\)"):
        pipeline.generate([PROMPT, "a cat"], negative_prompt=["blurry"], steps=1, **SMALL)


def test_prompts_batched_equal_single_runs_within_the_profile(recorded):
    prompts = [PROMPT, "a red car in the snow", "fireworks over a city"]
    noise = np.random.default_rng(6).standard_normal((3, 1, 4, 8, 8, 8), dtype=np.float32)
    batched = recorded.generate(prompts, sampler="dpmpp-2m", steps=3, latents=noise[:, 0], output_type="latent",
                                **SMALL)
    unet = recorded.sessions["unet"]
    assert max(unet.batches) == unet.component.profile["x"]["max"][0] == 4
    assert unet.batches[:2] == [4, 2]  # 3 videos x 2 guidance branches in pieces of the profile's 4
    for index, prompt in enumerate(prompts):
        single = recorded.generate(prompt, sampler="dpmpp-2m", steps=3, latents=noise[index], output_type="latent",
                                   **SMALL)
        assert max_relative_error(single, batched[index:index + 1]) < 1e-5
    videos = recorded.generate(PROMPT, num_videos=2, sampler="dpmpp-2m", steps=2, seed=1, **SMALL)
    assert videos.shape == (2, 8, 64, 64, 3) and not np.array_equal(videos[0], videos[1])
    with pytest.raises(ValueError, match="num_videos must be a positive integer, got 0"):
        recorded.generate(PROMPT, num_videos=0, steps=1, **SMALL)


def test_callback_sees_every_step_and_can_stop_the_run(recorded):
    seen = []

    def callback(step, t, latents):
        seen.append((step, t, latents.copy()))
        return step < 2

    stopped = recorded.generate(PROMPT, sampler="unipc", steps=10, callback=callback, output_type="latent", **SMALL)
    assert [(s, t) for s, t, _ in seen] == [(0, 999), (1, 899), (2, 799)]
    assert len(recorded.sessions["unet"].batches) == 3 and np.array_equal(stopped, seen[-1][2])


def test_latent_output_skips_decoding(recorded):
    latents = recorded.generate(PROMPT, sampler="dpmpp-2m", steps=2, seed=2, output_type="latent", **SMALL)
    assert latents.shape == (1, 4, 8, 8, 8) and latents.dtype == np.float32
    assert recorded.sessions["vae_decoder"].batches == []
    video = recorded.generate(PROMPT, sampler="dpmpp-2m", steps=2, seed=2, **SMALL)
    assert len(recorded.sessions["vae_decoder"].batches) == 8 and np.array_equal(recorded.decode(latents)[0], video)
    with pytest.raises(ValueError, match="output_type must be one of video, latent, got 'pil'"):
        recorded.generate(PROMPT, steps=1, output_type="pil", **SMALL)


def test_generate_video_with_a_solver_and_a_batch_writes_one_mp4_per_video(tiny, tmp_path):
    out = tmp_path / "clip.mp4"
    videos = runtime.generate_video([PROMPT, "a cat"], bundle=tiny[0], sampler="dpmpp-2m", steps=3, output=out,
                                    progress=False)
    assert videos.shape == (2, 8, 64, 64, 3)
    for index in (0, 1):
        assert np.array_equal(read_video(tmp_path / f"clip-{index}.mp4").shape, videos[index].shape)
    with pytest.raises(ValueError, match="eta 1.0 applies to the ddim sampler only"):
        runtime.generate_video(PROMPT, bundle=tiny[0], sampler="dpmpp-2m", eta=1.0, progress=False)


def test_text_encoder_runs_in_profile_sized_pieces(pipeline):
    with pipeline.substituted(lambda name, session: Recorder(session) if name == "text_encoder" else None):
        prompts = [PROMPT, "a cat", "a red car"]
        embedded = pipeline.encode_text(prompts + [""] * 3)
        assert pipeline.sessions["text_encoder"].batches == [4, 2]  # 6 prompts, profile max 4
        singles = np.concatenate([pipeline.encode_text([p]) for p in prompts + [""]])
    assert max_relative_error(singles[:4], embedded[:4]) < 1e-5
    assert max_relative_error(np.repeat(singles[3:], 2, axis=0), embedded[4:]) < 1e-5
    assert not isinstance(pipeline.sessions["text_encoder"], Recorder)  # the pipeline's own session is back
