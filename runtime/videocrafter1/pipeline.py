"""VideoCrafter1 in the runtime: prompt (+ image) -> encoders -> sampler over the UNet -> per-frame VAE decode.

``VideoPipeline`` holds the opened sessions (load once, generate many times;
safe to share between threads); ``generate_video`` is the one-call form. The
sampler is the official DDIM by default, or an ODE solver (``sampling.SAMPLERS``, by name), or, on a
T2V-Turbo bundle (its default), the LCM sampler: no guidance branch, the guidance scale fed to the UNet as
``timestep_cond`` (and v2's motion guidance as ``motion_cond``); the
bundle's constants are typed (:class:`~runtime.videocrafter1.constants.VideoConstants`).
Several prompts (and ``num_videos`` per prompt) go through the UNet together, in
batches as large as the bundle's profile allows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from runtime.backends import Backend
from runtime.bundle import Bundle
from runtime.videocrafter1.constants import VideoConstants
from runtime.videocrafter1.lcm import Noise, motion_scale, w_embedding
from runtime.videocrafter1.sampling import GUIDANCE_FREE, StepCallback, denoise, make_sampler
from runtime.videocrafter1.image_conditioning import conditioning_pixels, unconditional_pixels
from runtime.progress import ProgressBar
from runtime.pipeline import Pipeline, pipeline_for
from runtime.tokenizer import ClipTokenizer
from runtime.video_io import write_mp4


class VideoPipeline(Pipeline):
    """The opened graphs and constants of one VideoCrafter1 bundle (``close()`` or ``with`` frees them).

    ``memory="low"``: each graph is opened when first needed and freed when the next one runs (text
    encoder, then the UNet for all sampler steps, then the VAE decoder), so the peak holds one graph's
    weights instead of all of them; every ``generate`` opens them again. The UNet then also runs one
    latent per call (the two guidance branches one after the other: half the activations, the same
    result bit for bit on ONNX Runtime). Released T2V-512, 2 frames, ONNX Runtime: peak 5.7-5.8 GB instead
    of 10.8 GB (docs/benchmarks/released.md).
    """

    family, entry = "videocrafter1", "generate_video"

    def __init__(self, bundle: str | Path | Bundle, *, backend: str | Backend = "auto", memory: str = "normal"):
        super().__init__(bundle, backend=backend, memory=memory)
        self.constants = VideoConstants.of(self.bundle)
        self.tokenizer = ClipTokenizer(self.bundle.file(self.constants.tokenizer))
        self.open("text_encoder", "unet", "vae_decoder")
        self.unet_batch = 1 if memory == "low" else None  # None: as large as the UNet profile allows
        self.is_i2v = self.constants.mode == "i2v"
        if self.is_i2v:
            self.open("image_encoder", "image_proj")
            image = self.constants.image
            self.uncond_image_context = self.embed_pixels(unconditional_pixels(image.size, image.mean, image.std))

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(prompts, context_length=self.constants.context_length)
        return self.run("text_encoder", {"tokens": tokens})["context"]

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """CLIP-normalised pixels ``(N, 3, 224, 224)`` -> image context tokens ``(N, Q, D)``."""
        tokens = self.run("image_encoder", {"pixels": pixels})["tokens"]
        return self.run("image_proj", {"image_tokens": tokens})["context_tokens"]

    def embed_image(self, image, height: int, width: int) -> np.ndarray:
        spec = self.constants.image
        return self.embed_pixels(conditioning_pixels(image, height=height, width=width, size=spec.size,
                                                     mean=spec.mean, std=spec.std))

    def conditioning(self, prompts: list[str], negative_prompts: list[str] | None, image, height: int, width: int):
        """(context, uncond context or None), one row per prompt: text tokens, then image tokens for I2V.

        ``negative_prompts`` (one per prompt) make the unconditional branch; None runs without guidance.
        """
        if self.is_i2v and image is None:
            raise ValueError(f"{self.bundle.root} is an image-to-video bundle: pass image= (a path, PIL image or "
                             "HxWx3 uint8 array)")
        if not self.is_i2v and image is not None:
            raise ValueError(f"{self.bundle.root} is a text-to-video bundle and takes no image; export an I2V "
                             "variant (e.g. --variant i2v-512) for image conditioning")
        embedded = self.encode_text(prompts + (negative_prompts or []))
        count = len(prompts)
        context, uncond = embedded[:count], (embedded[count:] if negative_prompts is not None else None)
        if self.is_i2v:
            image_context = self.embed_image(image, height, width)
            context = np.concatenate([context, np.repeat(image_context, count, axis=0)], axis=1)
            if uncond is not None:
                uncond = np.concatenate([uncond, np.repeat(self.uncond_image_context, count, axis=0)], axis=1)
        return context, uncond

    def latent_shape(self, videos: int, frames: int, height: int, width: int) -> tuple[int, ...]:
        factor = self.constants.vae_factor
        if height % factor or width % factor:
            raise ValueError(f"height and width must be multiples of {factor}, found {height}x{width}")
        shape = (videos, self.constants.latent_channels, frames, height // factor, width // factor)
        self.session("unet").component.check_shapes({"x": (1, *shape[1:])})
        return shape

    def unet_inputs(self) -> tuple[str, ...]:
        """The names of the UNet graph's inputs (T2V-Turbo's add ``timestep_cond`` and ``motion_cond``)."""
        return tuple(spec.name for spec in self.bundle.component("unet").inputs)

    def turbo_conditions(self, guidance_scale: float) -> Callable[[int, int], dict[str, np.ndarray]]:
        """T2V-Turbo's extra UNet feeds at timestep t for a batch: the guidance-scale embedding
        (``timestep_cond``) and, in a v2 graph, the motion-guidance embedding of that step (``motion_cond``)."""
        inputs, sampling = self.unet_inputs(), self.constants.sampling
        if "timestep_cond" not in inputs:
            raise ValueError(f"{self.bundle.root}: the lcm sampler needs a T2V-Turbo UNet (input timestep_cond); "
                             f"this bundle's UNet takes {', '.join(inputs)}. Export a T2V-Turbo variant "
                             "(e.g. --variant t2v-turbo-vc2) or choose another sampler")
        motion = "motion_cond" in inputs
        if motion and not sampling.use_motion_cond:
            raise ValueError(f"{self.bundle.root}: the UNet takes motion_cond but the bundle's sampler constants "
                             "have use_motion_cond off; export the bundle again")
        w_emb = w_embedding(guidance_scale)

        def feeds(t: int, batch: int) -> dict[str, np.ndarray]:
            found = {"timestep_cond": np.repeat(w_emb, batch, axis=0)}
            if motion:
                scale = motion_scale(t, sampling.motion_gs, sampling.motion_percentage,
                                     sampling.diffusion.num_timesteps)
                found["motion_cond"] = np.repeat(w_embedding(scale), batch, axis=0)
            return found

        return feeds

    def predictor(self, context: np.ndarray, uncond: np.ndarray | None, fps: int,
                  conditions: Callable[[int, int], dict[str, np.ndarray]] | None = None) -> Callable:
        """``predict(x, t) -> (eps_cond, eps_uncond)`` for a batch of latents (one context row each).

        Both guidance branches of every video run together, in UNet calls as large as the profile allows.
        ``conditions(t, batch)``: extra UNet feeds of the step (T2V-Turbo's, see :meth:`turbo_conditions`).
        """
        contexts = context if uncond is None else np.concatenate([context, uncond])

        def predict(x: np.ndarray, t: int):
            batch = contexts.shape[0]
            feeds = {"x": np.concatenate([x] * (batch // x.shape[0])),
                     "timesteps": np.full((batch,), t, dtype=np.int64), "context": contexts}
            if self.constants.fps_cond:
                feeds["fps"] = np.full((batch,), fps, dtype=np.int64)
            if conditions is not None:
                feeds.update(conditions(t, batch))
            eps = self.run("unet", feeds, self.unet_batch)["eps"]
            half = x.shape[0]
            return (eps[:half], eps[half:]) if uncond is not None else (eps, None)

        return predict

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """``(B, C, T, h, w)`` latents -> ``(B, T, H, W, 3)`` uint8, one frame at a time as the official code."""
        videos = []
        for video in latents:
            z = np.moveaxis(video, 1, 0) / np.float32(self.constants.scale_factor)
            frames = [self.run("vae_decoder", {"z": z[t:t + 1]})["decoded"][0] for t in range(z.shape[0])]
            pixels = (np.clip(np.stack(frames), -1.0, 1.0) + 1.0) / 2.0 * 255.0
            videos.append(np.transpose(pixels, (0, 2, 3, 1)).astype(np.uint8))
        return np.stack(videos)

    def make_sampler(self, name: str, steps: int, eta: float | None, rng: np.random.Generator | None = None,
                     noise: Noise | None = None):
        """A new sampler called ``name`` (see ``sampling.SAMPLERS``) on this bundle's diffusion schedule, set
        for ``steps`` (eta: the bundle's for DDIM; lcm: the bundle's ``lcm_origin_steps`` and ``noise``)."""
        sampling = self.constants.sampling
        if name == "ddim" and eta is None:
            eta = sampling.eta
        lcm = {"lcm_origin_steps": sampling.lcm_origin_steps, "noise": noise} if name == "lcm" else {}
        return make_sampler(name, sampling.diffusion, steps, eta=eta, rng=rng, **lcm)

    def generate(self, prompt: str | Sequence[str], *, image=None, negative_prompt: str | Sequence[str] | None = None,
                 num_videos: int = 1, sampler: str | None = None, steps: int | None = None,
                 guidance_scale: float | None = None, eta: float | None = None, seed: int = 0,
                 latents: np.ndarray | None = None, frames: int | None = None, fps: int | None = None,
                 height: int | None = None, width: int | None = None, callback: StepCallback | None = None,
                 output_type: str = "video", progress: bool = True, noise: Noise | None = None) -> np.ndarray:
        """Videos for ``prompt`` (a string, or a list: one batch); see ``generate_video`` for the arguments.

        Returns ``(T, H, W, 3)`` uint8 for one prompt string and ``num_videos=1``, else
        ``(B, T, H, W, 3)`` with B = prompts × num_videos (each prompt's videos together);
        with ``output_type="latent"`` the ``(B, C, T, h, w)`` float32 latents, undecoded.
        """
        c, defaults = self.constants, self.constants.sampling
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        prompts = _prompt_list(prompt, "prompt")
        if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 1:
            raise ValueError(f"num_videos must be a positive integer, got {num_videos!r}")
        guidance_scale = defaults.guidance_scale if guidance_scale is None else guidance_scale
        name = defaults.sampler_name if sampler is None else sampler
        guidance_free = name in GUIDANCE_FREE
        if guidance_free and negative_prompt is not None:
            raise ValueError(f"the {name} sampler runs without a guidance branch and takes no negative_prompt")
        negatives = None
        if guidance_scale != 1.0 and not guidance_free:
            negatives = _prompt_list(c.uncond_prompt if negative_prompt is None else negative_prompt,
                                     "negative_prompt", len(prompts))
            negatives = [n for n in negatives for _ in range(num_videos)]
        videos = [p for p in prompts for _ in range(num_videos)]
        height = c.height if height is None else height
        width = c.width if width is None else width
        shape = self.latent_shape(len(videos), c.frames if frames is None else frames, height, width)
        rng = np.random.default_rng(seed)
        chosen = self.make_sampler(name, defaults.steps if steps is None else steps, eta, rng, noise)
        conditions = self.turbo_conditions(guidance_scale) if guidance_free else None
        context, uncond = self.conditioning(videos, negatives, image, height, width)
        predict = self.predictor(context, uncond, c.fps if fps is None else fps, conditions)
        if latents is None:
            x_T = rng.standard_normal(shape, dtype=np.float32)
        elif tuple(np.shape(latents)) != shape:
            raise ValueError(f"latents has shape {list(np.shape(latents))}, expected {list(shape)} (videos, latent "
                             f"channels, frames, height/{c.vae_factor}, width/{c.vae_factor})")
        else:
            x_T = np.asarray(latents, dtype=np.float32)
        bar = ProgressBar("sampling", len(chosen.timesteps)) if progress else None
        result = denoise(predict, x_T, chosen, guidance_scale=1.0 if guidance_free else guidance_scale,
                         callback=callback, progress=bar)
        if output_type == "video":
            result = self.decode(result)
            if isinstance(prompt, str) and num_videos == 1:
                result = result[0]
        return result


OUTPUT_TYPES = ("video", "latent")


def _prompt_list(prompts: str | Sequence[str], name: str, count: int | None = None) -> list[str]:
    """A prompt string (for every video) or list of them (one each) as a list; ``count`` its expected length."""
    if isinstance(prompts, str):
        return [prompts] * (count or 1)
    found = list(prompts)
    if not found or not all(isinstance(p, str) for p in found):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {prompts!r}")
    if count is not None and len(found) != count:
        raise ValueError(f"{name} has {len(found)} entries, expected one per prompt ({count})")
    return found


def generate_video(prompt: str | Sequence[str], *, bundle: str | Path | Bundle | VideoPipeline, image=None,
                   negative_prompt: str | Sequence[str] | None = None, num_videos: int = 1, sampler: str | None = None,
                   steps: int | None = None, guidance_scale: float | None = None, eta: float | None = None,
                   seed: int = 0, latents: np.ndarray | None = None, frames: int | None = None,
                   fps: int | None = None, height: int | None = None, width: int | None = None,
                   callback: StepCallback | None = None, output_type: str = "video",
                   output: str | Path | None = None, progress: bool = True, backend: str = "auto",
                   memory: str = "normal", noise: Noise | None = None) -> np.ndarray:
    """Generate a ``(T, H, W, 3)`` uint8 video; also write it as mp4 when ``output`` is given.

    Defaults (sampler DDIM, steps, guidance scale, eta, frames, size, fps) are the bundle's,
    i.e. the official inference script's for a released variant. An I2V bundle needs
    ``image`` (a path, PIL image or HxWx3 uint8 array); a T2V bundle refuses one.

    - ``sampler``: the sampler by name (``sampling.SAMPLERS``): the bundle's (``"ddim"``, the official
      one), ``"dpmpp-2m"`` or ``"unipc"`` (multistep ODE solvers that need fewer steps; they take no ``eta``),
      or ``"lcm"``, the default of T2V-Turbo bundles (and only for them): a few steps of batch 1 per video,
      no negative prompt, ``guidance_scale`` embedded as the UNet's ``timestep_cond``.
    - ``noise``: lcm's noise between steps (one array per step but the last, or ``noise(shape)``) instead
      of draws from the seeded generator, e.g. to replay another implementation's run.
    - ``prompt`` may be a list, and ``num_videos`` videos are made per prompt: the result is
      then ``(B, T, H, W, 3)`` and ``output`` is written as ``<stem>-<i><suffix>`` per video.
    - ``negative_prompt``: the unconditional branch of guidance (default the official one, "").
    - ``latents``: the initial noise ``(B, C, frames, height/8, width/8)`` instead of the seeded
      draw; ``seed`` still seeds DDIM's per-step noise when eta > 0.
    - ``callback(step, t, latents)`` after each step; returning False stops the run there.
    - ``output_type="latent"`` returns the final latents without decoding (nothing is written).
    - ``backend``: ``"auto"`` (TensorRT engines of the bundle when they fit this GPU, else OpenVINO
      when installed, else ONNX Runtime), ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"`` or ``"triton"``
      (a :class:`runtime.Backend` carries a backend's options, e.g. the server url).
    - ``memory="low"``: one graph in memory at a time (see :class:`VideoPipeline`).
    """
    with pipeline_for(bundle, VideoPipeline, backend=backend, memory=memory) as pipeline:
        result = pipeline.generate(prompt, image=image, negative_prompt=negative_prompt, num_videos=num_videos,
                                   sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta, seed=seed,
                                   latents=latents, frames=frames, fps=fps, height=height, width=width,
                                   callback=callback, output_type=output_type, progress=progress, noise=noise)
        save_fps = pipeline.constants.save_fps
    if output is not None and output_type == "video":
        if result.ndim == 4:
            write_mp4(result, output, save_fps)
        else:
            path = Path(output)
            for index, video in enumerate(result):
                write_mp4(video, path.with_name(f"{path.stem}-{index}{path.suffix}"), save_fps)
    return result
