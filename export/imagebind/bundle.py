"""Write an ImageBind bundle: one encoder graph per modality, preprocessing constants, tokenizer, logit scales.

Weights come from the released ``imagebind_huge.pth`` (a plain ``state_dict``, no prefix,
read with ``weights_only=True``) or, without one, from seeded random values. Each graph
is checked against its torch module under ONNX Runtime as it is written.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from export.checkpoint import CheckpointError, load_into, meta_parameters, read_checkpoint
from export.imagebind.graphs import EncoderSpec, component_specs, logit_scale
from export.imagebind.model import MODALITIES, TEXT_CONTEXT_LENGTH, VIDEO_PAD_FRAMES, ModalityEncoder, resolve_config
from export.imagebind.presets import ImageBindPreset
from export.phases import export_component, peak_rss_gib
from export.random_init import randomize_
from runtime.bundle import BundleWriter, Manifest, write_manifest
from runtime.constants import Constants
from runtime.imagebind.constants import (MODALITY_CONSTANTS, AudioPreprocess, ImageBindConstants, ImuPreprocess,
                                         MapPreprocess, TextPreprocess, VisionPreprocess)
from runtime.imagebind.preprocess import AUDIO_MEAN, AUDIO_STD, CLIP_MEAN, CLIP_STD, IMAGE_SIZE, IMU_SHAPE
from runtime.tokenizer import VOCAB_FILE

TOKENIZER_FILE = "tokenizer/" + VOCAB_FILE.name
AUDIO_CLIPS = 3
AUDIO_CLIP_SECONDS = 2
AUDIO_SAMPLE_RATE = 16000
Log = Callable[[str], None]


def check_modalities(modalities: Sequence[str] | None) -> tuple[str, ...]:
    chosen = tuple(modalities or MODALITIES)
    unknown = [m for m in chosen if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; expected some of {MODALITIES}")
    return chosen


def modality_state(state: Mapping[str, torch.Tensor], modality: str) -> dict[str, torch.Tensor]:
    """The checkpoint entries ``modality_<stage>.<modality>.*`` (official names, kept whole)."""
    return {k: v for k, v in state.items() if k.startswith("modality_") and k.split(".")[1:2] == [modality]}


def build_one(preset: ImageBindPreset, modality: str, state: Mapping[str, torch.Tensor] | None, *,
              seed: int = 0, source: Path | None = None) -> ModalityEncoder:
    """One encoder, from a checkpoint's tensors (built on the meta device, so the checkpoint's memory-mapped
    tensors become its weights) or seeded random weights (seed + modality index) when ``state`` is None."""
    spec = EncoderSpec(modality, preset.config)
    if state is None:
        return randomize_(spec.build(), seed + MODALITIES.index(modality)).eval()
    part = modality_state(state, modality)
    if not part:
        raise CheckpointError(f"{source} has no keys for {modality} (expected modality_*.{modality}.*); is it "
                              f"ImageBind's imagebind_huge.pth?")
    with meta_parameters():
        encoder = spec.build()
    load_into(encoder, part, what=f"imagebind {preset.name} {modality} encoder")
    return encoder.eval()


def build_encoders(preset: ImageBindPreset, modalities: Sequence[str] | None = None, *,
                   checkpoint: Path | None = None, seed: int = 0) -> dict[str, ModalityEncoder]:
    """The preset's encoders, filled from ``checkpoint`` or seeded random weights (seed + modality index)."""
    state = read_checkpoint(checkpoint) if checkpoint is not None else None
    return {m: build_one(preset, m, state, seed=seed, source=checkpoint) for m in check_modalities(modalities)}


def preprocess_constants(modality: str, config: Mapping) -> Constants:
    """What the runtime's numpy preprocessing needs for ``modality`` (official ``imagebind/data.py`` values)."""
    cfg = resolve_config(config)
    if modality == "vision":
        return VisionPreprocess(resize=IMAGE_SIZE, crop=IMAGE_SIZE, interpolation="pillow bicubic (antialiased)",
                                mean=CLIP_MEAN, std=CLIP_STD, frames=VIDEO_PAD_FRAMES,
                                note="images are repeated to `frames` identical frames (official PadIm2Video)")
    if modality == "text":
        return TextPreprocess(tokenizer=TOKENIZER_FILE, context_length=TEXT_CONTEXT_LENGTH)
    if modality == "audio":
        return AudioPreprocess(sample_rate=AUDIO_SAMPLE_RATE, num_mel_bins=cfg["audio_num_mel_bins"],
                               target_length=cfg["audio_target_len"], clip_duration=AUDIO_CLIP_SECONDS,
                               clips_per_video=AUDIO_CLIPS, mean=AUDIO_MEAN, std=AUDIO_STD,
                               note="embedding = mean of the post-processed clip embeddings")
    if modality in ("depth", "thermal"):
        return MapPreprocess(size=IMAGE_SIZE,
                             note="no official loader: 2-D float arrays as given, files scaled to [0, 1]")
    return ImuPreprocess(shape=IMU_SHAPE)


def pipeline_constants(preset: ImageBindPreset, logit_scales: Mapping[str, float]) -> ImageBindConstants:
    """The manifest's pipeline constants for the exported modalities (``{modality: its logit scale}``)."""
    return ImageBindConstants(
        embed_dim=resolve_config(preset.config)["out_embed_dim"],
        similarity="dot product of embeddings; zero-shot = softmax(items @ texts.T) as the official demo",
        modalities={m: MODALITY_CONSTANTS[m](component=f"{m}_encoder", input=m, logit_scale=scale,
                                             preprocess=preprocess_constants(m, preset.config))
                    for m, scale in logit_scales.items()},
    )


def export_bundle(preset: ImageBindPreset, out: Path, *, checkpoint: Path | None = None,
                  modalities: Sequence[str] | None = None, seed: int = 0, log: Log = print) -> Path:
    """Build, export, check and write the bundle for ``preset`` at ``out``, one encoder at a time (each is
    released before its graph is checked under ONNX Runtime)."""
    started = time.perf_counter()
    source = f"checkpoint {checkpoint}" if checkpoint else f"seeded random weights (seed {seed}), no checkpoint given"
    log(f"imagebind {preset.name}: exporting from {source}")
    chosen = check_modalities(modalities)
    specs = component_specs(preset.config, chosen)
    components, scales = {}, {}
    with BundleWriter(out) as root:
        for index, spec in enumerate(specs, 1):
            def build(m=spec.modality):
                encoder = build_one(preset, m, read_checkpoint(checkpoint) if checkpoint else None, seed=seed,
                                    source=checkpoint)
                scales[m] = logit_scale(encoder)
                return encoder

            for component in export_component(f"[{index}/{len(specs)}] {spec.name}", spec, build, root, log):
                components[component.name] = component
        files = [f for c in components.values() for f in c.files]
        if "text" in chosen:
            (root / TOKENIZER_FILE).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(VOCAB_FILE, root / TOKENIZER_FILE)
            files.insert(0, TOKENIZER_FILE)
        manifest = Manifest(family="imagebind", variant=preset.name, components=components,
                            pipeline=pipeline_constants(preset, scales).to_dict(), files={f: {} for f in files},
                            note="; ".join([f"weights: {source}", *preset.notes]))
        write_manifest(root, manifest)
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s (peak RSS {peak_rss_gib():.2f} GiB)")
    return out
