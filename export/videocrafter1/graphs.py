"""VideoCrafter1's exported components, declared: one spec per component with how its module is built (constructor
arguments, checkpoint prefix, random-weight seed offset), the graphs it becomes, their example inputs and the
shape ranges of their symbolic axes.

Graph tensor names are the golden cases' names, so a case's ``io.npz`` feeds a graph directly and the runtime
uses the same names.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
import torch

from export.graphs import ComponentSpec, Graph, MethodGraph
from export.videocrafter1.openclip import OpenCLIPTextEncoder, OpenCLIPVisionTokens
from export.videocrafter1.presets import VariantConfig
from export.videocrafter1.resampler import Resampler
from export.videocrafter1.unet import UNetModel
from export.videocrafter1.vae import AutoencoderKL
from runtime.tokenizer import ClipTokenizer

TEXT_TOKENS = 77  # the OpenCLIP context every example prompt is padded to
EXAMPLE_PROMPTS = ["a corgi running on the beach", ""]

BATCH = {0: "batch"}
VIDEO = {0: "batch", 2: "frames", 3: "latent_height", 4: "latent_width"}
LATENT_FRAMES = {0: "frames", 2: "latent_height", 3: "latent_width"}
IMAGE_FRAMES = {0: "frames", 2: "height", 3: "width"}

TEXT_ENCODER = Graph("text_encoder", MethodGraph, ("tokens",), ("context",), {"tokens": BATCH, "context": BATCH})
VAE_DECODER = Graph("vae_decoder", partial(MethodGraph, method="decode"), ("z",), ("decoded",),
                    {"z": LATENT_FRAMES, "decoded": IMAGE_FRAMES})
VAE_ENCODER = Graph("vae_encoder", partial(MethodGraph, method="encode"), ("frames",),
                    ("posterior_mean", "posterior_logvar"),
                    {"frames": IMAGE_FRAMES, "posterior_mean": LATENT_FRAMES, "posterior_logvar": LATENT_FRAMES})
IMAGE_ENCODER = Graph("image_encoder", MethodGraph, ("pixels",), ("tokens",), {"pixels": BATCH, "tokens": BATCH})
IMAGE_PROJ = Graph("image_proj", MethodGraph, ("image_tokens",), ("context_tokens",),
                   {"image_tokens": BATCH, "context_tokens": BATCH})


class UNetStep(torch.nn.Module):
    """The UNet as a graph: ``x``, ``timesteps``, ``context``, then its optional inputs by name (``names``)."""

    def __init__(self, module: torch.nn.Module, names: tuple[str, ...] = ()):
        super().__init__()
        self.module = module
        self.names = names

    def forward(self, x, timesteps, context, *conditions):
        return self.module(x, timesteps, context, **dict(zip(self.names, conditions)))


# The UNet's optional inputs, in graph order, and the constructor argument that gives each.
UNET_CONDITIONS = {"fps": "fps_cond", "timestep_cond": "time_cond_proj_dim", "motion_cond": "motion_cond_proj_dim"}


def unet_conditions(config: dict) -> tuple[str, ...]:
    """The optional inputs a UNet of constructor arguments ``config`` takes (fps, T2V-Turbo's conditions)."""
    return tuple(name for name, arg in UNET_CONDITIONS.items() if config.get(arg) not in (None, False))


def unet_graph(conditions: tuple[str, ...] = ()) -> Graph:
    """One denoising step of the UNet; ``conditions`` (of :data:`UNET_CONDITIONS`) follow x, timesteps, context:
    the frame rate ``fps (B,)``, T2V-Turbo's guidance embedding ``timestep_cond (B, 256)`` and v2's motion
    embedding ``motion_cond (B, 256)``."""
    unknown = [name for name in conditions if name not in UNET_CONDITIONS]
    if unknown:
        raise ValueError(f"unknown UNet inputs {unknown}; expected some of {list(UNET_CONDITIONS)}")
    ordered = tuple(name for name in UNET_CONDITIONS if name in conditions)
    axes = {"x": VIDEO, "timesteps": BATCH, "context": {0: "batch", 1: "context_length"}, "eps": VIDEO}
    return Graph("unet", partial(UNetStep, names=ordered), ("x", "timesteps", "context", *ordered), ("eps",),
                 {**axes, **{name: BATCH for name in ordered}})


def example_unet_inputs(config: dict, *, batch: int, frames: int, height: int, width: int, context_length: int,
                        seed: int = 0) -> dict:
    """Seeded example inputs for one UNet step (``config``: the UNet's constructor arguments)."""
    generator = torch.Generator().manual_seed(seed)
    feeds = {
        "x": torch.randn(batch, config["in_channels"], frames, height, width, generator=generator).numpy(),
        "timesteps": torch.randint(1, 1000, (batch,), generator=generator).numpy(),
        "context": torch.randn(batch, context_length, config["context_dim"], generator=generator).numpy(),
    }
    if config.get("fps_cond"):
        feeds["fps"] = torch.full((batch,), 24, dtype=torch.int64).numpy()
    for name in ("timestep_cond", "motion_cond"):
        if name in unet_conditions(config):
            feeds[name] = torch.randn(batch, config[UNET_CONDITIONS[name]], generator=generator).numpy()
    return feeds


@dataclass(frozen=True)
class ExampleShape:
    """The shape graphs are traced and checked at: frames and latent size (the VAE decodes ``vae_frames``)."""

    frames: int
    latent_height: int
    latent_width: int
    vae_frames: int


@dataclass(frozen=True)
class VideoCrafterComponent(ComponentSpec):
    """A component of the variant ``config``. Subclasses name it, the config field holding its constructor
    arguments, its checkpoint prefix (the Lightning ``state_dict``'s), the offset added to the seed of its
    random weights, and whether only I2V variants have it. All components share the variant's shape ranges."""

    config: VariantConfig
    name: ClassVar[str]
    config_field: ClassVar[str]
    prefix: ClassVar[str]
    seed_offset: ClassVar[int]
    i2v_only: ClassVar[bool] = False

    @staticmethod
    @abstractmethod
    def construct(args: dict) -> torch.nn.Module:
        """The module from its constructor arguments (the variant's config field, or a golden case's config)."""

    def build(self) -> torch.nn.Module:
        """The module of this variant, with the weights it is constructed with."""
        return self.construct(getattr(self.config, self.config_field))

    def shape_ranges(self) -> dict[str, dict[str, int]]:
        """min/opt/max of the symbolic axes: guidance batch, frames, latent size and the image size it decodes to."""
        c, f = self.config, self.config.vae_factor
        lh, lw = c.height // f, c.width // f
        latent_height = {"min": max(1, lh // 2), "opt": lh, "max": lh * 2}
        latent_width = {"min": max(1, lw // 2), "opt": lw, "max": lw * 2}
        return {
            "batch": {"min": 1, "opt": 1 if self.guidance_free else 2, "max": 4},
            "frames": {"min": 1, "opt": c.frames, "max": max(24, c.frames)},
            "latent_height": latent_height,
            "latent_width": latent_width,
            "height": {k: v * f for k, v in latent_height.items()},
            "width": {k: v * f for k, v in latent_width.items()},
        }

    @property
    def guidance_free(self) -> bool:
        """Whether the variant samples without a guidance branch (T2V-Turbo's LCM: batch 1 per video)."""
        return self.config.inference.get("sampler") == "lcm"

    def opt_shape(self) -> ExampleShape:
        """The profile's opt shape (what benchmarks time; the default of :meth:`example_inputs`)."""
        f = self.config.vae_factor
        return ExampleShape(self.config.frames, self.config.height // f, self.config.width // f, self.config.frames)

    def trace_shape(self) -> ExampleShape:
        """A small shape inside the profile to trace and check at: at most 4 frames, the smallest latent size the
        UNet's downsampling allows. The axes stay symbolic, so the manifest keeps the variant's profile while
        the one traced forward (and its attention maps) stays small."""
        ranges = self.shape_ranges()
        multiple = 2 ** (len(self.config.unet["channel_mult"]) - 1)

        def smallest(axis: str) -> int:
            return -(-ranges[axis]["min"] // multiple) * multiple

        return ExampleShape(min(4, self.config.frames), smallest("latent_height"), smallest("latent_width"), 1)


class TextEncoderSpec(VideoCrafterComponent):
    """OpenCLIP text encoder (penultimate layer): token ids -> context."""

    name = "text_encoder"
    config_field = "text"
    prefix = "cond_stage_model.model."
    seed_offset = 2

    @staticmethod
    def construct(args: dict) -> OpenCLIPTextEncoder:
        return OpenCLIPTextEncoder(args["text_cfg"], args["embed_dim"], layer=args.get("layer", "penultimate"))

    def graphs(self) -> tuple[Graph, ...]:
        return (TEXT_ENCODER,)

    def example_inputs(self, module, shape: ExampleShape | None = None) -> dict[str, dict[str, np.ndarray]]:
        return {TEXT_ENCODER.name: {"tokens": ClipTokenizer()(EXAMPLE_PROMPTS, context_length=TEXT_TOKENS)}}


class UNetSpec(VideoCrafterComponent):
    """The 3D UNet, one denoising step on a guidance batch of 2 (T2V-Turbo: batch 1 per video, plus its
    condition embeddings)."""

    name = "unet"
    config_field = "unet"
    prefix = "model.diffusion_model."
    seed_offset = 0

    @staticmethod
    def construct(args: dict) -> UNetModel:
        return UNetModel(**args)

    def graphs(self) -> tuple[Graph, ...]:
        return (unet_graph(unet_conditions(self.config.unet)),)

    def example_inputs(self, module, shape: ExampleShape | None = None) -> dict[str, dict[str, np.ndarray]]:
        shape = shape or self.opt_shape()
        image_tokens = self.config.image_proj["num_queries"] if self.config.mode == "i2v" else 0
        return {"unet": example_unet_inputs(self.config.unet, batch=2, frames=shape.frames,
                                            height=shape.latent_height, width=shape.latent_width,
                                            context_length=TEXT_TOKENS + image_tokens)}


class VAESpec(VideoCrafterComponent):
    """The VAE, as two graphs: the per-frame decoder and the encoder."""

    name = "vae"
    config_field = "vae"
    prefix = "first_stage_model."
    seed_offset = 1

    @staticmethod
    def construct(args: dict) -> AutoencoderKL:
        return AutoencoderKL(**args)

    def graphs(self) -> tuple[Graph, ...]:
        return (VAE_DECODER, VAE_ENCODER)

    def example_inputs(self, module, shape: ExampleShape | None = None) -> dict[str, dict[str, np.ndarray]]:
        shape, f = shape or self.opt_shape(), self.config.vae_factor
        generator = torch.Generator().manual_seed(0)
        z = torch.randn(shape.vae_frames, 4, shape.latent_height, shape.latent_width, generator=generator)
        frames = torch.rand(2, 3, shape.latent_height * f, shape.latent_width * f, generator=generator) * 2 - 1
        return {VAE_DECODER.name: {"z": z.numpy()}, VAE_ENCODER.name: {"frames": frames.numpy()}}


class ImageEncoderSpec(VideoCrafterComponent):
    """OpenCLIP vision tower (I2V): pixels -> patch tokens."""

    name = "image_encoder"
    config_field = "image_encoder"
    prefix = "embedder.model.visual."
    seed_offset = 3
    i2v_only = True

    @staticmethod
    def construct(args: dict) -> OpenCLIPVisionTokens:
        return OpenCLIPVisionTokens(args["vision_cfg"], args["embed_dim"])

    def graphs(self) -> tuple[Graph, ...]:
        return (IMAGE_ENCODER,)

    def example_inputs(self, module, shape: ExampleShape | None = None) -> dict[str, dict[str, np.ndarray]]:
        size = self.config.image_encoder["vision_cfg"]["image_size"]
        pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        return {IMAGE_ENCODER.name: {"pixels": pixels.numpy()}}


class ImageProjSpec(VideoCrafterComponent):
    """The Resampler (I2V): image tokens -> context tokens appended to the text context."""

    name = "image_proj"
    config_field = "image_proj"
    prefix = "image_proj_model."
    seed_offset = 4
    i2v_only = True

    @staticmethod
    def construct(args: dict) -> Resampler:
        return Resampler(**args)

    def graphs(self) -> tuple[Graph, ...]:
        return (IMAGE_PROJ,)

    def example_inputs(self, module, shape: ExampleShape | None = None) -> dict[str, dict[str, np.ndarray]]:
        vision = self.config.image_encoder["vision_cfg"]
        patches = vision["image_size"] // vision["patch_size"]
        tokens = torch.randn(2, patches**2 + 1, vision["width"], generator=torch.Generator().manual_seed(0))
        return {IMAGE_PROJ.name: {"image_tokens": tokens.numpy()}}


# Every component, in the order a bundle exports them.
COMPONENTS: dict[str, type[VideoCrafterComponent]] = {
    spec.name: spec for spec in (TextEncoderSpec, UNetSpec, VAESpec, ImageEncoderSpec, ImageProjSpec)}
PREFIXES = {name: spec.prefix for name, spec in COMPONENTS.items()}


def component_specs(config: VariantConfig) -> list[VideoCrafterComponent]:
    """The components a bundle of ``config`` has (I2V variants add the image encoder and projection)."""
    return [spec(config) for spec in COMPONENTS.values() if config.mode == "i2v" or not spec.i2v_only]


def component_spec(config: VariantConfig, name: str) -> VideoCrafterComponent:
    """The component ``name`` of ``config``."""
    if name not in COMPONENTS:
        raise ValueError(f"unknown VideoCrafter1 component {name!r}; expected one of {list(COMPONENTS)}")
    return COMPONENTS[name](config)
