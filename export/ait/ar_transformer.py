"""AiT's autoregressive encoder-decoder (``ARTransformer``) with an explicit KV cache.

Module layout mirrors the official ``ait/code/model/transformer.py`` so ``transformer.*``
keys load unchanged. Inference is split into deployable pieces:

- :meth:`ARTransformer.encode`      backbone features -> memory z (run once per image)
- :meth:`ARTransformer.cross_kv`    memory -> per-layer cross-attention keys/values (once)
- :meth:`ARTransformer.decode_step` one token through the decoder with the self-attention cache
- :meth:`ARTransformer.decode_full` the same decoder without a cache (full causal prefix)

Caches are stacked over decoder layers: ``(layers, B, heads, S, head_dim)``; self caches
grow by one position per step, cross keys/values have S = h*w of the memory.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from export.layers import Mlp

INSSEG_TASK, DEPTH_TASK = 1, 2


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections (qkv bias, scale head_dim^-0.5)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.wq = nn.Linear(dim, dim)
        self.wk = nn.Linear(dim, dim)
        self.wv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, C/heads)."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.wk(x)), self.heads(self.wv(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Queries from ``x`` (B, N, C) against per-head ``k``/``v``; ``mask`` True = blocked."""
        b, n, c = x.shape
        attn = (self.heads(self.wq(x)) @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            attn = attn.masked_fill(mask, float("-inf"))
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention."""
        k, v = self.keys_values(x)
        return self.attend(x, k, v, mask)


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + MLP."""

    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention (norm2 on both x and z), MLP."""

    def __init__(self, dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.crossattn = Attention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def cross_kv(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.crossattn.keys_values(self.norm2(z))

    def forward(self, x: torch.Tensor, self_k: torch.Tensor, self_v: torch.Tensor,
                cross_k: torch.Tensor, cross_v: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``self_k``/``self_v`` hold the past positions; returns x and the grown self k/v."""
        nx = self.norm1(x)
        k, v = self.attn.keys_values(nx)
        k, v = torch.cat([self_k, k], dim=2), torch.cat([self_v, v], dim=2)
        x = x + self.attn.attend(nx, k, v, mask)
        x = x + self.crossattn.attend(self.norm2(x), cross_k, cross_v)
        return x + self.mlp(self.norm3(x)), k, v


class Blocks(nn.Module):
    """Holds ``blocks`` so keys read ``encoder.blocks.i`` / ``decoder.blocks.i`` as officially."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


def sine_table(n_rows: int, n_cols: int, d_model: int, normalize: bool) -> torch.Tensor:
    """(1, rows, cols, d) 2-D sine embedding: y half then x half (official ``sine``/``sine_norm``)."""
    half = d_model / 2
    y = torch.arange(n_rows, dtype=torch.float32)
    x = torch.arange(n_cols, dtype=torch.float32)
    if normalize:
        y, x = y / (n_rows - 1) * 2 * math.pi, x / (n_cols - 1) * 2 * math.pi
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = 10000.0 ** (2 * (dim_t // 2) / half)

    def encode(p: torch.Tensor) -> torch.Tensor:
        p = p[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=-1).view(len(p), -1)

    pos_y = encode(y).view(n_rows, 1, -1).expand(n_rows, n_cols, -1)
    pos_x = encode(x).view(1, n_cols, -1).expand(n_rows, n_cols, -1)
    return torch.cat((pos_y, pos_x), dim=-1).view(1, n_rows, n_cols, -1)


class ARTransformer(nn.Module):
    """Official constructor arguments (inference subset); ``drop_*`` only matter for training."""

    def __init__(self, in_chans: int, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 1024, drop_path: float = 0.1,
                 drop_out: float = 0.1, num_vocal: int = 2094, dec_length: int = 2100, pred_eos: bool = False,
                 num_bins: int = 2001, num_classes: int = 80, num_embeddings: int = 128,
                 num_embeddings_depth: int = 128, top_p: float = 0.4, pos_enc: str = "sine",
                 n_rows: int = 20, n_cols: int = 20, ntasks: int = 4, soft_vae: bool = False,
                 soft_transformer: bool = False):
        super().__init__()
        self.nhead, self.d_model, self.top_p = nhead, d_model, top_p
        self.soft_vae, self.soft_transformer, self.pred_eos = soft_vae, soft_transformer, pred_eos
        self.class_offset = num_bins + 1
        self.special_offset = self.class_offset + num_classes
        self.noise_label = self.special_offset + 1
        self.mask_offset = self.special_offset + 2
        self.depth_offset = self.mask_offset + num_embeddings
        self.enddepth_offset = self.depth_offset + num_embeddings_depth
        self._add_enc_embed(pos_enc, n_rows, n_cols, d_model)
        self.det_embed = nn.Parameter(torch.zeros(ntasks, 1, d_model))
        self.voc_embed = nn.Parameter(torch.zeros(num_vocal - 2 if pred_eos else num_vocal, d_model))
        self.dec_embed = nn.Parameter(torch.zeros(ntasks, dec_length, d_model))
        self.input_proj = nn.Linear(in_chans, d_model)
        self.encoder = Blocks([EncoderBlock(d_model, nhead, dim_feedforward) for _ in range(num_encoder_layers)])
        self.decoder = Blocks([DecoderBlock(d_model, nhead, dim_feedforward) for _ in range(num_decoder_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.outp_bias = nn.Parameter(torch.zeros(num_vocal))
        self.stem_ln = nn.LayerNorm(d_model)
        self.encout_ln = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_ln = nn.LayerNorm(d_model)
        self.proj_mlp = Mlp(d_model, dim_feedforward)
        self.proj_mlp_ln = nn.LayerNorm(d_model)

    def _add_enc_embed(self, pos_enc: str, n_rows: int, n_cols: int, d_model: int) -> None:
        if pos_enc in ("sine", "sine_norm"):
            self.register_buffer("enc_embed", sine_table(n_rows, n_cols, d_model, pos_enc == "sine_norm"))
        elif pos_enc == "learned":
            self.enc_embed = nn.Parameter(torch.zeros(1, n_rows, n_cols, d_model))
        else:
            raise ValueError(f"pos_enc must be 'sine', 'sine_norm' or 'learned', found {pos_enc!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.nhead

    @property
    def num_layers(self) -> int:
        return len(self.decoder.blocks)

    # ---- encoder side (once per image) -------------------------------------------------
    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, h, w) backbone features -> memory z (B, h*w, d_model)."""
        h, w = src.shape[-2:]
        pos = self.enc_embed[:, :h, :w, :].flatten(1, 2)
        x = self.stem_ln(self.input_proj(src.flatten(2).transpose(1, 2))) + pos
        for block in self.encoder.blocks:
            x = block(x)
        z = self.proj_ln(self.proj(self.encout_ln(x))) + pos
        return z + self.proj_mlp(self.proj_mlp_ln(z))

    def cross_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory -> cross keys and values, each (layers, B, heads, h*w, head_dim)."""
        kv = [block.cross_kv(memory) for block in self.decoder.blocks]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])

    # ---- decoder side ------------------------------------------------------------------
    def empty_cache(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention caches with no past positions."""
        shape = (self.num_layers, batch, self.nhead, 0, self.head_dim)
        return self.voc_embed.new_zeros(shape), self.voc_embed.new_zeros(shape)

    def vocabulary_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, then the tied output layer: x . voc_embed^T + outp_bias."""
        return self.norm(x) @ self.voc_embed.transpose(0, 1) + self.outp_bias

    def decode_step(self, token_embedding: torch.Tensor, step_index: torch.Tensor,
                    self_k_cache: torch.Tensor, self_v_cache: torch.Tensor,
                    cross_k: torch.Tensor, cross_v: torch.Tensor, task_id: int = DEPTH_TASK
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One position: (B, 1, d) input embedding (before dec_embed), 0-based ``step_index`` (1,) int64.

        Returns full-vocabulary logits (B, num_vocal) and the caches grown to S+1.
        """
        x = token_embedding + self.dec_embed[task_id].index_select(0, step_index.reshape(1))
        new_k, new_v = [], []
        for i, block in enumerate(self.decoder.blocks):
            x, k, v = block(x, self_k_cache[i], self_v_cache[i], cross_k[i], cross_v[i])
            new_k.append(k)
            new_v.append(v)
        return self.vocabulary_logits(x)[:, -1], torch.stack(new_k), torch.stack(new_v)

    def decode_full(self, token_embeddings: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor,
                    task_id: int = DEPTH_TASK) -> torch.Tensor:
        """Uncached decoder over a whole prefix (B, T, d) with a causal mask -> logits (B, T, num_vocal)."""
        b, t, _ = token_embeddings.shape
        x = token_embeddings + self.dec_embed[task_id, :t]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), diagonal=1)
        empty = x.new_zeros(b, self.nhead, 0, self.head_dim)
        for i, block in enumerate(self.decoder.blocks):
            x, _, _ = block(x, empty, empty, cross_k[i], cross_v[i], causal)
        return self.vocabulary_logits(x)

    # ---- the official depth loop (reference for the runtime) ---------------------------
    def depth_slice(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., self.depth_offset:self.enddepth_offset]

    def next_depth_input(self, depth_logits: torch.Tensor, tokens: torch.Tensor, soft: bool) -> torch.Tensor:
        """Soft: softmax(depth logits) @ voc_embed[depth slice]; hard: embedding of the chosen token."""
        table = self.voc_embed[self.depth_offset:self.enddepth_offset]
        if soft:
            return (depth_logits.softmax(dim=-1) @ table).unsqueeze(1)
        return table[tokens].unsqueeze(1)

    @torch.no_grad()
    def forward_depth(self, src: torch.Tensor, pred_len: int, soft: bool | None = None,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Official task-2 inference: (B, pred_len, K_depth) logits and (B, pred_len) tokens (within the slice)."""
        soft = self.soft_transformer if soft is None else soft
        cross_k, cross_v = self.cross_kv(self.encode(src))
        b = src.shape[0]
        self_k, self_v = self.empty_cache(b)
        x = self.det_embed[DEPTH_TASK].expand(b, -1, -1)
        all_logits, all_tokens = [], []
        for step in range(int(pred_len)):
            logits, self_k, self_v = self.decode_step(
                x, torch.tensor([step]), self_k, self_v, cross_k, cross_v, DEPTH_TASK)
            depth_logits = self.depth_slice(logits)
            tokens = nucleus_choice(depth_logits, self.top_p, generator)
            all_logits.append(depth_logits)
            all_tokens.append(tokens)
            x = self.next_depth_input(depth_logits, tokens, soft)
        return torch.stack(all_logits, dim=1), torch.stack(all_tokens, dim=1)

    # ---- the official instance-segmentation loop (reference for the runtime) -----------
    def object_slice(self, position: int) -> tuple[int, int]:
        """Vocabulary slice of an object's ``position``: 4 box bins, the class, then the mask codes."""
        if position < 4:
            return 0, self.class_offset
        if position == 4:
            return self.class_offset, self.special_offset
        return self.mask_offset, self.depth_offset

    @torch.no_grad()
    def forward_insseg(self, src: torch.Tensor, num_query: int, mask_tokens: int,
                       choose: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Official task-1 inference (``pred_eos`` false, label after the box): ``num_query`` objects of
        4 box bins, a class and ``mask_tokens`` mask codes.

        ``choose(slice_logits) -> tokens`` picks each token (default: :func:`nucleus_choice` at ``top_p``).
        Returns tokens (B, num_query * (5 + mask_tokens)) within their slices, class scores (B, num_query)
        from the softmax over the classes and the noise label, and mask-slice logits (B, num_query,
        mask_tokens, K). Mask steps feed back the soft token when ``soft_transformer``.
        """
        if self.pred_eos:
            raise ValueError("pred_eos true (sequences that end at a sampled EOS) is not implemented; "
                             "the released insseg configs set pred_eos false")
        choose = choose or (lambda logits: nucleus_choice(logits, self.top_p))
        cross_k, cross_v = self.cross_kv(self.encode(src))
        b, object_length = src.shape[0], 5 + mask_tokens
        self_k, self_v = self.empty_cache(b)
        x = self.det_embed[INSSEG_TASK].expand(b, -1, -1)
        tokens, scores, mask_logits = [], [], []
        for step in range(num_query * object_length):
            logits, self_k, self_v = self.decode_step(
                x, torch.tensor([step]), self_k, self_v, cross_k, cross_v, INSSEG_TASK)
            position = step % object_length
            lo, hi = self.object_slice(position)
            current = logits[:, lo:hi]
            token = choose(current)
            if position == 4:
                with_noise = torch.cat([current, logits[:, self.noise_label:self.noise_label + 1]], dim=1)
                scores.append(with_noise.softmax(dim=-1).gather(1, token[:, None])[:, 0])
            if position >= 5:
                mask_logits.append(current)
            if position >= 5 and self.soft_transformer:
                x = (current.softmax(dim=-1) @ self.voc_embed[lo:hi]).unsqueeze(1)
            else:
                x = self.voc_embed[token + lo].unsqueeze(1)
            tokens.append(token)
        return (torch.stack(tokens, dim=1), torch.stack(scores, dim=1),
                torch.stack(mask_logits, dim=1).reshape(b, num_query, mask_tokens, -1))


def nucleus_probs(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Official top-p rule: softmax over the smallest head whose softmax mass passes top_p (always the top token)."""
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    remove = torch.cumsum(sorted_logits.softmax(dim=-1), dim=-1) > top_p
    remove = torch.cat([torch.zeros_like(remove[..., :1]), remove[..., :-1]], dim=-1)
    filtered = logits.scatter(-1, sorted_idx, sorted_logits.masked_fill(remove, float("-inf")))
    return filtered.softmax(dim=-1)


def nucleus_choice(logits: torch.Tensor, top_p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A token drawn from :func:`nucleus_probs` (``torch.multinomial``, as officially).

    With top_p <= 0 only the top token survives, so the choice is the argmax (no sampling).
    """
    if top_p <= 0:
        return logits.argmax(dim=-1)
    return torch.multinomial(nucleus_probs(logits, top_p), 1, generator=generator).squeeze(-1)
