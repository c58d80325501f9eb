"""ImageBind's modality preprocessors: stems that turn raw inputs into tokens.

Submodule and parameter names follow ``imagebind/models/multimodal_preprocessors.py``
(``rgbt_stem``/``depth_stem``/``imu_stem``, ``cls_token``, ``pos_embedding_helper.pos_embed``,
``token_embedding``, ``mask``) so checkpoint keys load unchanged. Position embeddings and
cls tokens are learned and added as-is; inputs whose token count differs from the
position table are refused (the official bicubic interpolation is never active at the
released input sizes).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

STEM_LN_EPS = 1e-5
IMU_WINDOW = 8


class PreprocessorOutput(NamedTuple):
    """Tokens for the trunk, plus the text-only causal mask and pooling index."""

    tokens: torch.Tensor
    attn_mask: torch.Tensor | None = None
    pool_index: torch.Tensor | None = None


def _learned(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))


def _check_token_count(found: int, expected: int, modality: str) -> None:
    if found != expected:
        raise ValueError(
            f"{modality} input gives {found} tokens but the position embedding has {expected}; "
            "feed the released input size (see build_encoder's docstring)"
        )


def _prepend_cls_add_pos(tokens: torch.Tensor, cls_token: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
    cls = cls_token.expand(tokens.shape[0], 1, cls_token.shape[2])
    return torch.cat([cls, tokens], dim=1) + pos_embed


class PadIm2Video(nn.Module):
    """An image (N, C, H, W) becomes a clip of ``ntimes`` identical frames; a 1-frame clip is repeated."""

    def __init__(self, ntimes: int):
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            n, c, _, h, w = x.shape
            x = x.expand(n, c, self.ntimes, h, w)
        return x


class PatchEmbedGeneric(nn.Module):
    """``proj`` (a conv stem) -> flatten the spatial/temporal dims to tokens -> optional LayerNorm."""

    def __init__(self, proj: nn.Module, norm_layer: nn.Module | None = None):
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        return tokens if self.norm_layer is None else self.norm_layer(tokens)


class PositionEmbedding(nn.Module):
    """Holds ``pos_embed`` (1, tokens, D) under the official ``pos_embedding_helper`` name."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.pos_embed = _learned(1, num_tokens, dim)


class RGBDTPreprocessor(nn.Module):
    """Vision, audio, depth and thermal: patch stem, cls token first, learned positions.

    ``stem_name`` is ``rgbt_stem`` (vision, audio, thermal) or ``depth_stem`` (depth).
    """

    def __init__(self, modality: str, stem_name: str, stem: PatchEmbedGeneric, num_patches: int, dim: int):
        super().__init__()
        self.modality = modality
        self.stem_name = stem_name
        self.add_module(stem_name, stem)
        self.cls_token = _learned(1, 1, dim)
        self.pos_embedding_helper = PositionEmbedding(1 + num_patches, dim)

    def forward(self, x: torch.Tensor) -> PreprocessorOutput:
        tokens = getattr(self, self.stem_name)(x)
        pos_embed = self.pos_embedding_helper.pos_embed
        _check_token_count(1 + tokens.shape[1], pos_embed.shape[1], self.modality)
        return PreprocessorOutput(_prepend_cls_add_pos(tokens, self.cls_token, pos_embed))


class IMUStem(nn.Module):
    """(N, 6, T) -> windows of 8 samples, channel-major 48-vectors -> Linear -> LayerNorm."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(channels * IMU_WINDOW, dim, bias=False)
        self.norm_layer = nn.LayerNorm(dim, eps=STEM_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = x.reshape(x.shape[0], x.shape[1], -1, IMU_WINDOW).permute(0, 2, 1, 3).flatten(2)
        return self.norm_layer(self.proj(windows))


class IMUPreprocessor(nn.Module):
    """IMU: window stem, cls token first, learned ``pos_embed`` (no helper module)."""

    def __init__(self, channels: int, num_samples: int, dim: int):
        super().__init__()
        if num_samples % IMU_WINDOW:
            raise ValueError(f"IMU length must be a multiple of {IMU_WINDOW}, found {num_samples}")
        self.pos_embed = _learned(1, 1 + num_samples // IMU_WINDOW, dim)
        self.cls_token = _learned(1, 1, dim)
        self.imu_stem = IMUStem(channels, dim)

    def forward(self, x: torch.Tensor) -> PreprocessorOutput:
        expected = IMU_WINDOW * (self.pos_embed.shape[1] - 1)
        if x.shape[-1] != expected:
            raise ValueError(f"imu input must have {expected} time samples, found shape {tuple(x.shape)}")
        tokens = self.imu_stem(x)
        return PreprocessorOutput(_prepend_cls_add_pos(tokens, self.cls_token, self.pos_embed))


class TextPreprocessor(nn.Module):
    """Token ids (N, 77) -> embeddings + positions; causal mask buffer; pooling at argmax(ids)."""

    def __init__(self, vocab_size: int, context_length: int, dim: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.pos_embed = nn.Parameter(nn.init.normal_(torch.empty(1, context_length, dim), std=0.01))
        causal = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("mask", causal, persistent=True)

    def forward(self, ids: torch.Tensor) -> PreprocessorOutput:
        if ids.dim() != 2 or ids.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(f"text input must be token ids (N, {self.pos_embed.shape[1]}), found {tuple(ids.shape)}")
        tokens = self.token_embedding(ids) + self.pos_embed
        return PreprocessorOutput(tokens, attn_mask=self.mask, pool_index=ids.argmax(dim=-1))
