"""AiT's backbone: ``SwinV2TransformerRPE2FC`` (Swin V2, post-norm, cosine window attention).

Module layout mirrors the official ``ait/code/model/swin_transformer_v2_rpe2fc.py`` with its
released settings (relative coords ``norm8_log_bylayer``, attention ``cosine_mh``, RPE output
``sigmoid``, post-norm blocks, LayerNorm eps 1e-6), so ``backbone.*`` keys load unchanged.
The graph is static in H and W (masks and window counts are fixed at trace time); the batch
dimension stays dynamic.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.layers import Mlp

LN_EPS = 1e-6
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)
COSINE_EPS = 5e-5
RPE_SCALE = 16.0
SHIFT_MASK_VALUE = -100.0


def _norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LN_EPS)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window*window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, window*window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def log_spaced_coords_table(window: int, pretrain_window: int) -> torch.Tensor:
    """(1, 2w-1, 2w-1, 2) relative coordinates, normalised by the pretrain window, log8-spaced."""
    coords = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(coords, coords, indexing="ij")).permute(1, 2, 0).unsqueeze(0)
    table = table / (pretrain_window - 1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into the flattened (2w-1)^2 table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(hp: int, wp: int, window: int, shift: int) -> torch.Tensor:
    """(nW, N, N) additive mask (0 / -100) keeping shifted windows from mixing regions.

    Built in numpy so that a traced graph holds it as one constant.
    """
    img = np.zeros((hp, wp), dtype=np.float32)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for region, (hs, ws) in enumerate(itertools.product(bounds, bounds)):
        img[hs, ws] = region
    ids = img.reshape(hp // window, window, wp // window, window).transpose(0, 2, 1, 3).reshape(-1, window * window)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.from_numpy(np.where(diff != 0, SHIFT_MASK_VALUE, 0.0).astype(np.float32))


class WindowAttention(nn.Module):
    """Cosine attention with a per-head clamped logit scale and an MLP relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int, pretrain_window: int, rpe_hidden_dim: int):
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.rpe_mlp = nn.Sequential(nn.Linear(2, rpe_hidden_dim), nn.ReLU(inplace=True),
                                     nn.Linear(rpe_hidden_dim, num_heads, bias=False))
        self.register_buffer("relative_coords_table", log_spaced_coords_table(window, pretrain_window))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) = 16 * sigmoid(rpe_mlp(table)) gathered by relative position."""
        n = self.window * self.window
        table = self.rpe_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        return RPE_SCALE * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b_, n, c = x.shape
        bias = torch.cat((self.q_bias, self.v_bias.new_zeros(self.v_bias.shape[0]), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b_, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q / (q.norm(dim=-1, keepdim=True) + COSINE_EPS)
        k = k / (k.norm(dim=-1, keepdim=True) + COSINE_EPS)
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        attn = (q @ k.transpose(-2, -1)) * scale + self.position_bias().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x)


class SwinTransformerBlockPost(nn.Module):
    """x = x + norm1(W-MSA(x)); x = x + norm2(MLP(x))."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, pretrain_window: int,
                 rpe_hidden_dim: int, mlp_ratio: float):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = _norm(dim)
        self.attn = WindowAttention(dim, window, num_heads, pretrain_window, rpe_hidden_dim)
        self.norm2 = _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        b, _, c = x.shape
        y = x.view(b, h, w, c)
        pad_r, pad_b = (-w) % self.window, (-h) % self.window
        if pad_r or pad_b:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.window), mask if self.shift else None),
                           self.window, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(b, h * w, c)
        x = x + self.norm1(y)
        return x + self.norm2(self.mlp(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat -> Linear(4C, 2C) -> norm (post-norm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = _norm(2 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.norm(self.reduction(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One stage: blocks (odd ones shifted when ``use_shift``), then optional patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, use_shift: bool,
                 pretrain_window: int, rpe_hidden_dim: int, mlp_ratio: float, downsample: bool):
        super().__init__()
        self.window, self.shift = window, window // 2
        self.blocks = nn.ModuleList(
            SwinTransformerBlockPost(dim, num_heads, window, self.shift if (i % 2 and use_shift) else 0,
                                     pretrain_window, rpe_hidden_dim, mlp_ratio)
            for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        hp, wp = -(-h // self.window) * self.window, -(-w // self.window) * self.window
        mask = shifted_window_mask(hp, wp, self.window, self.shift).to(x)
        for block in self.blocks:
            x = block(x, h, w, mask)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = _norm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H/p, W/p), padding H and W up to multiples of p."""
        p = self.patch_size
        pad_w, pad_h = (-int(x.shape[3])) % p, (-int(x.shape[2])) % p
        if pad_w or pad_h:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        if self.norm is None:
            return x
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SwinV2TransformerRPE2FC(nn.Module):
    """Returns a tuple with one (B, C_i, H_i, W_i) map per ``out_indices`` stage, after ``norm{i}``."""

    def __init__(self, pretrain_img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int | Sequence[int] = 7, mlp_ratio: float = 4.0, drop_path_rate: float = 0.1,
                 ape: bool = False, patch_norm: bool = True, use_checkpoint: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3), use_shift: bool | Sequence[bool] = True,
                 pretrain_window_size: Sequence[int] = (-1, -1, -1, -1), rpe_hidden_dim: int = 512):
        """``pretrain_img_size``, ``drop_path_rate`` and ``use_checkpoint`` only matter for training."""
        super().__init__()
        if ape:
            raise ValueError("ape=True (absolute position embedding) is not supported; AiT's configs use ape=False")
        n = len(depths)
        windows = [window_size] * n if isinstance(window_size, int) else list(window_size)
        shifts = [use_shift] * n if isinstance(use_shift, bool) else list(use_shift)
        self.out_indices = tuple(out_indices)
        self.num_features = [embed_dim * 2 ** i for i in range(n)]
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.layers = nn.ModuleList(
            BasicLayer(self.num_features[i], depths[i], num_heads[i], windows[i], shifts[i],
                       pretrain_window_size[i], rpe_hidden_dim, mlp_ratio, downsample=i < n - 1)
            for i in range(n))
        for i in self.out_indices:
            self.add_module(f"norm{i}", _norm(self.num_features[i]))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.patch_embed(image)
        h, w = int(x.shape[2]), int(x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x, h, w)
            if i in self.out_indices:
                y = getattr(self, f"norm{i}")(x)
                outs.append(y.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2))
            if layer.downsample is not None:
                x = layer.downsample(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        return tuple(outs)
