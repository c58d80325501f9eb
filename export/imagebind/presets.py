"""ImageBind model configurations: the released ``imagebind_huge`` and the ``tiny`` preset.

A config is the OFFICIAL ``ImageBindModel`` constructor arguments (overrides of its
defaults), so a released checkpoint, a golden case and a preset build through the same
``build_encoder``. Every preset has all six modalities.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from export.imagebind.model import IMAGEBIND_HUGE, MODALITIES


@dataclass
class ImageBindPreset:
    name: str
    config: dict[str, Any]
    modalities: tuple[str, ...] = MODALITIES
    notes: list[str] = field(default_factory=list)


def tiny() -> ImageBindPreset:
    """Small widths and two blocks per trunk; released kernel sizes and input sizes (224, 77, 128x204, 2000)."""
    config = {"out_embed_dim": 32}
    for modality, dim, heads in (("vision", 64, 4), ("text", 32, 2), ("audio", 48, 4), ("depth", 32, 4),
                                 ("thermal", 32, 4), ("imu", 32, 4)):
        config.update({f"{modality}_embed_dim": dim, f"{modality}_num_blocks": 2, f"{modality}_num_heads": heads})
    return ImageBindPreset("tiny", config, notes=["tiny preset: random weights, for tests and pipeline checks"])


def imagebind_huge() -> ImageBindPreset:
    return ImageBindPreset("imagebind_huge", dict(IMAGEBIND_HUGE),
                           notes=["imagebind_huge: the released checkpoint's configuration (out dim 1024)"])


def presets() -> dict[str, ImageBindPreset]:
    return {p.name: p for p in (tiny(), imagebind_huge())}
