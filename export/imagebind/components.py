"""ImageBind export specs: one per-item graph per modality encoder.

Every graph is :meth:`ModalityEncoder.encode` on one batch of items (batch symbolic):
preprocessor -> trunk -> head -> L2 normalise (-> logit scale). Clip averaging (audio
clips, video clips) happens in the runtime, after the graph, as the official forward
does after its postprocessor. The vision graph always takes 2-frame clips
``(N, 3, 2, 224, 224)``: an image is repeated to two identical frames (the official
``PadIm2Video``), so one graph serves images and video clips.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from export.graphs import GraphSpec
from export.imagebind.heads import MAX_LOGIT_SCALE
from export.imagebind.model import (IMAGE_SIZE, IMU_CHANNELS, IMU_SAMPLES, MODALITIES, TEXT_CONTEXT_LENGTH,
                                    VIDEO_PAD_FRAMES, ModalityEncoder, resolve_config)
from runtime.tokenizer import ClipTokenizer

EXAMPLE_TEXTS = ["a dog barking on the beach", "waves rolling in", ""]


class ItemGraph(nn.Module):
    """Post-processed embedding of one batch of items; also the head output when ``with_head``."""

    def __init__(self, encoder: ModalityEncoder, with_head: bool = False):
        super().__init__()
        self.encoder = encoder
        self.with_head = with_head

    def forward(self, x: torch.Tensor):
        features = self.encoder.features(x)
        embedding = self.encoder.modality_postprocessors[self.encoder.modality](features)
        return (embedding, features) if self.with_head else embedding


def encoder_spec(encoder: ModalityEncoder, *, with_head: bool = False) -> GraphSpec:
    """The graph ``<modality>_encoder``: input named as the modality, output ``embedding`` (+ ``head_output``)."""
    m = encoder.modality
    outputs = ["embedding", "head_output"] if with_head else ["embedding"]
    return GraphSpec(name=f"{m}_encoder", module=ItemGraph(encoder, with_head), inputs=[m], outputs=outputs,
                     dynamic_axes={n: {0: "batch"} for n in (m, *outputs)})


def item_shape(modality: str, config: Mapping | None = None) -> tuple[int, ...]:
    """Shape of one item as the graph takes it (no batch axis)."""
    cfg = resolve_config(config)
    shapes = {
        "vision": (3, VIDEO_PAD_FRAMES, IMAGE_SIZE, IMAGE_SIZE),
        "text": (TEXT_CONTEXT_LENGTH,),
        "audio": (1, cfg["audio_num_mel_bins"], cfg["audio_target_len"]),
        "depth": (1, IMAGE_SIZE, IMAGE_SIZE),
        "thermal": (1, IMAGE_SIZE, IMAGE_SIZE),
        "imu": (IMU_CHANNELS, IMU_SAMPLES),
    }
    if modality not in shapes:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return shapes[modality]


def example_input(modality: str, config: Mapping | None = None, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded example feed of ``batch`` items (token ids for text)."""
    if modality == "text":
        return ClipTokenizer()((EXAMPLE_TEXTS * batch)[:batch], context_length=TEXT_CONTEXT_LENGTH)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *item_shape(modality, config)), generator=generator).numpy()


def logit_scale(encoder: ModalityEncoder) -> float:
    """The scale the postprocessor multiplies by (1.0 for vision): ``min(exp(log_logit_scale), 100)``."""
    post = encoder.modality_postprocessors[encoder.modality]
    log_scale = getattr(post[-1], "log_logit_scale", None) if isinstance(post, nn.Sequential) else None
    if log_scale is None:
        return 1.0
    return float(min(float(log_scale.detach().exp()), MAX_LOGIT_SCALE))
