"""VideoCrafter1 model configurations: the released variants and the ``tiny`` presets.

Every config is the OFFICIAL constructor arguments of each component (as in the
released ``inference_*_v1.0.yaml``), so a released checkpoint and a golden case
build through the same code. ``from_yaml`` reads an official inference yaml.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.videocrafter1.openclip import VIT_H_14_EMBED_DIM, VIT_H_14_TEXT, VIT_H_14_VISION
from runtime.videocrafter1.constants import SCALE_KEYS

# The released Resampler (``image_proj_model``) of I2V-512.
IMAGE_PROJ_I2V_512 = {"dim": 1024, "depth": 4, "dim_head": 64, "heads": 12, "num_queries": 16,
                      "embedding_dim": 1280, "output_dim": 1024, "ff_mult": 4}

_UNET_COMMON = {
    "in_channels": 4, "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2, 1],
    "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "transformer_depth": 1,
    "context_dim": 1024, "use_linear": True, "use_checkpoint": True, "temporal_attention": True,
    "temporal_selfatt_only": True, "use_causal_attention": False, "temporal_length": 16,
    "addition_attention": True,
}
_VAE_SD = {
    "embed_dim": 4,
    "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 512, "in_channels": 3, "out_ch": 3, "ch": 128,
                 "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0},
    "lossconfig": {"target": "torch.nn.Identity"},
}
# The settings of scripts/evaluation/inference.py (sampling, fps) and the DDPM settings of the yaml.
_INFERENCE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "steps": 50, "eta": 1.0,
            "guidance_scale": 12.0, "fps": 24, "save_fps": 10, "scale_factor": 0.18215}


@dataclass
class VariantConfig:
    """Everything needed to build and export one VideoCrafter1 variant."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    inference: dict[str, Any]  # the inference script's settings and the model's DDPM settings (_INFERENCE)
    height: int
    width: int
    frames: int
    image_encoder: dict[str, Any] | None = None
    image_proj: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "i2v" if self.unet.get("use_image_attention") else "t2v"

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae["ddconfig"]["ch_mult"]) - 1)


def _released(name: str, unet_extra: dict, height: int, width: int, inference_extra: dict | None = None
              ) -> VariantConfig:
    return VariantConfig(
        name=name,
        unet={**_UNET_COMMON, **unet_extra},
        vae=copy.deepcopy(_VAE_SD),
        text={"text_cfg": dict(VIT_H_14_TEXT), "embed_dim": VIT_H_14_EMBED_DIM, "layer": "penultimate"},
        inference={**_INFERENCE, **(inference_extra or {})},
        height=height,
        width=width,
        frames=16,
    )


def _released_i2v() -> VariantConfig:
    config = _released(
        "i2v-512",
        {"temporal_conv": True, "use_relative_position": False, "use_image_attention": True, "fps_cond": True},
        320, 512, {"use_scale": True, "scale_a": 1.0, "scale_b": 0.7, "mid_step": 400, "fix_scale_bug": False},
    )
    config.image_encoder = {"vision_cfg": dict(VIT_H_14_VISION), "embed_dim": VIT_H_14_EMBED_DIM}
    config.image_proj = dict(IMAGE_PROJ_I2V_512)
    return config


def _released_v2() -> VariantConfig:
    """VideoCrafter2 (``inference_t2v_512_v2.0.yaml``): T2V-512 with temporal conv instead of relative
    position, fps conditioning and the scale schedule (scale_b 0.7); its run script samples at fps 28."""
    config = _released(
        "t2v-512-v2", {"temporal_conv": True, "use_relative_position": False, "fps_cond": True}, 320, 512,
        {"use_scale": True, "scale_a": 1.0, "scale_b": 0.7, "mid_step": 400, "fix_scale_bug": False, "fps": 28},
    )
    config.notes.append("VideoCrafter2 (inference_t2v_512_v2.0.yaml)")
    return config


# T2V-Turbo (Ji4chenLi/t2v-turbo): the projections of the guidance-scale (and motion) embedding, and the LCM
# settings of its entry points. v1 (VideoCrafter2 + LoRA): the v1-era app and Replicate predictor, 4 steps, w 7.5,
# the pipeline's lcm_origin_steps 50, fps 16 (the v1 training fps). v2 (full UNet): lcm_origin_steps 200 and fps 8
# (the app and predictor), the app's 8 steps (the predictor's 16 cost twice the UNet calls), and the predictor's
# motion guidance (0.05 over the first half of the timesteps), which the v2 UNet was trained with.
TURBO_UNET = {"time_cond_proj_dim": 256}
TURBO_V2_UNET = {**TURBO_UNET, "motion_cond_proj_dim": 256}
TURBO_INFERENCE = {"sampler": "lcm", "steps": 4, "guidance_scale": 7.5, "lcm_origin_steps": 50, "fps": 16,
                   "save_fps": 16}
TURBO_V2_INFERENCE = {**TURBO_INFERENCE, "steps": 8, "lcm_origin_steps": 200, "fps": 8, "save_fps": 8,
                      "use_motion_cond": True, "motion_gs": 0.05, "motion_percentage": 0.5}


def _turbo(base: VariantConfig, name: str, unet_extra: dict, inference_extra: dict, note: str) -> VariantConfig:
    """``base`` (a VideoCrafter2-like config) as T2V-Turbo: the extra UNet projections and the LCM settings."""
    config = copy.deepcopy(base)
    config.name = name
    config.unet.update(unet_extra)
    config.inference.update(inference_extra)
    config.notes.append(note)
    return config


def released_variants() -> dict[str, VariantConfig]:
    v2 = _released_v2()
    return {
        "t2v-512-v2": v2,
        "t2v-turbo-vc2": _turbo(v2, "t2v-turbo-vc2", TURBO_UNET, TURBO_INFERENCE,
                                "T2V-Turbo v1 (VideoCrafter2 + LoRA), LCM 4 steps"),
        "t2v-turbo-v2": _turbo(v2, "t2v-turbo-v2", TURBO_V2_UNET, TURBO_V2_INFERENCE,
                               "T2V-Turbo v2 (full UNet), LCM 8 steps with motion guidance"),
        "i2v-512": _released_i2v(),
        "t2v-512": _released("t2v-512", {"temporal_conv": False, "use_relative_position": True}, 320, 512),
        "t2v-1024": _released(
            "t2v-1024", {"temporal_conv": False, "use_relative_position": True, "fps_cond": True}, 576, 1024,
            {"use_scale": True, "scale_a": 1.0, "scale_b": 0.3, "mid_step": 400, "fix_scale_bug": True},
        ),
    }


def tiny_t2v() -> VariantConfig:
    """A small T2V model with every released T2V code path on (seeded random weights)."""
    return VariantConfig(
        name="tiny-t2v",
        unet={
            "in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [2, 1],
            "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 16, "transformer_depth": 1,
            "context_dim": 32, "use_linear": True, "use_checkpoint": False, "temporal_attention": True,
            "temporal_selfatt_only": True, "use_causal_attention": False, "temporal_length": 8,
            "addition_attention": True, "temporal_conv": False, "use_relative_position": True,
        },
        vae={
            "embed_dim": 4,
            "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3,
                         "ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_resolutions": [],
                         "dropout": 0.0},
            "lossconfig": {"target": "torch.nn.Identity"},
        },
        text={"text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
              "embed_dim": 32, "layer": "penultimate"},
        inference={**_INFERENCE, "steps": 10},
        height=64,
        width=64,
        frames=8,
    )


def tiny_i2v() -> VariantConfig:
    """A small I2V model: temporal conv, image cross-attention, fps conditioning, the scale schedule."""
    config = tiny_t2v()
    config.name = "tiny-i2v"
    config.unet.update(temporal_conv=True, use_relative_position=False, use_image_attention=True, fps_cond=True)
    config.inference.update(use_scale=True, scale_a=1.0, scale_b=0.7, mid_step=400, fix_scale_bug=False)
    config.image_encoder = {"vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 14,
                                           "head_width": 16}, "embed_dim": 16}
    config.image_proj = {"dim": 32, "depth": 2, "dim_head": 8, "heads": 4, "num_queries": 4, "embedding_dim": 32,
                         "output_dim": 32, "ff_mult": 2}
    return config


def tiny_t2v_v2() -> VariantConfig:
    """A small VideoCrafter2-like T2V model: temporal conv, fps conditioning, the scale schedule."""
    config = tiny_t2v()
    config.name = "tiny-t2v-v2"
    config.unet.update(temporal_conv=True, use_relative_position=False, fps_cond=True)
    config.inference.update(use_scale=True, scale_a=1.0, scale_b=0.7, mid_step=400, fix_scale_bug=False)
    return config


def tiny_turbo_variants() -> dict[str, VariantConfig]:
    """The small T2V-Turbo models (v1 and v2 layouts) with the released variants' LCM settings."""
    return {
        "tiny-t2v-turbo": _turbo(tiny_t2v_v2(), "tiny-t2v-turbo", TURBO_UNET, TURBO_INFERENCE,
                                 "small T2V-Turbo v1 layout"),
        "tiny-t2v-turbo-v2": _turbo(tiny_t2v_v2(), "tiny-t2v-turbo-v2", TURBO_V2_UNET, TURBO_V2_INFERENCE,
                                    "small T2V-Turbo v2 layout"),
    }


def tiny_variants() -> dict[str, VariantConfig]:
    return {"tiny-t2v": tiny_t2v(), "tiny-i2v": tiny_i2v(), **tiny_turbo_variants()}


def from_yaml(path: str | Path, variant: VariantConfig) -> VariantConfig:
    """Override ``variant``'s model configs with those of an official inference yaml."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    params = (yaml.safe_load(text) or {}).get("model", {}).get("params")
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected an official inference yaml with model.params; found none")
    config = copy.deepcopy(variant)
    try:
        config.unet = dict(params["unet_config"]["params"])
        first_stage = params["first_stage_config"]["params"]
        config.vae = {k: first_stage[k] for k in ("embed_dim", "ddconfig", "lossconfig") if k in first_stage}
        config.inference["linear_start"] = params.get("linear_start", config.inference["linear_start"])
        config.inference["linear_end"] = params.get("linear_end", config.inference["linear_end"])
        config.inference["timesteps"] = params.get("timesteps", config.inference["timesteps"])
        config.inference["scale_factor"] = params.get("scale_factor", config.inference["scale_factor"])
        for key in SCALE_KEYS:
            if key in params:
                config.inference[key] = params[key]
        if "image_proj_stage_config" in params:
            config.image_proj = dict(params["image_proj_stage_config"]["params"])
        layer = params["cond_stage_config"].get("params", {}).get("layer", "penultimate")
        config.text = {**config.text, "layer": layer}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: missing {exc} in model.params; is this a VideoCrafter1 inference yaml?") from exc
    config.notes.append(f"model configs read from {Path(path).name}")
    return config
