"""ImageBind per-modality encoders with the official ``ImageBindModel`` key names.

``build_encoder(modality, config)`` takes the official constructor arguments (a golden
case's ``config``, or :data:`IMAGEBIND_HUGE`) and returns a :class:`ModalityEncoder` whose
``state_dict`` keys are exactly that modality's keys of the released checkpoint:
``modality_{preprocessors,trunks,heads,postprocessors}.<modality>.*``.

Inputs per modality (one item; a leading clip axis ``(B, S, ...)`` is also accepted):

==========  =======================================================================
vision      image (N, 3, 224, 224) float, or 2-frame clip (N, 3, 2, 224, 224) given
            as (B, S, 3, 2, 224, 224) to :meth:`ModalityEncoder.forward`
text        token ids (N, 77) int64
audio       mel clip (N, 1, 128, 204), or (B, S, 1, 128, 204) clips
depth       (N, 1, 224, 224);  thermal: (N, 1, 224, 224)
imu         (N, 6, 2000)
==========  =======================================================================
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from .heads import IMU_HEAD_DROPOUT, SelectEOSAndProject, cls_head, postprocessor
from .preprocessors import (STEM_LN_EPS, IMUPreprocessor, PadIm2Video, PatchEmbedGeneric, RGBDTPreprocessor,
                            TextPreprocessor)
from .trunk import SimpleTransformer

MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
CLIP_RANK = 5  # inputs of this rank or more are (B, S, ...): S clips per sample, averaged after the postprocessor

IMAGE_SIZE = 224
TEXT_VOCAB_SIZE = 49408
TEXT_CONTEXT_LENGTH = 77
IMU_CHANNELS = 6
IMU_SAMPLES = 2000
VIDEO_PAD_FRAMES = 2

# ``ImageBindModel.__init__`` defaults (drop paths are accepted but inactive at inference).
IMAGEBIND_DEFAULTS: dict[str, Any] = {
    "video_frames": 2, "kernel_size": (2, 14, 14), "audio_kernel_size": 16, "audio_stride": 10,
    "out_embed_dim": 768, "vision_embed_dim": 1024, "vision_num_blocks": 24, "vision_num_heads": 16,
    "audio_embed_dim": 768, "audio_num_blocks": 12, "audio_num_heads": 12, "audio_num_mel_bins": 128,
    "audio_target_len": 204, "audio_drop_path": 0.1, "text_embed_dim": 768, "text_num_blocks": 12,
    "text_num_heads": 12, "depth_embed_dim": 384, "depth_kernel_size": 16, "depth_num_blocks": 12,
    "depth_num_heads": 8, "depth_drop_path": 0.0, "thermal_embed_dim": 768, "thermal_kernel_size": 16,
    "thermal_num_blocks": 12, "thermal_num_heads": 12, "thermal_drop_path": 0.0, "imu_embed_dim": 512,
    "imu_kernel_size": 8, "imu_num_blocks": 6, "imu_num_heads": 8, "imu_drop_path": 0.7,
}

# The released ``imagebind_huge`` overrides.
IMAGEBIND_HUGE: dict[str, Any] = {
    "vision_embed_dim": 1280, "vision_num_blocks": 32, "vision_num_heads": 16, "text_embed_dim": 1024,
    "text_num_blocks": 24, "text_num_heads": 16, "out_embed_dim": 1024, "audio_drop_path": 0.1,
    "imu_drop_path": 0.7,
}

FIXED_LOGIT_SCALES = {"audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}
TEXT_LOGIT_SCALE_INIT = 1 / 0.07


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The official defaults overridden by ``config``; unknown argument names are an error."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(IMAGEBIND_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown ImageBindModel arguments {unknown}; expected names from {sorted(IMAGEBIND_DEFAULTS)}")
    return {**IMAGEBIND_DEFAULTS, **config}


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def _trunk(cfg: Mapping[str, Any], m: str, *, pre_ln: bool = False, bias_kv: bool = True) -> SimpleTransformer:
    return SimpleTransformer(cfg[f"{m}_embed_dim"], cfg[f"{m}_num_blocks"], cfg[f"{m}_num_heads"],
                             pre_transformer_ln=pre_ln, add_bias_kv=bias_kv)


def _vision(cfg: Mapping[str, Any]) -> tuple[nn.Module, ...]:
    dim, (kt, kh, kw) = cfg["vision_embed_dim"], cfg["kernel_size"]
    conv = nn.Conv3d(3, dim, kernel_size=(kt, kh, kw), stride=(kt, kh, kw), bias=False)
    stem = PatchEmbedGeneric(nn.Sequential(PadIm2Video(VIDEO_PAD_FRAMES), conv))
    frames = VIDEO_PAD_FRAMES if cfg["video_frames"] == 1 else cfg["video_frames"]  # PadIm2Video repeats 1 frame
    patches = _conv_out(frames, kt, kt) * _conv_out(IMAGE_SIZE, kh, kh) * _conv_out(IMAGE_SIZE, kw, kw)
    return (RGBDTPreprocessor("vision", "rgbt_stem", stem, patches, dim),
            _trunk(cfg, "vision", pre_ln=True, bias_kv=False), cls_head(dim, cfg["out_embed_dim"]), postprocessor(None))


def _text(cfg: Mapping[str, Any]) -> tuple[nn.Module, ...]:
    dim = cfg["text_embed_dim"]
    return (TextPreprocessor(TEXT_VOCAB_SIZE, TEXT_CONTEXT_LENGTH, dim), _trunk(cfg, "text", bias_kv=False),
            SelectEOSAndProject(dim, cfg["out_embed_dim"]), postprocessor(TEXT_LOGIT_SCALE_INIT, learnable=True))


def _audio(cfg: Mapping[str, Any]) -> tuple[nn.Module, ...]:
    dim, kernel, stride = cfg["audio_embed_dim"], cfg["audio_kernel_size"], cfg["audio_stride"]
    conv = nn.Conv2d(1, dim, kernel_size=kernel, stride=stride, bias=False)
    stem = PatchEmbedGeneric(conv, nn.LayerNorm(dim, eps=STEM_LN_EPS))
    patches = _conv_out(cfg["audio_num_mel_bins"], kernel, stride) * _conv_out(cfg["audio_target_len"], kernel, stride)
    return (RGBDTPreprocessor("audio", "rgbt_stem", stem, patches, dim), _trunk(cfg, "audio"),
            cls_head(dim, cfg["out_embed_dim"]), postprocessor(FIXED_LOGIT_SCALES["audio"]))


def _single_channel_image(m: str, stem_name: str) -> Callable[[Mapping[str, Any]], tuple[nn.Module, ...]]:
    """Depth and thermal: Conv2d(1 -> D, kernel = stride) + LayerNorm stem on a 224 image."""

    def build(cfg: Mapping[str, Any]) -> tuple[nn.Module, ...]:
        dim, kernel = cfg[f"{m}_embed_dim"], cfg[f"{m}_kernel_size"]
        conv = nn.Conv2d(1, dim, kernel_size=kernel, stride=kernel, bias=False)
        stem = PatchEmbedGeneric(conv, nn.LayerNorm(dim, eps=STEM_LN_EPS))
        patches = _conv_out(IMAGE_SIZE, kernel, kernel) ** 2
        return (RGBDTPreprocessor(m, stem_name, stem, patches, dim), _trunk(cfg, m),
                cls_head(dim, cfg["out_embed_dim"]), postprocessor(FIXED_LOGIT_SCALES[m]))

    return build


def _imu(cfg: Mapping[str, Any]) -> tuple[nn.Module, ...]:
    dim = cfg["imu_embed_dim"]
    return (IMUPreprocessor(IMU_CHANNELS, IMU_SAMPLES, dim), _trunk(cfg, "imu"),
            cls_head(dim, cfg["out_embed_dim"], dropout=IMU_HEAD_DROPOUT), postprocessor(FIXED_LOGIT_SCALES["imu"]))


BUILDERS: dict[str, Callable[[Mapping[str, Any]], tuple[nn.Module, ...]]] = {
    "vision": _vision, "text": _text, "audio": _audio, "depth": _single_channel_image("depth", "depth_stem"),
    "thermal": _single_channel_image("thermal", "rgbt_stem"), "imu": _imu,
}


def _over_clips(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply ``fn`` per item; a rank >= 5 input (B, S, ...) runs as B*S items and comes back as (B, S, ...)."""
    if x.dim() < CLIP_RANK:
        return fn(x)
    batch, clips = x.shape[:2]
    return fn(x.flatten(0, 1)).unflatten(0, (batch, clips))


class ModalityEncoder(nn.Module):
    """One modality of ``ImageBindModel``: preprocessor -> trunk -> head -> postprocessor.

    The four stages sit in one-entry ``ModuleDict``s named as in the official model, so the
    keys are the released checkpoint's keys for ``modality``.
    """

    def __init__(self, modality: str, preprocessor: nn.Module, trunk: nn.Module, head: nn.Module,
                 post: nn.Module):
        super().__init__()
        self.modality = modality
        self.modality_preprocessors = nn.ModuleDict({modality: preprocessor})
        self.modality_trunks = nn.ModuleDict({modality: trunk})
        self.modality_heads = nn.ModuleDict({modality: head})
        self.modality_postprocessors = nn.ModuleDict({modality: post})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Head output (N, out_dim) of one batch of items (no clip axis), before the postprocessor."""
        m = self.modality
        pre = self.modality_preprocessors[m](x)
        tokens = self.modality_trunks[m](pre.tokens, pre.attn_mask)
        head = self.modality_heads[m]
        return head(tokens) if pre.pool_index is None else head(tokens, pre.pool_index)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Post-processed embedding (N, out_dim) of one batch of items (no clip axis)."""
        return self.modality_postprocessors[self.modality](self.features(x))

    def head_output(self, x: torch.Tensor) -> torch.Tensor:
        """Head output with the official clip rule: (N, out_dim), or (B, S, out_dim) for rank >= 5."""
        return _over_clips(self.features, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``ImageBindModel({modality: x})[modality]``: per-clip embeddings averaged over S for rank >= 5."""
        embedding = _over_clips(self.encode, x)
        return embedding.mean(dim=1) if x.dim() >= CLIP_RANK else embedding


def build_encoder(modality: str, config: Mapping[str, Any] | None = None) -> ModalityEncoder:
    """The ``modality`` encoder of ``ImageBindModel(**config)`` (official defaults for missing arguments).

    Use ``IMAGEBIND_HUGE`` for the released checkpoint; a golden case's ``config`` for its weights.
    """
    if modality not in BUILDERS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return ModalityEncoder(modality, *BUILDERS[modality](resolve_config(config)))
