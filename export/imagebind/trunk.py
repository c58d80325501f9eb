"""ImageBind's transformer trunk (``SimpleTransformer`` of pre-norm ``BlockWithMasking``s).

Attention is written as explicit matmuls over the official packed parameters of
``nn.MultiheadAttention`` (``in_proj_weight``/``in_proj_bias``, ``bias_k``/``bias_v``,
``out_proj``), so checkpoint keys load unchanged and the ONNX graph is plain
MatMul/Softmax instead of the fused-MHA path. Tokens stay in ``(N, L, D)`` layout;
the official ``(L, N, D)`` transposes are layout only. DropPath and LayerScale are
not used at inference by any released modality and are left out.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from export.layers import Mlp

BLOCK_LN_EPS = 1e-6


class PackedAttention(nn.Module):
    """``nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=...)`` at inference, batch first.

    With ``add_bias_kv`` the learned ``bias_k``/``bias_v`` rows are appended after the
    in-projection as one extra key/value position, so L queries attend over L + 1 keys.
    """

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} must be divisible by the head count, found {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = 1.0 / math.sqrt(dim // num_heads)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The official initialisation (xavier projections, zero in-projection bias)."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        for bias in (self.bias_k, self.bias_v):
            if bias is not None:
                nn.init.xavier_normal_(bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, D) -> (N, heads, L, head_dim)."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _append_bias_kv(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bias_k is None:
            return k, v
        batch = (k.shape[0], 1, k.shape[2])
        return torch.cat([k, self.bias_k.expand(batch)], dim=1), torch.cat([v, self.bias_v.expand(batch)], dim=1)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        k, v = self._append_bias_kv(k, v)
        scores = (self._heads(q) * self.scale) @ self._heads(k).transpose(-2, -1)
        if attn_mask is not None:
            scores = scores + attn_mask
        out = scores.softmax(dim=-1) @ self._heads(v)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class BlockWithMasking(nn.Module):
    """Pre-norm block: x + Attn(LN1(x), mask), then x + MLP(LN2(x))."""

    def __init__(self, dim: int, num_heads: int, add_bias_kv: bool, mlp_ratio: int = 4):
        super().__init__()
        self.attn = PackedAttention(dim, num_heads, add_bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), attn_mask)
        return x + self.mlp(self.norm_2(x))


class SimpleTransformer(nn.Module):
    """Optional pre-transformer LayerNorm (vision only), then ``num_blocks`` blocks; no final norm."""

    def __init__(self, dim: int, num_blocks: int, num_heads: int, *, pre_transformer_ln: bool, add_bias_kv: bool):
        super().__init__()
        pre = nn.LayerNorm(dim, eps=BLOCK_LN_EPS) if pre_transformer_ln else nn.Identity()
        self.pre_transformer_layer = nn.Sequential(pre)
        self.blocks = nn.ModuleList(BlockWithMasking(dim, num_heads, add_bias_kv) for _ in range(num_blocks))

    def forward(self, tokens: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x
