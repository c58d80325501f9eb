"""The AiT submodules as exportable graphs: plain tensors in, plain tensors out.

Each wrapper is one ONNX graph of the bundle; ``GRAPH_IO`` names its inputs/outputs and
dynamic axes for :func:`export.onnx_io.export_onnx`. Token choice (argmax / top-p) and the
soft-token mixing stay in the runtime loop; the tables it needs come from :func:`depth_tables`.
"""
from __future__ import annotations

from math import isqrt

import numpy as np
import torch
from torch import nn

from export.ait.ar_transformer import DEPTH_TASK, INSSEG_TASK, ARTransformer
from export.ait.swin import SwinV2TransformerRPE2FC
from export.ait.vqvae import VQVAE
from export.graphs import GraphSpec

BATCH = {0: "batch"}
CACHE = {1: "batch", 3: "past"}
NEW_CACHE = {1: "batch", 3: "past_plus_one"}
CROSS = {1: "batch"}

GRAPH_IO = {
    "image_encoder": dict(
        input_names=["image"], output_names=["cross_k", "cross_v"],
        dynamic_axes={"image": BATCH, "cross_k": CROSS, "cross_v": CROSS}),
    "decoder_step": dict(
        input_names=["token_embedding", "step_index", "self_k", "self_v", "cross_k", "cross_v"],
        output_names=["logits", "new_self_k", "new_self_v"],
        dynamic_axes={"token_embedding": BATCH, "self_k": CACHE, "self_v": CACHE, "cross_k": CROSS,
                      "cross_v": CROSS, "logits": BATCH, "new_self_k": NEW_CACHE, "new_self_v": NEW_CACHE}),
    "vqvae_soft_decoder": dict(
        input_names=["code_logits"], output_names=["depth"],
        dynamic_axes={"code_logits": BATCH, "depth": BATCH}),
    "mask_soft_decoder": dict(
        input_names=["code_logits"], output_names=["masks"],
        dynamic_axes={"code_logits": BATCH, "masks": BATCH}),
    "vqvae_prob_decoder": dict(
        input_names=["code_probs"], output_names=["depth"],
        dynamic_axes={"code_probs": BATCH, "depth": BATCH}),
    "vqvae_index_decoder": dict(
        input_names=["indices"], output_names=["depth"],
        dynamic_axes={"indices": BATCH, "depth": BATCH}),
    "vqvae_encoder": dict(
        input_names=["depth"], output_names=["indices"],
        dynamic_axes={"depth": BATCH, "indices": BATCH}),
}


class ImageEncoder(nn.Module):
    """Normalised image (B, 3, H, W) -> Swin last stage -> AR encoder -> cross keys/values."""

    def __init__(self, backbone: SwinV2TransformerRPE2FC, transformer: ARTransformer):
        super().__init__()
        self.backbone, self.transformer = backbone, transformer

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transformer.cross_kv(self.transformer.encode(self.backbone(image)[-1]))


class DecoderStep(nn.Module):
    """One cached decoder step of one task; logits over the full vocabulary."""

    def __init__(self, transformer: ARTransformer, task_id: int = DEPTH_TASK):
        super().__init__()
        self.transformer, self.task_id = transformer, task_id

    def forward(self, token_embedding, step_index, self_k, self_v, cross_k, cross_v):
        return self.transformer.decode_step(token_embedding, step_index, self_k, self_v,
                                            cross_k, cross_v, self.task_id)


def _as_code_grid(per_token: torch.Tensor) -> torch.Tensor:
    """(B, N, K) per-token code scores -> (B, K, n, n), as the official depth head reshapes."""
    b, n, k = per_token.shape
    side = isqrt(n)
    return per_token.transpose(1, 2).reshape(b, k, side, side)


class VQVAESoftDecoder(nn.Module):
    """(B, N, K) code logits (the AR loop's collected slice logits) -> (B, H, W); softmax(logits*tau)."""

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, code_logits: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode_soft(_as_code_grid(code_logits))


class VQVAEProbDecoder(nn.Module):
    """(B, N, K) code probabilities (softmax already applied) -> (B, H, W)."""

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, code_probs: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode_probs(_as_code_grid(code_probs))


class VQVAEIndexDecoder(nn.Module):
    """(B, N) int64 code indices -> (B, H, W) (the hard detokenizer)."""

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.vqvae.decode_indices(indices)


class VQVAEEncoder(nn.Module):
    """(B, H, W) depth/mask -> (B, N) int64 nearest-code indices (the tokenizer)."""

    def __init__(self, vqvae: VQVAE):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        return self.vqvae.encode_indices(depth)


def depth_tables(transformer: ARTransformer) -> dict[str, np.ndarray]:
    """What the runtime's depth loop needs besides the graphs: start embedding and depth-code rows."""
    t = transformer
    return {
        "start_embedding": t.det_embed[DEPTH_TASK].detach().cpu().numpy(),  # (1, d)
        "depth_code_embeddings": t.voc_embed[t.depth_offset:t.enddepth_offset].detach().cpu().numpy(),
        "depth_slice": np.array([t.depth_offset, t.enddepth_offset], dtype=np.int64),
    }


def instance_tables(transformer: ARTransformer) -> dict[str, np.ndarray]:
    """The insseg loop's tables: the task-1 start embedding and the whole (tied) vocabulary embedding."""
    t = transformer
    return {"start_embedding": t.det_embed[INSSEG_TASK].detach().cpu().numpy(),  # (1, d)
            "vocabulary_embeddings": t.voc_embed.detach().cpu().numpy()}  # (num_vocal, d)


def graph_spec(name: str, module: torch.nn.Module) -> GraphSpec:
    """The bundle's graph ``name`` (tensor names and symbolic axes of ``GRAPH_IO``) around ``module``."""
    io = GRAPH_IO[name]
    return GraphSpec(name, module.eval(), io["input_names"], io["output_names"], io["dynamic_axes"])
