"""VideoCrafter1's 3D UNet (``lvdm.modules.networks.openaimodel3d.UNetModel``), one denoising step.

``UNetModel(**config)`` takes the official constructor arguments and its
``state_dict`` keys are the official ones (checkpoint prefix
``model.diffusion_model.`` stripped). ``forward(x, timesteps, context, fps)``
maps latents ``(B, C, T, h, w)`` to the predicted noise of the same shape.

T2V-Turbo's UNet (``time_cond_proj_dim``, ``motion_cond_proj_dim``) is the same network plus
bias-free projections of a guidance-scale embedding (``timestep_cond``) and, for T2V-Turbo v2, of a
motion-guidance embedding (``motion_cond``): their sum (or, with both, ``combine_proj`` of the pair)
is added to the timestep sinusoid before ``time_embed``.
"""
from __future__ import annotations

import torch
from torch import nn

from export.videocrafter1.unet_blocks import (
    Downsample,
    GroupNorm32,
    ResBlock,
    SpatialTransformer,
    TemporalTransformer,
    Upsample,
    timestep_embedding,
    to_frames,
    to_video,
)

DEFAULT_FPS = 16  # the official forward's default when fps_cond and no fps is given
INIT_ATTN_HEADS = 8


class TimestepEmbedSequential(nn.Sequential):
    """Layers of one UNet block, each given what it needs: embedding, context or the video layout."""

    def forward(self, x, emb, context, batch):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                x = to_frames(layer(to_video(x, batch), context))
            else:
                x = layer(x)
        return x


def _embedding_mlp(model_channels: int, embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(model_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))


def _check_arguments(num_heads, num_head_channels, dims, use_fp16, addition_attention, temporal_attention,
                     use_relative_position, use_causal_attention, temporal_length) -> None:
    if num_heads == -1 and num_head_channels == -1:
        raise ValueError("UNetModel needs num_heads or num_head_channels; both are -1")
    if dims != 2:
        raise ValueError(f"UNetModel supports dims=2 (frames are folded into the batch); found dims={dims}")
    if use_fp16:
        raise ValueError("use_fp16=True is not supported: export in float32 and build FP16 engines instead")
    if addition_attention and num_head_channels == -1:
        raise ValueError("addition_attention needs num_head_channels (init_attn uses 8 heads of that width); "
                         "found num_head_channels=-1")
    temporal = temporal_attention or addition_attention
    if temporal and (use_relative_position or use_causal_attention) and temporal_length is None:
        raise ValueError("use_relative_position / use_causal_attention need temporal_length; found None")


class UNetModel(nn.Module):
    """The official 3D UNet: spatial and temporal transformers, optional temporal convs and fps conditioning."""

    def __init__(self, in_channels, model_channels, out_channels, num_res_blocks, attention_resolutions,
                 dropout=0.0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2, context_dim=None,
                 use_scale_shift_norm=False, resblock_updown=False, num_heads=-1, num_head_channels=-1,
                 transformer_depth=1, use_linear=False, use_checkpoint=False, temporal_conv=False,
                 tempspatial_aware=False, temporal_attention=True, temporal_selfatt_only=True,
                 use_relative_position=True, use_causal_attention=False, temporal_length=None, use_fp16=False,
                 addition_attention=False, use_image_attention=False, temporal_transformer_depth=1,
                 fps_cond=False, time_cond_proj_dim=None, motion_cond_proj_dim=None, **unknown):
        super().__init__()
        if unknown:
            raise ValueError(f"UNetModel got arguments that VideoCrafter1's UNetModel does not have: "
                             f"{sorted(unknown)}")
        _check_arguments(num_heads, num_head_channels, dims, use_fp16, addition_attention, temporal_attention,
                         use_relative_position, use_causal_attention, temporal_length)
        del use_checkpoint  # gradient checkpointing only changes training memory
        self.model_channels = model_channels
        self.fps_cond = fps_cond
        self.time_cond_proj_dim = time_cond_proj_dim
        self.motion_cond_proj_dim = motion_cond_proj_dim
        self.addition_attention = addition_attention
        embed_dim = model_channels * 4
        self._res = dict(emb_channels=embed_dim, dropout=dropout, use_scale_shift_norm=use_scale_shift_norm)
        self._temporal_res = dict(use_temporal_conv=temporal_conv, tempspatial_aware=tempspatial_aware)
        self._heads = (num_heads, num_head_channels)
        self._spatial = dict(depth=transformer_depth, context_dim=context_dim, use_linear=use_linear,
                             img_cross_attention=use_image_attention)
        temporal = dict(context_dim=context_dim, only_self_att=temporal_selfatt_only,
                        causal_attention=use_causal_attention, relative_position=use_relative_position,
                        temporal_length=temporal_length)
        self._temporal = dict(temporal, depth=temporal_transformer_depth, use_linear=use_linear) \
            if temporal_attention else None

        self.time_embed = _embedding_mlp(model_channels, embed_dim)
        if fps_cond:
            self.fps_embedding = _embedding_mlp(model_channels, embed_dim)
        # T2V-Turbo: registered here, as the official code does, so state_dict and LoRA orders are official
        if time_cond_proj_dim is not None:
            self.time_cond_proj = nn.Linear(time_cond_proj_dim, model_channels, bias=False)
        if motion_cond_proj_dim is not None:
            self.motion_cond_proj = nn.Linear(motion_cond_proj_dim, model_channels, bias=False)
            self.combine_proj = nn.Linear(2 * model_channels, model_channels, bias=False)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        if addition_attention:
            self.init_attn = TimestepEmbedSequential(TemporalTransformer(
                model_channels, INIT_ATTN_HEADS, num_head_channels, depth=transformer_depth, **temporal))

        skip_channels = [model_channels]
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, out_channels=mult * model_channels, **self._res, **self._temporal_res)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += self._transformers(ch)
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = ResBlock(ch, out_channels=ch, down=True, **self._res) if resblock_updown \
                    else Downsample(ch, conv_resample, out_channels=ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, **self._res, **self._temporal_res),
            *self._transformers(ch),
            ResBlock(ch, **self._res, **self._temporal_res),
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), out_channels=mult * model_channels,
                                   **self._res, **self._temporal_res)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += self._transformers(ch)
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, out_channels=ch, up=True, **self._res) if resblock_updown
                                  else Upsample(ch, conv_resample, out_channels=ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    def _transformers(self, ch: int) -> list[nn.Module]:
        """The spatial transformer of an attention level, and its temporal transformer when enabled."""
        num_heads, num_head_channels = self._heads
        if num_head_channels == -1:
            heads, dim_head = num_heads, ch // num_heads
        else:
            heads, dim_head = ch // num_head_channels, num_head_channels
        layers = [SpatialTransformer(ch, heads, dim_head, **self._spatial)]
        if self._temporal is not None:
            layers.append(TemporalTransformer(ch, heads, dim_head, **self._temporal))
        return layers

    def condition(self, timestep_cond: torch.Tensor | None, motion_cond: torch.Tensor | None):
        """T2V-Turbo's projected conditions ``(B, model_channels)`` added to the timestep sinusoid, or None."""
        if timestep_cond is None:
            if motion_cond is not None:
                raise ValueError("motion_cond needs timestep_cond (the official UNet asserts it); found only "
                                 "motion_cond")
            return None
        if self.time_cond_proj_dim is None:
            raise ValueError("timestep_cond given, but this UNet has no time_cond_proj (build it with "
                             "time_cond_proj_dim, as T2V-Turbo's config does)")
        cond = self.time_cond_proj(timestep_cond)
        if motion_cond is None:
            return cond
        if self.motion_cond_proj_dim is None:
            raise ValueError("motion_cond given, but this UNet has no motion_cond_proj (build it with "
                             "motion_cond_proj_dim, as T2V-Turbo v2's config does)")
        return self.combine_proj(torch.cat([cond, self.motion_cond_proj(motion_cond)], dim=1))

    def embedding(self, timesteps: torch.Tensor, fps: torch.Tensor | None, timestep_cond: torch.Tensor | None = None,
                  motion_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Timestep embedding ``(B, 4*model_channels)`` (with T2V-Turbo's conditions added to its sinusoid),
        plus the fps embedding when fps_cond."""
        t_emb = timestep_embedding(timesteps, self.model_channels)
        cond = self.condition(timestep_cond, motion_cond)
        emb = self.time_embed(t_emb if cond is None else t_emb + cond)
        if self.fps_cond:
            fps = torch.full_like(timesteps, DEFAULT_FPS) if fps is None else fps
            emb = emb + self.fps_embedding(timestep_embedding(fps, self.model_channels))
        return emb

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                fps: torch.Tensor | None = None, timestep_cond: torch.Tensor | None = None,
                motion_cond: torch.Tensor | None = None) -> torch.Tensor:
        """``x (B, C, T, h, w)``, ``timesteps (B,)``, ``context (B, L, D)``, ``fps (B,)``, T2V-Turbo's
        ``timestep_cond (B, time_cond_proj_dim)`` and ``motion_cond (B, motion_cond_proj_dim)`` -> eps like ``x``."""
        batch, frames = x.shape[0], x.shape[2]
        emb = _per_frame(self.embedding(timesteps, fps, timestep_cond, motion_cond), frames)
        context = _per_frame(context, frames)
        h = to_frames(x)
        skips = []
        for index, block in enumerate(self.input_blocks):
            h = block(h, emb, context, batch)
            if index == 0 and self.addition_attention:
                h = self.init_attn(h, emb, context, batch)
            skips.append(h)
        h = self.middle_block(h, emb, context, batch)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, batch)
        return to_video(self.out(h), batch)


def _per_frame(t: torch.Tensor, frames) -> torch.Tensor:
    """Repeat each batch row once per frame (row ``b*T + t``), like ``repeat_interleave(T, dim=0)``."""
    return t.unsqueeze(1).expand(-1, frames, *[-1] * (t.dim() - 1)).flatten(0, 1)
