"""AiT's exported component, declared: the task solver (Swin V2 backbone, AR transformer, the task's VQVAE),
built together because its graphs share those modules, and the graphs it becomes: plain tensors in, plain
tensors out.

Each wrapper below is one ONNX graph of the bundle; a :class:`~export.graphs.Graph` declaration names its
inputs/outputs and symbolic axes, :class:`DepthSpec` and :class:`InstanceSpec` list a task's graphs with their
example inputs and shape ranges. Token choice (argmax / top-p) and the soft-token mixing stay in the runtime
loop; the tables it needs come from :func:`depth_tables` / :func:`instance_tables`.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from math import isqrt
from typing import Callable

import numpy as np
import torch
from torch import nn

from export.ait.ar_transformer import DEPTH_TASK, INSSEG_TASK, ARTransformer
from export.ait.presets import DepthConfig, InstanceConfig
from export.ait.swin import SwinV2TransformerRPE2FC
from export.ait.vqvae import VQVAE
from export.graphs import ComponentSpec, Graph

BATCH = {0: "batch"}
CACHE = {1: "batch", 3: "past"}
NEW_CACHE = {1: "batch", 3: "past_plus_one"}
CROSS = {1: "batch"}
PARTS = ("backbone", "transformer", "vqvae")  # the task solver's modules, in build (and seed) order
DECODER_STEP = "decoder_step"


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


Modules = dict[str, nn.Module]  # the task solver's parts by name (PARTS)

IMAGE_ENCODER = Graph("image_encoder", lambda m: ImageEncoder(m["backbone"], m["transformer"]), ("image",),
                      ("cross_k", "cross_v"), {"image": BATCH, "cross_k": CROSS, "cross_v": CROSS})
VQVAE_SOFT_DECODER = Graph("vqvae_soft_decoder", lambda m: VQVAESoftDecoder(m["vqvae"]), ("code_logits",),
                           ("depth",), {"code_logits": BATCH, "depth": BATCH})
MASK_SOFT_DECODER = Graph("mask_soft_decoder", lambda m: VQVAESoftDecoder(m["vqvae"]), ("code_logits",),
                          ("masks",), {"code_logits": BATCH, "masks": BATCH})
VQVAE_INDEX_DECODER = Graph("vqvae_index_decoder", lambda m: VQVAEIndexDecoder(m["vqvae"]), ("indices",),
                            ("depth",), {"indices": BATCH, "depth": BATCH})
VQVAE_ENCODER = Graph("vqvae_encoder", lambda m: VQVAEEncoder(m["vqvae"]), ("depth",), ("indices",),
                      {"depth": BATCH, "indices": BATCH})


def decoder_step_graph(task_id: int = DEPTH_TASK) -> Graph:
    """One cached decoder step of task ``task_id`` (2: depth, 1: instance segmentation)."""
    return Graph(DECODER_STEP, lambda m: DecoderStep(m["transformer"], task_id),
                 ("token_embedding", "step_index", "self_k", "self_v", "cross_k", "cross_v"),
                 ("logits", "new_self_k", "new_self_v"),
                 {"token_embedding": BATCH, "self_k": CACHE, "self_v": CACHE, "cross_k": CROSS, "cross_v": CROSS,
                  "logits": BATCH, "new_self_k": NEW_CACHE, "new_self_v": NEW_CACHE})


def _step_feeds(transformer: ARTransformer, cross_k: torch.Tensor, cross_v: torch.Tensor,
                generator: torch.Generator) -> dict[str, np.ndarray]:
    past = 3
    cache = (transformer.num_layers, 2, transformer.nhead, past, transformer.head_dim)
    return {"token_embedding": torch.randn(2, 1, transformer.d_model, generator=generator).numpy(),
            "step_index": np.array([past], np.int64),
            "self_k": torch.randn(cache, generator=generator).numpy(),
            "self_v": torch.randn(cache, generator=generator).numpy(),
            "cross_k": cross_k.numpy(), "cross_v": cross_v.numpy()}


def _encoded(modules: Modules, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image encoder's cross keys/values for ``image``: the decoder step's example memory."""
    with torch.no_grad():
        return IMAGE_ENCODER.wrap(modules)(image)


@dataclass(frozen=True)
class TaskSolverSpec(ComponentSpec):
    """The one component of an AiT bundle for ``config``. Its examples are fixed (batch 2, a past of 3 tokens):
    the example shape is ignored. Its decoder's past length is symbolic, from 0 to the token length - 1."""

    config: DepthConfig | InstanceConfig

    @property
    def name(self) -> str:
        return self.config.name

    def build_part(self, part: str) -> nn.Module:
        """The part ``part`` (one of :data:`PARTS`), with the weights it is constructed with."""
        builders: dict[str, Callable[[], nn.Module]] = {
            "backbone": lambda: SwinV2TransformerRPE2FC(**self.config.backbone),
            "transformer": lambda: ARTransformer(**self.config.transformer),
            "vqvae": lambda: VQVAE(**self.config.vqvae)}
        return builders[part]()

    @abstractmethod
    def batch_range(self) -> dict[str, int]:
        """min/opt/max of the batch axis."""

    def shape_ranges(self) -> dict[str, dict[str, int]]:
        n = self.config.token_length
        return {"batch": self.batch_range(),
                "past": {"min": 0, "opt": n // 2, "max": n - 1},
                "past_plus_one": {"min": 1, "opt": n // 2 + 1, "max": n}}


class DepthSpec(TaskSolverSpec):
    """Depth: image encoder, cached decoder step (task 2), VQVAE soft / index decoders and the VQVAE encoder."""

    def graphs(self) -> tuple[Graph, ...]:
        return (IMAGE_ENCODER, decoder_step_graph(DEPTH_TASK), VQVAE_SOFT_DECODER, VQVAE_INDEX_DECODER,
                VQVAE_ENCODER)

    def batch_range(self) -> dict[str, int]:
        """Windows x flips of the test-time augmentation."""
        windows = self.config.shift_size * (2 if self.config.flip_test else 1)
        return {"min": 1, "opt": windows, "max": max(8, windows)}

    def example_inputs(self, module: Modules, shape=None) -> dict[str, dict[str, np.ndarray]]:
        c = self.config
        generator = torch.Generator().manual_seed(0)
        size, n, k = c.image_size, c.token_length, c.vqvae["num_embeddings"]
        image = torch.rand(2, 3, size, size, generator=generator)
        cross_k, cross_v = _encoded(module, image)
        return {
            IMAGE_ENCODER.name: {"image": image.numpy()},
            DECODER_STEP: _step_feeds(module["transformer"], cross_k, cross_v, generator),
            VQVAE_SOFT_DECODER.name: {"code_logits": torch.randn(2, n, k, generator=generator).numpy()},
            VQVAE_INDEX_DECODER.name: {"indices": torch.randint(0, k, (2, n), generator=generator).numpy()},
            VQVAE_ENCODER.name: {"depth": (torch.rand(2, size, size, generator=generator) * c.max_depth).numpy()},
        }


class InstanceSpec(TaskSolverSpec):
    """Instance segmentation: image encoder, cached decoder step (task 1) and the instance-mask soft decoder."""

    def graphs(self) -> tuple[Graph, ...]:
        return (IMAGE_ENCODER, decoder_step_graph(INSSEG_TASK), MASK_SOFT_DECODER)

    def batch_range(self) -> dict[str, int]:
        """Images, and objects for the mask decoder."""
        return {"min": 1, "opt": 1, "max": max(8, self.config.num_query)}

    def example_inputs(self, module: Modules, shape=None) -> dict[str, dict[str, np.ndarray]]:
        c = self.config
        generator = torch.Generator().manual_seed(0)
        image = torch.randn(2, 3, c.image_size, c.image_size, generator=generator)
        cross_k, cross_v = _encoded(module, image)
        return {
            IMAGE_ENCODER.name: {"image": image.numpy()},
            DECODER_STEP: _step_feeds(module["transformer"], cross_k, cross_v, generator),
            MASK_SOFT_DECODER.name: {"code_logits": torch.randn(3, c.mask_tokens, c.vqvae["num_embeddings"],
                                                                generator=generator).numpy()},
        }


def component_specs(config: DepthConfig | InstanceConfig) -> list[TaskSolverSpec]:
    """The bundle's one component: the depth or the instance-segmentation task solver."""
    return [InstanceSpec(config) if isinstance(config, InstanceConfig) else DepthSpec(config)]
