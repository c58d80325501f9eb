"""OpenCLIP towers as VideoCrafter1 uses them (``FrozenOpenCLIPEmbedder``, ``FrozenOpenCLIPImageEmbedderV2``).

Parameter names are open_clip's (3.x, batch-first), so ``cond_stage_model.model.*``
(text) and ``embedder.model.visual.*`` (vision) load unchanged. Attention is
written out (no ``nn.MultiheadAttention``) with the same parameter names, so the
ONNX graphs are plain MatMul/Softmax with no data-dependent shapes.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-5
LAYERS = {"last": 0, "penultimate": 1}  # how many final blocks the text encoder skips

# open_clip model_configs/ViT-H-14.json
VIT_H_14_EMBED_DIM = 1024
VIT_H_14_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24}
VIT_H_14_VISION = {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14}

# I2V image preprocessing (open_clip's OPENAI_DATASET_MEAN / STD), applied to [0, 1] RGB at 224x224
CLIP_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

TEXT_DEFAULTS: dict[str, Any] = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12,
                                 "mlp_ratio": 4.0}
VISION_DEFAULTS: dict[str, Any] = {"image_size": 224, "layers": 12, "width": 768, "head_width": 64,
                                   "patch_size": 16, "mlp_ratio": 4.0}
# open_clip options that change the network; accepted only at these (default) values
FIXED_OPTIONS: dict[str, Any] = {
    "ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "pad_id": 0, "proj_bias": False,
    "proj_type": "linear", "patch_dropout": 0.0, "no_ln_pre": False, "pos_embed_type": "learnable",
    "attentional_pool": False, "act_kwargs": None, "norm_kwargs": None, "block_type": None, "qk_norm": False,
    "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False, "scale_attn": False,
    "scale_fc": False, "timm_model_name": None, "hf_model_name": None,
}
# options that only matter for tokenising, pooling or training
IGNORED_OPTIONS = ("hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs", "eos_id", "pool_type",
                   "final_ln_after_pool", "output_tokens", "correct_cls_mask", "use_pad_mask",
                   "attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained", "timm_pool", "timm_proj",
                   "timm_proj_bias", "timm_drop", "timm_drop_path", "hf_model_pretrained", "hf_proj_type",
                   "hf_pooler_type")


def resolve_cfg(cfg: Mapping[str, Any], defaults: Mapping[str, Any], what: str) -> dict[str, Any]:
    """open_clip ``defaults`` overridden by ``cfg``; an option that would change the network raises ValueError."""
    unknown = sorted(set(cfg) - set(defaults) - set(FIXED_OPTIONS) - set(IGNORED_OPTIONS))
    changed = sorted(k for k in set(cfg) & set(FIXED_OPTIONS) if cfg[k] != FIXED_OPTIONS[k])
    if unknown or changed:
        raise ValueError(f"{what}: supported options are {sorted(defaults)} (others only at open_clip's defaults); "
                         f"unknown {unknown}, non-default {[f'{k}={cfg[k]!r}' for k in changed]}")
    return {k: cfg.get(k, v) for k, v in defaults.items()}


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names (packed in-projection)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} must be divisible by heads {heads}")
        self.heads, self.head_dim, self.width = heads, width // heads, width
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.scale = self.head_dim ** -0.5

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], -1, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, L, head_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(self.width, dim=-1)
        q, k, v = (self._split_heads(t) for t in qkv)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, L, L)
        if mask is not None:
            logits = logits + mask
        out = torch.softmax(logits, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Sequential):
    """``c_fc`` -> exact GELU -> ``c_proj``."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ``resblocks``; ``forward`` runs the first ``depth`` of them (all by default)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, depth: int | None = None) -> torch.Tensor:
        for block in self.resblocks[:depth]:
            x = block(x, mask)
        return x


def causal_mask(length: int) -> torch.Tensor:
    """Additive mask, ``-inf`` above the diagonal (open_clip's ``build_causal_mask``)."""
    return torch.full((length, length), float("-inf")).triu_(1)


class OpenCLIPTextEncoder(nn.Module):
    """open_clip CLIP text tower; ``forward(tokens (B, L) int64) -> context (B, L, width)``.

    ``layer="penultimate"`` skips the last block (VideoCrafter1), ``"last"`` runs all;
    ``ln_final`` is applied, ``text_projection`` is not (kept for the checkpoint keys).
    """

    def __init__(self, text_cfg: Mapping[str, Any], embed_dim: int, layer: str = "penultimate"):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {list(LAYERS)}, found {layer!r}")
        cfg = resolve_cfg(text_cfg, TEXT_DEFAULTS, "text_cfg")
        width, length = cfg["width"], cfg["context_length"]
        self.depth = cfg["layers"] - LAYERS[layer]
        self.token_embedding = nn.Embedding(cfg["vocab_size"], width)
        self.positional_embedding = nn.Parameter(torch.empty(length, width))
        self.transformer = Transformer(width, cfg["layers"], cfg["heads"], cfg["mlp_ratio"])
        self.ln_final = nn.LayerNorm(width, eps=LN_EPS)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("attn_mask", causal_mask(length), persistent=False)

    @classmethod
    def vit_h_14(cls, layer: str = "penultimate") -> "OpenCLIPTextEncoder":
        """The released ViT-H/14 text tower (VideoCrafter1's ``cond_stage_model.model``)."""
        return cls(VIT_H_14_TEXT, VIT_H_14_EMBED_DIM, layer=layer)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = self.positional_embedding.shape[0]
        if tokens.shape[-1] != length:
            raise ValueError(f"tokens must be (B, {length}), found {tuple(tokens.shape)}")
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, self.attn_mask, depth=self.depth)
        return self.ln_final(x)


class OpenCLIPVisionTokens(nn.Module):
    """open_clip ViT vision tower returning every token after the last block.

    ``forward(pixels (B, 3, S, S) normalised) -> tokens (B, 1 + (S/patch)^2, width)``;
    ``ln_post`` and ``proj`` are not applied (kept for the checkpoint keys).
    """

    def __init__(self, vision_cfg: Mapping[str, Any], embed_dim: int):
        super().__init__()
        cfg = resolve_cfg(vision_cfg, VISION_DEFAULTS, "vision_cfg")
        width, patch = cfg["width"], cfg["patch_size"]
        if width % cfg["head_width"]:
            raise ValueError(f"vision width {width} must be divisible by head_width {cfg['head_width']}")
        self.grid = cfg["image_size"] // patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(self.grid * self.grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=LN_EPS)
        self.transformer = Transformer(width, cfg["layers"], width // cfg["head_width"], cfg["mlp_ratio"])
        self.ln_post = nn.LayerNorm(width, eps=LN_EPS)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))

    @classmethod
    def vit_h_14(cls) -> "OpenCLIPVisionTokens":
        """The released ViT-H/14 vision tower (VideoCrafter1 I2V's ``embedder.model.visual``)."""
        return cls(VIT_H_14_VISION, VIT_H_14_EMBED_DIM)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # (B, grid*grid, width)
        if x.shape[1] != self.grid * self.grid:
            raise ValueError(f"pixels must give a {self.grid}x{self.grid} patch grid, found {tuple(pixels.shape)}")
        cls_token = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls_token, x], dim=1) + self.positional_embedding
        return self.transformer(self.ln_pre(x))
