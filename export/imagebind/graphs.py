"""ImageBind's exported components, declared: one encoder per modality, each one per-item graph.

Every graph is :meth:`ModalityEncoder.encode` on one batch of items (batch symbolic):
preprocessor -> trunk -> head -> L2 normalise (-> logit scale). Clip averaging (audio
clips, video clips) happens in the runtime, after the graph, as the official forward
does after its postprocessor. The vision graph always takes 2-frame clips
``(N, 3, 2, 224, 224)``: an image is repeated to two identical frames (the official
``PadIm2Video``), so one graph serves images and video clips.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from export.graphs import ComponentSpec, Graph
from export.imagebind.heads import MAX_LOGIT_SCALE
from export.imagebind.model import (IMAGE_SIZE, IMU_CHANNELS, IMU_SAMPLES, MODALITIES, TEXT_CONTEXT_LENGTH,
                                    VIDEO_PAD_FRAMES, ModalityEncoder, build_encoder, resolve_config)
from runtime.tokenizer import ClipTokenizer

EXAMPLE_TEXTS = ["a dog barking on the beach", "waves rolling in", ""]
EXAMPLE_BATCH = 2  # items per example feed (what export traces and checks at)
BATCH = {0: "batch"}
# min/opt/max of the batch axis per graph (audio: clips of several items share one batch).
BATCH_RANGES = {m: {"min": 1, "opt": 2, "max": 8} for m in MODALITIES} | {"audio": {"min": 1, "opt": 3, "max": 24}}


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


def encoder_graph(modality: str, *, with_head: bool = False) -> Graph:
    """The graph ``<modality>_encoder``: input named as the modality, output ``embedding`` (+ ``head_output``)."""
    outputs = ("embedding", "head_output") if with_head else ("embedding",)
    return Graph(f"{modality}_encoder", partial(ItemGraph, with_head=with_head), (modality,), outputs,
                 {name: BATCH for name in (modality, *outputs)})


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


def example_input(modality: str, config: Mapping | None = None, batch: int = EXAMPLE_BATCH,
                  seed: int = 0) -> np.ndarray:
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


@dataclass(frozen=True)
class EncoderSpec(ComponentSpec):
    """The ``modality`` encoder of an ImageBind model with the constructor arguments ``config`` (official
    defaults for the missing ones): its one per-item graph, batch symbolic. Its example shape is a batch size."""

    modality: str
    config: Mapping | None = None

    @property
    def name(self) -> str:
        return f"{self.modality}_encoder"

    def build(self) -> ModalityEncoder:
        """The encoder, with the weights it is constructed with."""
        return build_encoder(self.modality, self.config)

    def graphs(self) -> tuple[Graph, ...]:
        return (encoder_graph(self.modality),)

    def example_inputs(self, module, shape: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        return {self.name: {self.modality: example_input(self.modality, self.config, batch=shape or EXAMPLE_BATCH)}}

    def shape_ranges(self) -> dict[str, dict[str, int]]:
        return {"batch": BATCH_RANGES[self.modality]}


def component_specs(config: Mapping | None, modalities: Sequence[str] = MODALITIES) -> list[EncoderSpec]:
    """The encoders of ``modalities``, in the order given."""
    return [EncoderSpec(m, config) for m in modalities]
