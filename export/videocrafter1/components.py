"""VideoCrafter1 submodules as exported graphs: builders and export specs.

Graph tensor names are the golden cases' names, so a case's ``io.npz`` feeds a
graph directly and the runtime uses the same names.
"""
from __future__ import annotations

import torch

from export.graphs import GraphSpec, MethodGraph
from export.videocrafter1.openclip import OpenCLIPTextEncoder, OpenCLIPVisionTokens
from export.videocrafter1.resampler import Resampler
from export.videocrafter1.unet import UNetModel
from export.videocrafter1.vae import AutoencoderKL

PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.model.",
    "image_encoder": "embedder.model.visual.",
    "image_proj": "image_proj_model.",
}


def build_unet(config: dict) -> UNetModel:
    return UNetModel(**config)


def build_vae(config: dict) -> AutoencoderKL:
    return AutoencoderKL(**config)


def build_text_encoder(config: dict) -> OpenCLIPTextEncoder:
    return OpenCLIPTextEncoder(config["text_cfg"], config["embed_dim"], layer=config.get("layer", "penultimate"))


def build_image_encoder(config: dict) -> OpenCLIPVisionTokens:
    return OpenCLIPVisionTokens(config["vision_cfg"], config["embed_dim"])


def build_image_proj(config: dict) -> Resampler:
    return Resampler(**config)


def unet_spec(unet: UNetModel, fps_cond: bool) -> GraphSpec:
    video = {0: "batch", 2: "frames", 3: "latent_height", 4: "latent_width"}
    axes = {"x": video, "timesteps": {0: "batch"}, "context": {0: "batch", 1: "context_length"}, "eps": video}
    inputs = ["x", "timesteps", "context"]
    if fps_cond:
        inputs.append("fps")
        axes["fps"] = {0: "batch"}
    return GraphSpec("unet", MethodGraph(unet), inputs, ["eps"], axes)


def vae_decoder_spec(vae: AutoencoderKL) -> GraphSpec:
    axes = {"z": {0: "frames", 2: "latent_height", 3: "latent_width"},
            "decoded": {0: "frames", 2: "height", 3: "width"}}
    return GraphSpec("vae_decoder", MethodGraph(vae, "decode"), ["z"], ["decoded"], axes)


def vae_encoder_spec(vae: AutoencoderKL) -> GraphSpec:
    latent = {0: "frames", 2: "latent_height", 3: "latent_width"}
    axes = {"frames": {0: "frames", 2: "height", 3: "width"}, "posterior_mean": latent, "posterior_logvar": latent}
    return GraphSpec("vae_encoder", MethodGraph(vae, "encode"), ["frames"], ["posterior_mean", "posterior_logvar"], axes)


def text_encoder_spec(encoder: OpenCLIPTextEncoder) -> GraphSpec:
    axes = {"tokens": {0: "batch"}, "context": {0: "batch"}}
    return GraphSpec("text_encoder", MethodGraph(encoder), ["tokens"], ["context"], axes)


def example_unet_inputs(config: dict, *, batch: int, frames: int, height: int, width: int, context_length: int,
                        seed: int = 0) -> dict:
    """Seeded example inputs for one UNet step (what export traces and checks with)."""
    generator = torch.Generator().manual_seed(seed)
    feeds = {
        "x": torch.randn(batch, config["in_channels"], frames, height, width, generator=generator).numpy(),
        "timesteps": torch.randint(1, 1000, (batch,), generator=generator).numpy(),
        "context": torch.randn(batch, context_length, config["context_dim"], generator=generator).numpy(),
    }
    if config.get("fps_cond"):
        feeds["fps"] = torch.full((batch,), 24, dtype=torch.int64).numpy()
    return feeds


def image_encoder_spec(encoder: OpenCLIPVisionTokens) -> GraphSpec:
    axes = {"pixels": {0: "batch"}, "tokens": {0: "batch"}}
    return GraphSpec("image_encoder", MethodGraph(encoder), ["pixels"], ["tokens"], axes)


def image_proj_spec(resampler: Resampler) -> GraphSpec:
    axes = {"image_tokens": {0: "batch"}, "context_tokens": {0: "batch"}}
    return GraphSpec("image_proj", MethodGraph(resampler), ["image_tokens"], ["context_tokens"], axes)
