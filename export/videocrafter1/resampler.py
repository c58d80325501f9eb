"""VideoCrafter1 I2V image projection: ``lvdm.modules.encoders.ip_resampler.Resampler``.

A Perceiver resampler: ``num_queries`` learned latents attend to the CLIP image
tokens (keys and values from image tokens and latents together), then a
feed-forward; ``proj_out`` and ``norm_out`` give the context tokens appended
after the 77 text tokens. Keys load from the released ``image_proj_model.*``.
"""
from __future__ import annotations

import torch
from torch import nn


def split_heads(x: torch.Tensor, heads: int, dim_head: int) -> torch.Tensor:
    """``(B, L, heads*dim_head) -> (B, heads, L, dim_head)``."""
    return x.reshape(x.shape[0], -1, heads, dim_head).transpose(1, 2)


class PerceiverAttention(nn.Module):
    """Latents (queries) attend to ``[image features, latents]``; bias-free projections."""

    def __init__(self, *, dim: int, dim_head: int, heads: int):
        super().__init__()
        inner = dim_head * heads
        self.heads, self.dim_head, self.inner = heads, dim_head, inner
        self.qk_scale = dim_head ** -0.25  # applied to q and k each, as the official code does
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        q = split_heads(self.to_q(latents), self.heads, self.dim_head)
        kv = self.to_kv(torch.cat((x, latents), dim=-2))
        k, v = (split_heads(t, self.heads, self.dim_head) for t in kv.split(self.inner, dim=-1))
        weights = torch.softmax((q * self.qk_scale) @ (k * self.qk_scale).transpose(-2, -1), dim=-1)
        return self.to_out((weights @ v).transpose(1, 2).flatten(2))


def feed_forward(dim: int, mult: float) -> nn.Sequential:
    """LayerNorm -> Linear (no bias) -> exact GELU -> Linear (no bias); keys ``0``, ``1``, ``3``."""
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class Resampler(nn.Module):
    """``forward(image_tokens (B, N, embedding_dim)) -> context_tokens (B, num_queries, output_dim)``."""

    def __init__(self, dim: int = 1024, depth: int = 8, dim_head: int = 64, heads: int = 16, num_queries: int = 8,
                 embedding_dim: int = 768, output_dim: int = 1024, ff_mult: float = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        latents = self.latents.expand(image_tokens.shape[0], -1, -1)
        x = self.proj_in(image_tokens)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
