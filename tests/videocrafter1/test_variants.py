"""The named VideoCrafter2 variant equals the official v2.0 yaml read through ``--config``."""
from __future__ import annotations

import yaml

from export.videocrafter1.bundle import pipeline_constants
from export.videocrafter1.presets import from_yaml, released_variants
from runtime.videocrafter1.constants import SCALE_KEYS


def _official_yaml(v2: bool) -> dict:
    """The model section of the official ``inference_t2v_512_v1.0.yaml``; with ``v2`` the five settings in which
    ``inference_t2v_512_v2.0.yaml`` differs from it."""
    unet = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "attention_resolutions": [4, 2, 1],
            "num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "num_head_channels": 64, "transformer_depth": 1,
            "context_dim": 1024, "use_linear": True, "use_checkpoint": True, "temporal_conv": False,
            "temporal_attention": True, "temporal_selfatt_only": True, "use_relative_position": True,
            "use_causal_attention": False, "temporal_length": 16, "addition_attention": True}
    params = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "scale_factor": 0.18215,
              "unet_config": {"params": unet},
              "first_stage_config": {"params": {
                  "embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 512, "in_channels": 3,
                                               "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
                                               "attn_resolutions": [], "dropout": 0.0},
                  "lossconfig": {"target": "torch.nn.Identity"}}},
              "cond_stage_config": {"params": {"freeze": True, "layer": "penultimate"}}}
    if v2:
        unet.update(temporal_conv=True, use_relative_position=False, fps_cond=True)
        params.update(use_scale=True, scale_b=0.7)
    return {"model": {"params": params}}


def test_named_variant_equals_the_v2_yaml(tmp_path):
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(_official_yaml(v2=True)))
    from_config = from_yaml(tmp_path / "v2.yaml", released_variants()["t2v-512"])
    named = released_variants()["t2v-512-v2"]
    assert named.unet == from_config.unet and named.vae == from_config.vae
    official_defaults = {"scale_a": 1.0, "mid_step": 400, "fix_scale_bug": False}  # LatentDiffusion's defaults
    assert {k: named.inference[k] for k in SCALE_KEYS} == {**official_defaults, "use_scale": True, "scale_b": 0.7}
    assert {k: from_config.inference[k] for k in ("use_scale", "scale_b")} == {"use_scale": True, "scale_b": 0.7}
    constants = pipeline_constants(named)
    assert (constants.fps, constants.fps_cond) == (28, True)  # the official v2 run script's --fps 28
    sampling = constants.sampling
    assert (sampling.sampler_name, sampling.steps, sampling.eta, sampling.guidance_scale) == ("ddim", 50, 1.0, 12.0)
    # the yaml names two scale settings; the schedule takes the official defaults for the other three
    assert pipeline_constants(from_config).sampling.diffusion == sampling.diffusion


def test_v1_yaml_still_gives_t2v_512(tmp_path):
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(_official_yaml(v2=False)))
    assert from_yaml(tmp_path / "v1.yaml", released_variants()["t2v-512"]).unet == released_variants()["t2v-512"].unet
