"""VideoCrafter1's first stage: the Stable Diffusion KL autoencoder (``lvdm.models.autoencoder.AutoencoderKL``).

Module and parameter names follow ``lvdm.modules.networks.ae_modules`` so the
released ``first_stage_model.*`` keys load unchanged. ``encode`` returns the
diagonal Gaussian's mean and clamped log-variance; ``decode`` maps latents back
to frames. Latent scaling (``scale_factor``) belongs to the pipeline, not here.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 32
NORM_EPS = 1e-6
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # DiagonalGaussianDistribution's clamp

DDCONFIG_DEFAULTS: dict[str, Any] = {
    "ch_mult": (1, 2, 4, 8),
    "dropout": 0.0,
    "resamp_with_conv": True,
    "double_z": True,
    "use_linear_attn": False,
    "attn_type": "vanilla",
    "give_pre_end": False,
    "tanh_out": False,
}
DDCONFIG_REQUIRED = ("ch", "out_ch", "num_res_blocks", "attn_resolutions", "in_channels", "resolution", "z_channels")
ATTN_TYPES = ("vanilla", "none")
TRAINING_ONLY_ARGS = ("monitor", "image_key", "input_dim")
IDENTITY_LOSS = "torch.nn.Identity"


def normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with a 1x1 ``nin_shortcut`` when the width changes (no timestep input)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        shortcut = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, 1x1 convs for q, k, v and the output."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.scale = channels ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q = self.q(h).flatten(2).transpose(1, 2)  # (b, hw, c)
        k = self.k(h).flatten(2)  # (b, c, hw)
        v = self.v(h).flatten(2)  # (b, c, hw)
        weights = torch.softmax(torch.bmm(q, k) * self.scale, dim=2)  # (b, hw_q, hw_k)
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(x.shape)
        return x + self.proj_out(out)


def make_attn(channels: int, attn_type: str) -> nn.Module:
    return AttnBlock(channels) if attn_type == "vanilla" else nn.Identity()


class Downsample(nn.Module):
    """Halve the resolution: pad right/bottom by one then a stride-2 3x3 conv, or 2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution (nearest), then an optional 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


def _level(blocks: list[nn.Module], attns: list[nn.Module], **resample: nn.Module) -> nn.Module:
    """One resolution level: ``block.N``, ``attn.N`` and an optional ``downsample``/``upsample``."""
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    for name, module in resample.items():
        setattr(level, name, module)
    return level


def _middle(channels: int, dropout: float, attn_type: str) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, dropout)
    mid.attn_1 = make_attn(channels, attn_type)
    mid.block_2 = ResnetBlock(channels, channels, dropout)
    return mid


def _run_middle(mid: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(h)))


def _run_blocks(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn) > 0:
            h = level.attn[i](h)
    return h


class Encoder(nn.Module):
    """Frames -> ``2*z_channels`` (double_z) or ``z_channels`` moments at 1/2^(levels-1) resolution."""

    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, dropout, resamp_with_conv,
                 in_channels, resolution, z_channels, double_z, attn_type, **_decoder_only):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_ch_mult = (1, *ch_mult)
        levels, res = [], resolution
        for i, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_ch_mult[i], ch * mult
            blocks = [ResnetBlock(block_in if j == 0 else block_out, block_out, dropout) for j in range(num_res_blocks)]
            attns = [make_attn(block_out, attn_type) for _ in blocks] if res in attn_resolutions else []
            if i == len(ch_mult) - 1:
                levels.append(_level(blocks, attns))
            else:
                levels.append(_level(blocks, attns, downsample=Downsample(block_out, resamp_with_conv)))
                res //= 2
        self.down = nn.ModuleList(levels)
        top = ch * ch_mult[-1]
        self.mid = _middle(top, dropout, attn_type)
        self.norm_out = normalize(top)
        self.conv_out = nn.Conv2d(top, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = _run_blocks(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = _run_middle(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latents ``z_channels`` -> ``out_ch`` frames at 2^(levels-1) times the resolution."""

    def __init__(self, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions, dropout, resamp_with_conv,
                 resolution, z_channels, attn_type, give_pre_end, tanh_out, **_encoder_only):
        super().__init__()
        self.give_pre_end = give_pre_end
        self.tanh_out = tanh_out
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _middle(block_in, dropout, attn_type)
        levels = []
        for i in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[i]
            blocks = [ResnetBlock(block_in if j == 0 else block_out, block_out, dropout)
                      for j in range(num_res_blocks + 1)]
            attns = [make_attn(block_out, attn_type) for _ in blocks] if res in attn_resolutions else []
            if i == 0:
                levels.insert(0, _level(blocks, attns))
            else:
                levels.insert(0, _level(blocks, attns, upsample=Upsample(block_out, resamp_with_conv)))
                res *= 2
            block_in = block_out
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = _run_middle(self.mid, self.conv_in(z))
        for level in reversed(self.up):
            h = _run_blocks(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        if self.give_pre_end:
            return h
        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h


def resolve_ddconfig(ddconfig: Mapping[str, Any]) -> dict[str, Any]:
    """The ddconfig with official defaults filled in; unknown or unsupported options raise ValueError."""
    missing = [k for k in DDCONFIG_REQUIRED if k not in ddconfig]
    unknown = sorted(set(ddconfig) - set(DDCONFIG_REQUIRED) - set(DDCONFIG_DEFAULTS))
    if missing or unknown:
        raise ValueError(f"ddconfig needs {list(DDCONFIG_REQUIRED)} (optional: {list(DDCONFIG_DEFAULTS)}); "
                         f"missing {missing}, unknown {unknown}")
    config = {**DDCONFIG_DEFAULTS, **ddconfig}
    if config["use_linear_attn"] or config["attn_type"] not in ATTN_TYPES:
        found = "linear (use_linear_attn)" if config["use_linear_attn"] else repr(config["attn_type"])
        raise ValueError(f"ddconfig attn_type must be one of {ATTN_TYPES}, found {found}; "
                         "linear attention is not implemented for export")
    if not config["double_z"]:
        raise ValueError("ddconfig double_z must be true: AutoencoderKL's quant_conv expects 2*z_channels moments")
    return config


def check_lossconfig(lossconfig: Mapping[str, Any] | None) -> None:
    """Only the inference loss (``torch.nn.Identity``, no weights) is accepted."""
    target = None if lossconfig is None else lossconfig.get("target")
    if lossconfig is not None and target != IDENTITY_LOSS:
        raise ValueError(f"lossconfig target must be {IDENTITY_LOSS!r} (or no lossconfig), found {target!r}; "
                         "training losses carry weights that inference does not use")


class AutoencoderKL(nn.Module):
    """``encode(frames) -> (mean, logvar)`` and ``decode(z) -> frames``; keys as ``first_stage_model.*``."""

    def __init__(self, embed_dim: int, ddconfig: Mapping[str, Any], lossconfig: Mapping[str, Any] | None = None,
                 **training_only: Any):
        super().__init__()
        unsupported = sorted(set(training_only) - set(TRAINING_ONLY_ARGS))
        if unsupported:
            raise ValueError(f"AutoencoderKL accepts only {list(TRAINING_ONLY_ARGS)} besides embed_dim, ddconfig "
                             f"and lossconfig; found {unsupported}")
        check_lossconfig(lossconfig)
        config = resolve_ddconfig(ddconfig)
        self.embed_dim = embed_dim
        self.encoder = Encoder(**config)
        self.decoder = Decoder(**config)
        self.loss = nn.Identity()
        self.quant_conv = nn.Conv2d(2 * config["z_channels"], 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, config["z_channels"], 1)

    def encode(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``(N, C, H, W)`` in [-1, 1] -> posterior mean and clamped log-variance ``(N, embed_dim, h, w)``."""
        moments = self.quant_conv(self.encoder(frames))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return mean, torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``(N, embed_dim, h, w)`` (already divided by the scale factor) -> frames ``(N, out_ch, H, W)``."""
        return self.decoder(self.post_quant_conv(z))
