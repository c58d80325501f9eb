"""VideoCrafter1 in the runtime: prompt -> text encoder -> DDIM over the UNet -> per-frame VAE decode.

``VideoPipeline`` holds the opened sessions (load once, generate many times;
safe to share between threads); ``generate_video`` is the one-call form.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from runtime.bundle import Bundle, BundleError
from runtime.ddim import DDIMSchedule, ddim_sample
from runtime.progress import ProgressBar
from runtime.session import open_session
from runtime.tokenizer import ClipTokenizer
from runtime.video_io import write_mp4


def _open(bundle: str | Path | Bundle) -> Bundle:
    opened = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    if opened.manifest.family != "videocrafter1":
        raise BundleError(f"{opened.root} is a {opened.manifest.family} bundle; generate_video needs videocrafter1")
    return opened


class VideoPipeline:
    """The opened graphs and constants of one VideoCrafter1 bundle."""

    def __init__(self, bundle: str | Path | Bundle, *, backend: str = "onnxruntime"):
        self.bundle = _open(bundle)
        self.constants = self.bundle.pipeline
        self.tokenizer = ClipTokenizer(self.bundle.file(self.constants["tokenizer"]))
        self.text_encoder = open_session(self.bundle, "text_encoder", backend=backend)
        self.unet = open_session(self.bundle, "unet", backend=backend)
        self.vae_decoder = open_session(self.bundle, "vae_decoder", backend=backend)

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(prompts, context_length=self.constants["context_length"])
        return self.text_encoder.run({"tokens": tokens})["context"]

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, ...]:
        factor = self.constants["vae_factor"]
        if height % factor or width % factor:
            raise ValueError(f"height and width must be multiples of {factor}, found {height}x{width}")
        shape = (1, self.constants["latent_channels"], frames, height // factor, width // factor)
        self.unet.component.check_shapes({"x": shape})
        return shape

    def predictor(self, context: np.ndarray, uncond: np.ndarray | None, fps: int) -> Callable:
        """``predict(x, t) -> (eps_cond, eps_uncond)``; both branches run as one batch of 2."""
        contexts = context if uncond is None else np.concatenate([context, uncond])

        def predict(x: np.ndarray, t: int):
            batch = contexts.shape[0]
            feeds = {"x": np.concatenate([x] * (batch // x.shape[0])),
                     "timesteps": np.full((batch,), t, dtype=np.int64), "context": contexts}
            if self.constants["fps_cond"]:
                feeds["fps"] = np.full((batch,), fps, dtype=np.int64)
            eps = self.unet.run(feeds)["eps"]
            half = x.shape[0]
            return (eps[:half], eps[half:]) if uncond is not None else (eps, None)

        return predict

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """``(1, C, T, h, w)`` latents -> ``(T, H, W, 3)`` uint8, one frame at a time as the official code."""
        z = np.moveaxis(latents[0], 1, 0) / np.float32(self.constants["scale_factor"])
        frames = [self.vae_decoder.run({"z": z[t:t + 1]})["decoded"][0] for t in range(z.shape[0])]
        pixels = (np.clip(np.stack(frames), -1.0, 1.0) + 1.0) / 2.0 * 255.0
        return np.transpose(pixels, (0, 2, 3, 1)).astype(np.uint8)

    def generate(self, prompt: str, *, steps: int | None = None, guidance_scale: float | None = None,
                 eta: float | None = None, seed: int = 0, frames: int | None = None, fps: int | None = None,
                 height: int | None = None, width: int | None = None, progress: bool = True) -> np.ndarray:
        c, s = self.constants, self.constants["sampler"]
        steps = s["steps"] if steps is None else steps
        guidance_scale = s["guidance_scale"] if guidance_scale is None else guidance_scale
        eta = s["eta"] if eta is None else eta
        shape = self.latent_shape(c["frames"] if frames is None else frames,
                                  c["height"] if height is None else height, c["width"] if width is None else width)
        schedule = DDIMSchedule.make(
            steps, eta=eta, linear_start=s["linear_start"], linear_end=s["linear_end"],
            num_timesteps=s["num_timesteps"],
            **{k: s[k] for k in ("use_scale", "scale_a", "scale_b", "mid_step", "fix_scale_bug") if k in s})
        guided = guidance_scale != 1.0
        embedded = self.encode_text([prompt, c["uncond_prompt"]] if guided else [prompt])
        predict = self.predictor(embedded[:1], embedded[1:] if guided else None, c["fps"] if fps is None else fps)
        rng = np.random.default_rng(seed)
        x_T = rng.standard_normal(shape, dtype=np.float32)
        bar = ProgressBar("sampling", schedule.num_steps) if progress else None
        latents = ddim_sample(predict, x_T, schedule, guidance_scale=guidance_scale, rng=rng, progress=bar)
        return self.decode(latents)


def generate_video(prompt: str, *, bundle: str | Path | Bundle | VideoPipeline, steps: int | None = None,
                   guidance_scale: float | None = None, eta: float | None = None, seed: int = 0,
                   frames: int | None = None, fps: int | None = None, height: int | None = None,
                   width: int | None = None, output: str | Path | None = None, progress: bool = True) -> np.ndarray:
    """Generate a ``(T, H, W, 3)`` uint8 video; also write it as mp4 when ``output`` is given.

    Defaults (steps, guidance scale, eta, frames, size, fps) are the bundle's, i.e. the
    official inference script's for a released variant.
    """
    pipeline = bundle if isinstance(bundle, VideoPipeline) else VideoPipeline(bundle)
    video = pipeline.generate(prompt, steps=steps, guidance_scale=guidance_scale, eta=eta, seed=seed, frames=frames,
                              fps=fps, height=height, width=width, progress=progress)
    if output is not None:
        write_mp4(video, output, pipeline.constants["save_fps"])
    return video
