"""AiT's pipeline constants: what export writes into a bundle's manifest and the pipelines read, per task.

A depth bundle carries :class:`DepthConstants`, an instance-segmentation bundle
:class:`InstanceConstants`; their ``task`` key tells them apart (:func:`task_of`). The JSON
keys are the field names; ``normalisation`` and ``resize`` say, for a reader, how the official
data pipeline prepares an image (``depth`` and ``instances`` do it), and ``tables`` names the
bundle's ``.npy`` embedding tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from runtime.bundle import Bundle
from runtime.constants import Constants


@dataclass(frozen=True)
class DecoderShape(Constants):
    """The AR decoder's size: what its self-attention cache holds per step."""

    layers: int
    heads: int
    head_dim: int
    d_model: int


@dataclass(frozen=True)
class DepthNormalisation(Constants):
    """Depth pixels: RGB times ``scale`` (ToTensor), no mean/std (both None: the official NYUv2 data path)."""

    scale: float
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    note: str


@dataclass(frozen=True)
class DepthVocabulary(Constants):
    """Where the token kinds start in the AR vocabulary; ``depth_slice``: [first, end) of the depth codes."""

    num_vocal: int
    class_offset: int
    special_offset: int
    noise_label: int
    mask_offset: int
    depth_slice: tuple[int, int]


@dataclass(frozen=True)
class DepthTables(Constants):
    """The bundle's ``.npy`` files: the task-start embedding and the depth codes' embeddings."""

    start_embedding: str
    depth_code_embeddings: str


@dataclass(frozen=True)
class DepthConstants(Constants):
    """Everything an AiT depth bundle's pipeline needs besides its graphs: input sizes, the official TTA
    (``shift_size`` windows, ``flip_test``), the AR loop (``token_length`` steps, top-p, soft tokens) and
    the depth range."""

    FAMILY: ClassVar[str] = "ait"

    task: Literal["depth"]
    task_id: int
    image_size: int
    test_size: tuple[int, int]
    normalisation: DepthNormalisation
    resize: str
    shift_size: int
    flip_test: bool
    min_depth: float
    max_depth: float
    token_length: int
    feature_side: int
    top_p: float
    soft_transformer: bool
    soft_vae: bool
    tau: float
    vocabulary: DepthVocabulary
    decoder: DecoderShape
    tables: DepthTables


@dataclass(frozen=True)
class PixelNormalisation(Constants):
    """Instance pixels: RGB 0-255 minus ``mean`` over ``std`` (the official ``img_norm_cfg``)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    note: str


@dataclass(frozen=True)
class InstanceVocabulary(Constants):
    """The [first, end) slices of one object's positions in the AR vocabulary: box bins, classes, mask codes;
    and the noise label that joins the class softmax for the score."""

    num_vocal: int
    box_slice: tuple[int, int]
    class_slice: tuple[int, int]
    noise_label: int
    mask_slice: tuple[int, int]


@dataclass(frozen=True)
class InstanceTables(Constants):
    """The bundle's ``.npy`` files: the task-start embedding and the whole vocabulary's embeddings."""

    start_embedding: str
    vocabulary_embeddings: str


@dataclass(frozen=True)
class InstanceConstants(Constants):
    """Everything an AiT insseg bundle's pipeline needs besides its graphs: the input size and normalisation,
    the AR loop (``num_query`` objects of ``object_length`` tokens, top-p), and box and mask decoding."""

    FAMILY: ClassVar[str] = "ait"

    task: Literal["insseg"]
    task_id: int
    image_size: int
    normalisation: PixelNormalisation
    resize: str
    norm_val: int
    num_bins: int
    num_query: int
    object_length: int
    mask_tokens: int
    mask_size: int
    mask_threshold: float
    top_p: float
    soft_transformer: bool
    soft_vae: bool
    vocabulary: InstanceVocabulary
    decoder: DecoderShape
    tables: InstanceTables


def task_of(bundle: Bundle) -> str | None:
    """The task an AiT bundle was exported for (``"depth"``: :class:`DepthConstants`, ``"insseg"``:
    :class:`InstanceConstants`), read before its constants; None for a bundle of another family."""
    return bundle.pipeline.get("task") if bundle.manifest.family == "ait" else None
