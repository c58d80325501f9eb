"""ImageBind's pipeline constants: what export writes into a bundle's manifest and the pipeline reads.

The manifest's ``pipeline`` object (JSON keys = field names)::

    {"embed_dim", "similarity",
     "modalities": {<modality>: {"component", "input", "logit_scale",
                                 "preprocess": {...}}}}   (the modalities the bundle has encoders for)

``preprocess`` holds the official ``imagebind/data.py`` settings of its modality, whose class
:data:`MODALITY_CONSTANTS` gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from runtime.constants import Constants, by_key


@dataclass(frozen=True)
class VisionPreprocess(Constants):
    """Images: resize the short side, centre-crop, normalise; repeated to ``frames`` identical frames
    (official ``PadIm2Video``)."""

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    frames: int
    note: str


@dataclass(frozen=True)
class TextPreprocess(Constants):
    """Text: the CLIP tokenizer file in the bundle and the context length."""

    tokenizer: str
    context_length: int


@dataclass(frozen=True)
class AudioPreprocess(Constants):
    """Audio: mel filter banks of ``clips_per_video`` clips of ``clip_duration`` seconds, normalised."""

    sample_rate: int
    num_mel_bins: int
    target_length: int
    clip_duration: int
    clips_per_video: int
    mean: float
    std: float
    note: str


@dataclass(frozen=True)
class MapPreprocess(Constants):
    """Depth and thermal maps: 2-D arrays of side ``size`` (ImageBind ships no loader for them)."""

    size: int
    note: str


@dataclass(frozen=True)
class ImuPreprocess(Constants):
    """IMU: one ``shape`` array (channels, samples) per item."""

    shape: tuple[int, int]


@dataclass(frozen=True)
class ModalityConstants(Constants):
    """One modality's encoder: its component, graph input, logit scale and preprocessing (of the class that
    :data:`MODALITY_CONSTANTS` gives the modality)."""

    component: str
    input: str
    logit_scale: float
    preprocess: Constants


@dataclass(frozen=True)
class VisionModality(ModalityConstants):
    preprocess: VisionPreprocess


@dataclass(frozen=True)
class TextModality(ModalityConstants):
    preprocess: TextPreprocess


@dataclass(frozen=True)
class AudioModality(ModalityConstants):
    preprocess: AudioPreprocess


@dataclass(frozen=True)
class MapModality(ModalityConstants):
    preprocess: MapPreprocess


@dataclass(frozen=True)
class ImuModality(ModalityConstants):
    preprocess: ImuPreprocess


# modality -> the class of its constants
MODALITY_CONSTANTS = {"vision": VisionModality, "text": TextModality, "audio": AudioModality,
                      "depth": MapModality, "thermal": MapModality, "imu": ImuModality}


@dataclass(frozen=True)
class ImageBindConstants(Constants):
    """Everything an ImageBind bundle's pipeline needs besides its graphs: per modality its encoder and
    preprocessing, the embedding size and (for a reader) how embeddings compare."""

    FAMILY: ClassVar[str] = "imagebind"

    embed_dim: int
    similarity: str
    modalities: dict[str, ModalityConstants] = by_key(MODALITY_CONSTANTS)
