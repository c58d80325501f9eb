"""Building blocks of VideoCrafter1's 3D UNet (``lvdm`` attention, res and resampling blocks).

Module and attribute names follow the official code so every checkpoint key
finds its weight (including the official spelling ``temopral_conv``). Spatial
layers see frames folded into the batch, ``(B*T, C, h, w)``; temporal layers
see ``(B, C, T, h, w)``. All shape arithmetic uses traced tensor sizes so the
exported graph keeps batch, frames, height and width dynamic; ``reshape`` is
used instead of ``unflatten``, whose ONNX export freezes the inferred sizes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TEXT_CONTEXT_LEN = 77  # hard-coded split of text and image tokens in the official image cross-attention
IMAGE_CROSS_ATTENTION_SCALE = 1.0


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding ``(N,) -> (N, dim)``: cosine half first, then sine."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None].to(timesteps.device)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def to_video(x: torch.Tensor, batch) -> torch.Tensor:
    """``(B*T, C, h, w) -> (B, C, T, h, w)``."""
    return x.reshape(batch, -1, *x.shape[1:]).transpose(1, 2)


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, h, w) -> (B*T, C, h, w)``."""
    return x.transpose(1, 2).flatten(0, 1)


class GroupNorm32(nn.GroupNorm):
    """LDM ``normalization``: 32 groups, computed in float32."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class RelativePosition(nn.Module):
    """Learned table over clipped key-minus-query distances."""

    def __init__(self, num_units: int, max_relative_position: int):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_relative_position + 1, num_units))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Table rows ``(len_q, len_k, num_units)`` for sequences ``q`` and ``k`` (length on dim -2)."""
        range_q = torch.arange(q.shape[-2], device=q.device)
        range_k = torch.arange(k.shape[-2], device=k.device)
        distance = range_k[None, :] - range_q[:, None]
        limit = torch.tensor(self.max_relative_position, device=q.device)
        clipped = torch.minimum(torch.maximum(distance, -limit), limit)  # Min/Max: TensorRT has no integer Clip
        return self.embeddings_table[clipped + limit]


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.reshape(*x.shape[:-1], heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class CrossAttention(nn.Module):
    """Multi-head attention; optional relative position, causal mask and image tokens (I2V)."""

    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.0,
                 relative_position=False, temporal_length=None, img_cross_attention=False):
        super().__init__()
        inner_dim = dim_head * heads
        context_dim = query_dim if context_dim is None else context_dim
        self.scale = dim_head ** -0.5
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))
        self.img_cross_attention = img_cross_attention
        if img_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner_dim, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner_dim, bias=False)
        self.relative_position = relative_position
        if relative_position:
            self.relative_position_k = RelativePosition(dim_head, temporal_length)
            self.relative_position_v = RelativePosition(dim_head, temporal_length)

    def forward(self, x, context=None, causal=False):
        context = x if context is None else context
        if self.img_cross_attention:
            text, image = context[:, :TEXT_CONTEXT_LEN], context[:, TEXT_CONTEXT_LEN:]
        else:
            text, image = context, None
        q = _split_heads(self.to_q(x), self.heads)
        k = _split_heads(self.to_k(text), self.heads)
        v = _split_heads(self.to_v(text), self.heads)
        out = self._attend(q, k, v, causal)
        if image is not None:
            k_ip = _split_heads(self.to_k_ip(image), self.heads)
            v_ip = _split_heads(self.to_v_ip(image), self.heads)
            out = out + IMAGE_CROSS_ATTENTION_SCALE * _merge_heads(_softmax_attention(q, k_ip, v_ip, self.scale))
        return self.to_out(out)

    def _attend(self, q, k, v, causal):
        """Attention of ``(N, heads, n, d)`` tensors, merged back to ``(N, n, heads*d)``."""
        sim = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if self.relative_position:
            rel_k = self.relative_position_k(q, k)  # (n_q, n_k, d)
            sim = sim + torch.matmul(q.unsqueeze(-2), rel_k.transpose(-1, -2)).squeeze(-2) * self.scale
        if causal:
            sim = sim.masked_fill(~_causal_mask(q, k), -torch.finfo(sim.dtype).max)
        attn = sim.softmax(dim=-1)
        out = torch.matmul(attn, v)
        if self.relative_position:
            rel_v = self.relative_position_v(q, v)  # (n_q, n_v, d)
            out = out + torch.matmul(attn.unsqueeze(-2), rel_v).squeeze(-2)
        return _merge_heads(out)


def _softmax_attention(q, k, v, scale):
    return torch.matmul((torch.matmul(q, k.transpose(-1, -2)) * scale).softmax(dim=-1), v)


def _causal_mask(q, k):
    """``(n_q, n_k)`` lower-triangular mask: True where query may attend."""
    return torch.arange(k.shape[-2], device=q.device)[None, :] <= torch.arange(q.shape[-2], device=q.device)[:, None]


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """Gated (GEGLU) feed-forward, width ``4 * dim``."""

    def __init__(self, dim, mult=4, dropout=0.0):
        super().__init__()
        inner_dim = int(dim * mult)
        self.net = nn.Sequential(GEGLU(dim, inner_dim), nn.Dropout(dropout), nn.Linear(inner_dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention (self when no context), feed-forward; pre-LayerNorm residuals."""

    def __init__(self, dim, n_heads, d_head, dropout=0.0, context_dim=None, disable_self_attn=False,
                 img_cross_attention=False, relative_position=False, temporal_length=None):
        super().__init__()
        rel = dict(relative_position=relative_position, temporal_length=temporal_length)
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, context_dim if disable_self_attn else None, n_heads, d_head, dropout, **rel)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head, dropout,
                                    img_cross_attention=img_cross_attention, **rel)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context=None, causal=False):
        x = self.attn1(self.norm1(x), context if self.disable_self_attn else None, causal) + x
        x = self.attn2(self.norm2(x), context, causal) + x
        return self.ff(self.norm3(x)) + x


def _projection(use_linear: bool, conv: type, c_in: int, c_out: int) -> nn.Module:
    return nn.Linear(c_in, c_out) if use_linear else conv(c_in, c_out, kernel_size=1)


class SpatialTransformer(nn.Module):
    """Transformer over the ``h*w`` positions of each frame; cross-attends to the context."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None,
                 disable_self_attn=False, use_linear=False, img_cross_attention=False):
        super().__init__()
        inner_dim = n_heads * d_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.proj_in = _projection(use_linear, nn.Conv2d, in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, dropout, context_dim, disable_self_attn,
                                  img_cross_attention=img_cross_attention)
            for _ in range(depth)
        )
        self.proj_out = _projection(use_linear, nn.Conv2d, inner_dim, in_channels)

    def forward(self, x, context=None):
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *x_in.shape[2:])
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TemporalTransformer(nn.Module):
    """Transformer over the ``T`` frames at every spatial position of ``(B, C, T, h, w)``."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None, use_linear=False,
                 only_self_att=True, causal_attention=False, relative_position=False, temporal_length=None):
        super().__init__()
        inner_dim = n_heads * d_head
        self.use_linear = use_linear
        self.only_self_att = only_self_att
        self.causal_attention = causal_attention
        self.norm = nn.GroupNorm(32, in_channels, eps=1e-6)
        self.proj_in = _projection(use_linear, nn.Conv1d, in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner_dim, n_heads, d_head, dropout, None if only_self_att else context_dim,
                                  relative_position=relative_position, temporal_length=temporal_length)
            for _ in range(depth)
        )
        self.proj_out = _projection(use_linear, nn.Conv1d, inner_dim, in_channels)

    def _project(self, proj: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Apply ``proj`` to ``(N, T, C)``, as a linear layer or a 1x1 Conv1d over ``(N, C, T)``."""
        return proj(x) if self.use_linear else proj(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x, context=None):
        b, _, t, h, w = x.shape
        x_in = x
        x = self.norm(x).permute(0, 3, 4, 2, 1).flatten(0, 2)  # (B*h*w, T, C)
        x = self._project(self.proj_in, x)
        if self.only_self_att:
            for block in self.transformer_blocks:
                x = block(x, causal=self.causal_attention)
        else:
            context = _per_position_context(context, b, h * w)
            for block in self.transformer_blocks:
                x = block(x, context)  # the official cross-attention path applies no causal mask
        x = self._project(self.proj_out, x)
        x = x.reshape(b, h, w, t, -1).permute(0, 4, 3, 1, 2)
        return x + x_in


def _per_position_context(context: torch.Tensor, batch, positions) -> torch.Tensor:
    """``(B*T, L, D)`` frame contexts -> ``(B*positions, L, D)``.

    The UNet repeats one context per frame, so every frame's rows are equal and
    each spatial position of a video reads its first frame's context (the
    official code spreads the frames' identical copies over the positions).
    """
    video = context.reshape(batch, -1, *context.shape[1:])[:, 0]
    return video.unsqueeze(1).expand(-1, positions, -1, -1).flatten(0, 1)


class TemporalConvBlock(nn.Module):
    """Four GroupNorm-SiLU-Conv3d stages over time (ModelScope style), added to the input."""

    def __init__(self, in_channels, out_channels=None, dropout=0.0, spatial_aware=False):
        super().__init__()
        out_channels = out_channels or in_channels
        kernel, padding = ((3, 3, 3), (1, 1, 1)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        self.conv1 = nn.Sequential(nn.GroupNorm(32, in_channels), nn.SiLU(),
                                   nn.Conv3d(in_channels, out_channels, kernel, padding=padding))
        self.conv2 = _temporal_stage(out_channels, in_channels, dropout, kernel, padding)
        self.conv3 = _temporal_stage(out_channels, in_channels, dropout, (3, 1, 1), (1, 0, 0))
        self.conv4 = _temporal_stage(out_channels, in_channels, dropout, (3, 1, 1), (1, 0, 0))

    def forward(self, x):
        return self.conv4(self.conv3(self.conv2(self.conv1(x)))) + x


def _temporal_stage(channels, out_channels, dropout, kernel, padding) -> nn.Sequential:
    return nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Dropout(dropout),
                         nn.Conv3d(channels, out_channels, kernel, padding=padding))


class Downsample(nn.Module):
    """Halve ``h, w``: stride-2 3x3 conv, or 2x2 average pooling without a conv."""

    def __init__(self, channels, use_conv, out_channels=None, padding=1):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=padding)
        elif out_channels != channels:
            raise ValueError(f"Downsample without a conv keeps channels: expected {channels}, found {out_channels}")
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """Double ``h, w`` by nearest neighbour, then an optional 3x3 conv."""

    def __init__(self, channels, use_conv, out_channels=None, padding=1):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=padding)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """LDM residual block with timestep embedding; optional up/down, FiLM norm and temporal conv."""

    def __init__(self, channels, emb_channels, dropout, out_channels=None, use_scale_shift_norm=False,
                 use_conv=False, up=False, down=False, use_temporal_conv=False, tempspatial_aware=False):
        super().__init__()
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_temporal_conv = use_temporal_conv
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, self.out_channels, 3, padding=1))
        self.updown = up or down
        if self.updown:
            resample = Upsample if up else Downsample
            self.h_upd = resample(channels, False)
            self.x_upd = resample(channels, False)
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(GroupNorm32(self.out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1))
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3 if use_conv else 1,
                                             padding=1 if use_conv else 0)
        if use_temporal_conv:
            self.temopral_conv = TemporalConvBlock(self.out_channels, self.out_channels, dropout=0.1,
                                                   spatial_aware=tempspatial_aware)

    def forward(self, x, emb, batch):
        if self.updown:
            h = self.h_upd(self.in_layers[:-1](x))
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        h = self.skip_connection(x) + h
        if self.use_temporal_conv:
            h = to_frames(self.temopral_conv(to_video(h, batch)))
        return h
