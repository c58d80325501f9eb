"""AiT's VQVAE tokenizer/detokenizer (depth maps and instance masks share the class).

Module layout mirrors the official ``ait/code/model/vqvae.py`` so checkpoint keys
(``encoder.N``, ``decoder.N``, ``_vq_vae._embedding`` ...) load unchanged.
"""
from __future__ import annotations

from math import isqrt, log2

import torch
from torch import nn

NORM_MAX_VALUE = 1.0  # the official ``max_value`` used by norm/denorm
# Keys of an official ``vae_cfg`` that are not the network's: the registry name and the switches that load and
# freeze its own weight file (here weights come from the checkpoint loader, and inference never trains).
BUILD_ARGS = ("type", "pretrained", "freeze")


def model_args(vae_cfg: dict) -> dict:
    """An official VQVAE config (``vae_cfg``) -> the arguments of :class:`VQVAE`."""
    return {k: v for k, v in vae_cfg.items() if k not in BUILD_ARGS}


class ResBlock(nn.Module):
    """conv3-ReLU-conv3-ReLU-conv1 with an identity shortcut (official ``ResBlock_v1``)."""

    def __init__(self, chan: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(chan, chan, 3, padding=1), nn.ReLU(),
            nn.Conv2d(chan, chan, 3, padding=1), nn.ReLU(),
            nn.Conv2d(chan, chan, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + x


class EMACodebook(nn.Module):
    """The EMA codebook's buffers (``_embedding``, ``_ema_cluster_size``, ``_ema_w``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.register_buffer("_embedding", torch.zeros(num_embeddings, embedding_dim))
        self.register_buffer("_ema_cluster_size", torch.zeros(num_embeddings))
        self.register_buffer("_ema_w", torch.zeros(num_embeddings, embedding_dim))

    def nearest(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) latents -> (B, h*w) index of the nearest code by squared L2."""
        flat = latents.permute(0, 2, 3, 1).reshape(latents.shape[0], -1, latents.shape[1])
        codes = self._embedding
        distances = (flat.pow(2).sum(-1, keepdim=True) + codes.pow(2).sum(-1)
                     - 2 * flat @ codes.t())
        return distances.argmin(-1)


def _encoder_layers(hidden_dim: int, layer_num: int, num_resnet_blocks: int, codebook_dim: int) -> list[nn.Module]:
    dim = hidden_dim
    layers: list[nn.Module] = [nn.Conv2d(1, dim, 4, stride=2, padding=1), nn.ReLU()]
    for _ in range(layer_num):
        layers += [nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1), nn.ReLU()]
        dim *= 2
    layers += [ResBlock(dim) for _ in range(num_resnet_blocks)]
    layers.append(nn.Conv2d(dim, codebook_dim, 1))
    return layers


def _decoder_layers(dim: int, layer_num: int, num_resnet_blocks: int, codebook_dim: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(codebook_dim, dim, 1), nn.ReLU()]
    layers += [ResBlock(dim) for _ in range(num_resnet_blocks)]
    layers += [nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1), nn.ReLU()]
    for _ in range(layer_num):
        layers += [nn.ConvTranspose2d(dim, dim // 2, 4, stride=2, padding=1), nn.ReLU()]
        dim //= 2
    layers.append(nn.Conv2d(dim, 1, 1))
    return layers


class VQVAE(nn.Module):
    """Official constructor arguments; weights come from the checkpoint, never from a file here."""

    def __init__(self, token_length: int = 16, mask_size: int = 64, embedding_dim: int = 512,
                 num_embeddings: int = 1024, num_resnet_blocks: int = 2, hidden_dim: int = 256,
                 use_norm: bool = True, use_sigmoid: bool = False, tau: float = 1.0):
        super().__init__()
        side = isqrt(token_length)
        if side * side != token_length or mask_size % side:
            raise ValueError(f"token_length must be a square whose side divides mask_size; "
                             f"found token_length={token_length}, mask_size={mask_size}")
        downsample_ratio = mask_size // side
        layer_num = int(log2(downsample_ratio) - 1)
        enc_dim = hidden_dim // (downsample_ratio // 2)
        self.token_length, self.mask_size, self.side = token_length, mask_size, side
        self.use_norm, self.use_sigmoid, self.tau = use_norm, use_sigmoid, tau
        self.encoder = nn.Sequential(*_encoder_layers(enc_dim, layer_num, num_resnet_blocks, embedding_dim))
        self.decoder = nn.Sequential(*_decoder_layers(enc_dim * downsample_ratio // 2, layer_num,
                                                      num_resnet_blocks, embedding_dim))
        self._vq_vae = EMACodebook(num_embeddings, embedding_dim)

    def encode_indices(self, image: torch.Tensor) -> torch.Tensor:
        """(B, mask_size, mask_size) depth/mask -> (B, token_length) int64 code indices."""
        if tuple(image.shape[-2:]) != (self.mask_size, self.mask_size):
            raise ValueError(f"expected (B, {self.mask_size}, {self.mask_size}) input, found {tuple(image.shape)}")
        image = image.float()
        if self.use_norm:
            image = 2.0 * (image / NORM_MAX_VALUE - 0.5)
        return self._vq_vae.nearest(self.encoder(image.unsqueeze(1)))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, N) code indices -> (B, mask_size, mask_size)."""
        embeds = self._vq_vae._embedding[indices]  # B, N, D
        b, n, d = embeds.shape
        side = isqrt(n)
        return self._decode_latents(embeds.reshape(b, side, side, d).permute(0, 3, 1, 2))

    def decode_soft(self, logits: torch.Tensor, tau: float | None = None) -> torch.Tensor:
        """(B, K, n, n) code logits -> softmax(logits*tau) over K -> weighted codes -> (B, H, W)."""
        tau = self.tau if tau is None else tau
        return self.decode_probs(torch.softmax(logits * tau, dim=1))

    def decode_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, K, n, n) code probabilities -> (B, H, W)."""
        latents = torch.einsum("bnhw,nd->bdhw", probs, self._vq_vae._embedding)
        return self._decode_latents(latents)

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        images = self.decoder(latents).squeeze(1)
        if self.use_sigmoid:
            return images.sigmoid()
        if self.use_norm:
            return (images * 0.5 + 0.5) * NORM_MAX_VALUE
        return images
