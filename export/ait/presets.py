"""AiT configurations: the released ``swinv2b_480reso_depthonly`` / ``swinv2b_640reso_inssegonly`` and their
``tiny-depth`` / ``tiny-insseg`` presets.

Every model dict holds the OFFICIAL constructor arguments (``ait/configs/*.py``: ``backbone``,
``transformer``, ``depth_head.vae_cfg``), so released checkpoints and golden cases build
through the same classes. Test-time settings are the ``DepthHead`` defaults
(``shift_window_test`` with ``shift_size`` 2, ``flip_test``) and NYUv2's 480x640 test images.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

# Vocabulary of the released configs: 2000 bins (+1), 80 classes, 2 specials, 128 mask codes, 128 depth codes.
_NUM_BINS, _NUM_CLASSES, _NUM_EMBEDDINGS, _NUM_EMBEDDINGS_DEPTH = 2000, 80, 128, 128


@dataclass
class DepthConfig:
    name: str
    backbone: dict[str, Any]
    transformer: dict[str, Any]
    vqvae: dict[str, Any]
    image_size: int  # square model input (= VQVAE mask size)
    test_size: tuple[int, int]  # (H, W) the TTA windows slide over
    shift_size: int = 2
    flip_test: bool = True
    min_depth: float = 1e-3
    max_depth: float = 10.0  # NYUv2 range; the official inference clips only the minimum
    notes: list[str] = field(default_factory=list)

    @property
    def feature_side(self) -> int:
        return self.image_size // 32

    @property
    def token_length(self) -> int:
        return self.vqvae["token_length"]


def swinv2b_480reso_depthonly() -> DepthConfig:
    num_vocal = _NUM_BINS + 1 + _NUM_CLASSES + 2 + _NUM_EMBEDDINGS + _NUM_EMBEDDINGS_DEPTH
    return DepthConfig(
        name="swinv2b_480reso_depthonly",
        backbone={"pretrain_img_size": 192, "embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32],
                  "window_size": [30, 30, 30, 15], "use_shift": [True, True, False, False],
                  "pretrain_window_size": [12, 12, 12, 6], "ape": False, "drop_path_rate": 0.1,
                  "patch_norm": True, "use_checkpoint": False, "out_indices": [3]},
        transformer={"in_chans": 1024, "d_model": 256, "drop_path": 0.1, "drop_out": 0.1, "nhead": 8,
                     "dim_feedforward": 1024, "num_encoder_layers": 6, "num_decoder_layers": 6,
                     "num_vocal": num_vocal, "num_bins": _NUM_BINS, "num_classes": _NUM_CLASSES,
                     "num_embeddings": _NUM_EMBEDDINGS, "num_embeddings_depth": _NUM_EMBEDDINGS_DEPTH,
                     "dec_length": 2100, "n_rows": 15, "n_cols": 15, "pos_enc": "sine", "pred_eos": False,
                     "soft_vae": True, "soft_transformer": True, "top_p": 0.0},
        vqvae={"use_norm": False, "token_length": 225, "mask_size": 480, "embedding_dim": 512, "hidden_dim": 256,
               "num_resnet_blocks": 2, "num_embeddings": _NUM_EMBEDDINGS_DEPTH, "tau": 0.8},
        image_size=480,
        test_size=(480, 640),
    )


def tiny_depth() -> DepthConfig:
    """Small model, every released code path on: post-norm Swin V2 with shifted and plain stages,
    sine encoder positions, soft tokens + soft VQVAE, two TTA windows with flips."""
    base = swinv2b_480reso_depthonly()
    return DepthConfig(
        name="tiny-depth",
        backbone={**base.backbone, "pretrain_img_size": 64, "embed_dim": 16, "depths": [1, 1, 2, 1],
                  "num_heads": [2, 2, 4, 4], "window_size": [4, 4, 4, 2], "pretrain_window_size": [4, 4, 4, 2],
                  "rpe_hidden_dim": 32, "drop_path_rate": 0.0},
        transformer={**base.transformer, "in_chans": 128, "d_model": 32, "drop_path": 0.0, "drop_out": 0.0,
                     "nhead": 4, "dim_feedforward": 64, "num_encoder_layers": 2, "num_decoder_layers": 2,
                     "num_vocal": 40, "num_bins": 10, "num_classes": 3, "num_embeddings": 8,
                     "num_embeddings_depth": 16, "dec_length": 20, "n_rows": 4, "n_cols": 4},
        vqvae={**base.vqvae, "token_length": 16, "mask_size": 128, "embedding_dim": 32, "hidden_dim": 64,
               "num_embeddings": 16},
        image_size=128,
        test_size=(128, 176),
    )


@dataclass
class InstanceConfig:
    """Instance segmentation (``InsSegHead``, task 1): ``num_query`` objects of 4 box + 1 class + mask tokens."""
    name: str
    backbone: dict[str, Any]
    transformer: dict[str, Any]
    vqvae: dict[str, Any]  # the instance-mask VQVAE (``insseg.vae_cfg``)
    image_size: int  # keep-ratio resize so the long side is image_size, then zero padding to a square
    norm_val: int  # box coordinates are absolute pixels / norm_val in [0, 1] ('abs' coord_norm)
    num_query: int = 100  # InsSegHead default; no EOS (pred_eos false): every query yields an object
    notes: list[str] = field(default_factory=list)

    @property
    def mask_tokens(self) -> int:
        return self.vqvae["token_length"]

    @property
    def object_length(self) -> int:
        return 5 + self.mask_tokens

    @property
    def token_length(self) -> int:
        return self.num_query * self.object_length


def swinv2b_640reso_inssegonly() -> InstanceConfig:
    """Vocabulary 2467: the depth config's 2339 plus 128 codes reserved for other tasks (``num_embeddings_others``)."""
    depth = swinv2b_480reso_depthonly()
    return InstanceConfig(
        name="swinv2b_640reso_inssegonly",
        backbone={**depth.backbone, "use_shift": [True, True, True, True], "drop_path_rate": 0.3},
        transformer={**depth.transformer, "num_vocal": depth.transformer["num_vocal"] + 128, "n_rows": 20,
                     "n_cols": 20, "top_p": 0.3},
        vqvae={"token_length": 16, "mask_size": 64, "embedding_dim": 512, "hidden_dim": 128, "num_resnet_blocks": 2,
               "num_embeddings": _NUM_EMBEDDINGS},
        image_size=640,
        norm_val=640,
    )


def tiny_insseg() -> InstanceConfig:
    """Small model on the released insseg code paths: all-shifted Swin V2, top-p 0.3 sampling, soft mask tokens."""
    base, depth = swinv2b_640reso_inssegonly(), tiny_depth()
    config = InstanceConfig(
        name="tiny-insseg",
        backbone={**depth.backbone, "use_shift": [True, True, True, True]},
        transformer={**depth.transformer, "top_p": base.transformer["top_p"]},
        vqvae={**base.vqvae, "embedding_dim": 32, "hidden_dim": 32,
               "num_embeddings": depth.transformer["num_embeddings"]},
        image_size=128,
        norm_val=128,
        num_query=3,
    )
    config.transformer["dec_length"] = config.token_length  # one learned decoder position per step
    return config


def released_variants() -> dict[str, DepthConfig | InstanceConfig]:
    return {"swinv2b_480reso_depthonly": swinv2b_480reso_depthonly(),
            "swinv2b_640reso_inssegonly": swinv2b_640reso_inssegonly()}


def tiny_variants() -> dict[str, DepthConfig | InstanceConfig]:
    return {"tiny-depth": tiny_depth(), "tiny-insseg": tiny_insseg()}


def variant(name: str) -> DepthConfig | InstanceConfig:
    variants = {**released_variants(), **tiny_variants()}
    if name not in variants:
        raise ValueError(f"unknown AiT variant {name!r}; expected one of {', '.join(sorted(variants))}")
    return copy.deepcopy(variants[name])
