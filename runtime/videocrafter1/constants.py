"""VideoCrafter1's pipeline constants: what export writes into a bundle's manifest and the pipeline reads.

The manifest's ``pipeline`` object (JSON keys; the fields below carry the same names except where
said)::

    {"mode", "height", "width", "frames", "fps", "save_fps", "latent_channels", "vae_factor",
     "scale_factor", "context_length", "uncond_prompt", "tokenizer", "fps_cond",
     "sampler": {"name", "steps", "eta", "guidance_scale",                   -> VideoConstants.sampling
                 "lcm_origin_steps"                                          (only with name "lcm")
                 "use_motion_cond", "motion_gs", "motion_percentage"         (only with use_motion_cond)
                 "linear_start", "linear_end", "num_timesteps",             -> SamplingConstants.diffusion
                 "use_scale", "scale_a", "scale_b", "mid_step", "fix_scale_bug"   (only with use_scale)},
     "image": {"size", "mean", "std", ...}                                   (I2V bundles only)}

The ``"sampler"`` key keeps its JSON name; in Python it is :attr:`VideoConstants.sampling`, and the
default sampler's name (``"name"``) is :attr:`SamplingConstants.sampler_name`: the word "sampler"
itself means a sampler object (``ddim.DDIMSampler`` and the solvers, made by ``sampling.make_sampler``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from runtime.bundle import BundleError
from runtime.constants import Constants, flattened, json_key, optional

# The model settings of the latent scale schedule (VideoCrafter1 I2V-512, VideoCrafter2), as the official
# configs name them.
SCALE_KEYS = ("use_scale", "scale_a", "scale_b", "mid_step", "fix_scale_bug")
# T2V-Turbo's LCM settings (``T2VTurboVC2Pipeline.__call__``'s arguments): written for an LCM bundle only, the
# motion guidance (T2V-Turbo v2) only where it is used.
LCM_KEYS = ("lcm_origin_steps",)
MOTION_KEYS = ("use_motion_cond", "motion_gs", "motion_percentage")


@dataclass(frozen=True)
class DiffusionSchedule(Constants):
    """The model's diffusion schedule as the official ``LatentDiffusion`` config sets it.

    β is linear in sqrt(β) from ``linear_start`` to ``linear_end`` over ``num_timesteps``; with
    ``use_scale`` the latent scale schedule applies (linspace(scale_a, scale_b, mid_step), then
    scale_b). The scale settings default to the official ones when a config leaves them out, and are
    written only where ``use_scale`` is on. The field names are the official config's, which are also
    the keywords of ``ddim.DDIMSchedule.make``.
    """

    linear_start: float
    linear_end: float
    num_timesteps: int
    use_scale: bool = False
    scale_a: float = 1.0
    scale_b: float = 0.3
    mid_step: int = 400
    fix_scale_bug: bool = False

    def to_dict(self) -> dict:
        written = super().to_dict()
        return written if self.use_scale else {k: v for k, v in written.items() if k not in SCALE_KEYS}


@dataclass(frozen=True)
class SamplingConstants(Constants):
    """The manifest's ``sampler`` object: the default sampler by name, its step count, eta and guidance
    scale (the official inference script's), and the model's diffusion schedule (keys in the same object).

    T2V-Turbo bundles (sampler ``"lcm"``) add the LCM settings: ``lcm_origin_steps`` (the distillation's DDIM
    grid the few steps are taken from) and, for v2, the motion guidance: with ``use_motion_cond`` the UNet
    gets the embedding of ``motion_gs`` while t >= 1000·(1 − ``motion_percentage``), of 0 after. Their
    defaults are the official pipeline's; ``lcm_origin_steps`` is written only when the sampler is ``"lcm"``,
    the motion keys only with ``use_motion_cond``.
    """

    sampler_name: str = json_key("name")
    diffusion: DiffusionSchedule = flattened()
    steps: int
    eta: float
    guidance_scale: float
    lcm_origin_steps: int = 50
    use_motion_cond: bool = False
    motion_gs: float = 0.1
    motion_percentage: float = 0.3

    def to_dict(self) -> dict:
        dropped = (() if self.sampler_name == "lcm" else LCM_KEYS) + (() if self.use_motion_cond else MOTION_KEYS)
        return {k: v for k, v in super().to_dict().items() if k not in dropped}


@dataclass(frozen=True)
class ImageConditioning(Constants):
    """I2V: the CLIP image encoder's input size and normalisation, the context layout (text tokens, then image
    tokens) and, for a reader, how the official pipeline prepares the image (``image_conditioning`` does it)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    loader_resize: str
    clip_resize: str
    text_tokens: int
    image_tokens: int
    uncond_image: str


@dataclass(frozen=True)
class VideoConstants(Constants):
    """Everything a VideoCrafter1 bundle's pipeline needs besides its graphs: defaults of ``generate`` (size,
    frames, fps, sampling), the latent layout, the tokenizer file, and the image conditioning of I2V."""

    FAMILY: ClassVar[str] = "videocrafter1"

    mode: Literal["t2v", "i2v"]
    height: int
    width: int
    frames: int
    fps: int
    save_fps: int
    latent_channels: int
    vae_factor: int
    scale_factor: float
    context_length: int
    uncond_prompt: str
    tokenizer: str
    fps_cond: bool
    sampling: SamplingConstants = json_key("sampler")
    image: ImageConditioning | None = optional()

    def __post_init__(self) -> None:
        if (self.mode == "i2v") != (self.image is not None):
            raise BundleError(f"pipeline constants of mode {self.mode!r} "
                              f"{'need an image entry (I2V)' if self.mode == 'i2v' else 'take no image entry (T2V)'}, "
                              f"found {'none' if self.image is None else 'one'}")
