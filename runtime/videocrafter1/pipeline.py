"""VideoCrafter1 in the runtime: prompt (+ image) -> encoders -> DDIM over the UNet -> per-frame VAE decode.

``VideoPipeline`` holds the opened sessions (load once, generate many times;
safe to share between threads); ``generate_video`` is the one-call form.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from runtime.bundle import Bundle, BundleError
from runtime.videocrafter1.ddim import SCALE_KEYS, DDIMSchedule, ddim_sample
from runtime.videocrafter1.image_conditioning import conditioning_pixels, unconditional_pixels
from runtime.progress import ProgressBar
from runtime.backends import OwnsSessions, pipeline_for
from runtime.tokenizer import ClipTokenizer
from runtime.video_io import write_mp4


def _open(bundle: str | Path | Bundle) -> Bundle:
    opened = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    if opened.manifest.family != "videocrafter1":
        raise BundleError(f"{opened.root} is a {opened.manifest.family} bundle; generate_video needs videocrafter1")
    return opened


class VideoPipeline(OwnsSessions):
    """The opened graphs and constants of one VideoCrafter1 bundle (``close()`` or ``with`` frees them).

    ``memory="low"``: each graph is opened when first needed and freed when the next one runs (text
    encoder, then the UNet for all sampler steps, then the VAE decoder), so the peak holds one graph's
    weights instead of all of them; every ``generate`` opens them again.
    """

    def __init__(self, bundle: str | Path | Bundle, *, backend: str = "auto", memory: str = "normal"):
        self.bundle = _open(bundle)
        self.constants = self.bundle.pipeline
        self.tokenizer = ClipTokenizer(self.bundle.file(self.constants["tokenizer"]))
        self.text_encoder = self._open(self.bundle, "text_encoder", backend, memory)
        self.unet = self._open(self.bundle, "unet", backend, memory)
        self.vae_decoder = self._open(self.bundle, "vae_decoder", backend, memory)
        self.is_i2v = self.constants["mode"] == "i2v"
        if self.is_i2v:
            self.image_encoder = self._open(self.bundle, "image_encoder", backend, memory)
            self.image_proj = self._open(self.bundle, "image_proj", backend, memory)
            spec = self.constants["image"]
            self.uncond_image_context = self.embed_pixels(unconditional_pixels(spec["size"], spec["mean"], spec["std"]))

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(prompts, context_length=self.constants["context_length"])
        return self.text_encoder.run({"tokens": tokens})["context"]

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """CLIP-normalised pixels ``(N, 3, 224, 224)`` -> image context tokens ``(N, Q, D)``."""
        tokens = self.image_encoder.run({"pixels": pixels})["tokens"]
        return self.image_proj.run({"image_tokens": tokens})["context_tokens"]

    def embed_image(self, image, height: int, width: int) -> np.ndarray:
        spec = self.constants["image"]
        return self.embed_pixels(conditioning_pixels(image, height=height, width=width, size=spec["size"],
                                                     mean=spec["mean"], std=spec["std"]))

    def conditioning(self, prompt: str, image, guided: bool, height: int, width: int):
        """(context, uncond context or None): text tokens, followed by image tokens for I2V."""
        if self.is_i2v and image is None:
            raise ValueError(f"{self.bundle.root} is an image-to-video bundle: pass image= (a path, PIL image or "
                             "HxWx3 uint8 array)")
        if not self.is_i2v and image is not None:
            raise ValueError(f"{self.bundle.root} is a text-to-video bundle and takes no image; export an I2V "
                             "variant (e.g. --variant i2v-512) for image conditioning")
        embedded = self.encode_text([prompt, self.constants["uncond_prompt"]] if guided else [prompt])
        context, uncond = embedded[:1], (embedded[1:] if guided else None)
        if self.is_i2v:
            context = np.concatenate([context, self.embed_image(image, height, width)], axis=1)
            if uncond is not None:
                uncond = np.concatenate([uncond, self.uncond_image_context], axis=1)
        return context, uncond

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

    def schedule(self, steps: int, eta: float) -> DDIMSchedule:
        """The DDIM schedule of this bundle's sampler constants for ``steps`` and ``eta``."""
        s = self.constants["sampler"]
        return DDIMSchedule.make(
            steps, eta=eta, linear_start=s["linear_start"], linear_end=s["linear_end"],
            num_timesteps=s["num_timesteps"],
            **{k: s[k] for k in SCALE_KEYS if k in s})

    def generate(self, prompt: str, *, image=None, steps: int | None = None, guidance_scale: float | None = None,
                 eta: float | None = None, seed: int = 0, frames: int | None = None, fps: int | None = None,
                 height: int | None = None, width: int | None = None, progress: bool = True) -> np.ndarray:
        c, s = self.constants, self.constants["sampler"]
        steps = s["steps"] if steps is None else steps
        guidance_scale = s["guidance_scale"] if guidance_scale is None else guidance_scale
        eta = s["eta"] if eta is None else eta
        height = c["height"] if height is None else height
        width = c["width"] if width is None else width
        shape = self.latent_shape(c["frames"] if frames is None else frames, height, width)
        schedule = self.schedule(steps, eta)
        guided = guidance_scale != 1.0
        context, uncond = self.conditioning(prompt, image, guided, height, width)
        predict = self.predictor(context, uncond, c["fps"] if fps is None else fps)
        rng = np.random.default_rng(seed)
        x_T = rng.standard_normal(shape, dtype=np.float32)
        bar = ProgressBar("sampling", schedule.num_steps) if progress else None
        latents = ddim_sample(predict, x_T, schedule, guidance_scale=guidance_scale, rng=rng, progress=bar)
        return self.decode(latents)


def generate_video(prompt: str, *, bundle: str | Path | Bundle | VideoPipeline, image=None, steps: int | None = None,
                   guidance_scale: float | None = None, eta: float | None = None, seed: int = 0,
                   frames: int | None = None, fps: int | None = None, height: int | None = None,
                   width: int | None = None, output: str | Path | None = None, progress: bool = True,
                   backend: str = "auto", memory: str = "normal") -> np.ndarray:
    """Generate a ``(T, H, W, 3)`` uint8 video; also write it as mp4 when ``output`` is given.

    Defaults (steps, guidance scale, eta, frames, size, fps) are the bundle's, i.e. the
    official inference script's for a released variant. An I2V bundle needs ``image``
    (a path, PIL image or HxWx3 uint8 array); a T2V bundle refuses one. ``backend``:
    ``"auto"`` (TensorRT engines of the bundle when they fit this GPU, else OpenVINO when installed, else
    ONNX Runtime), ``"onnxruntime"``, ``"openvino"`` or ``"tensorrt"``. ``memory="low"``: one graph in
    memory at a time (see :class:`VideoPipeline`).
    """
    with pipeline_for(bundle, VideoPipeline, backend=backend, memory=memory) as pipeline:
        video = pipeline.generate(prompt, image=image, steps=steps, guidance_scale=guidance_scale, eta=eta, seed=seed,
                                  frames=frames, fps=fps, height=height, width=width, progress=progress)
        save_fps = pipeline.constants["save_fps"]
    if output is not None:
        write_mp4(video, output, save_fps)
    return video
