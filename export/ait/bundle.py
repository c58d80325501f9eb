"""Write an AiT bundle.

Depth: image encoder, cached decoder step (task 2), VQVAE soft/index decoders, VQVAE encoder.
Instance segmentation: image encoder, cached decoder step (task 1), instance-mask VQVAE soft decoder.

Weights come from a released task-solver checkpoint (prefixes ``backbone.``, ``transformer.``,
``depth_head.vqvae.`` / ``insseg_head.vqvae.``; the VQVAE may also come from the standalone
``vqvae_depth.pt`` / ``vqvae_insseg.pt``, whose tensors sit under ``weights``) or, without one,
from seeded random values. Each graph is
checked against its torch module under ONNX Runtime as it is written.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from export.ait.ar_transformer import INSSEG_TASK, ARTransformer
from export.ait.graphs import PARTS, component_specs, depth_tables, instance_tables
from export.ait.presets import DepthConfig, InstanceConfig
from export.checkpoint import CheckpointError, load_into, meta_parameters, read_checkpoint, select_prefix
from export.phases import export_component, peak_rss_gib
from export.random_init import randomize_
from runtime.ait.constants import (DecoderShape, DepthConstants, DepthNormalisation, DepthTables, DepthVocabulary,
                                   InstanceConstants, InstanceTables, InstanceVocabulary, PixelNormalisation)
from runtime.bundle import BundleWriter, Manifest, write_manifest

PREFIXES = {"backbone": "backbone.", "transformer": "transformer.", "vqvae": "depth_head.vqvae."}
INSTANCE_VQVAE_PREFIX = "insseg_head.vqvae."
TABLES = {"start_embedding": "start_embedding.npy", "depth_code_embeddings": "depth_code_embeddings.npy"}
INSTANCE_TABLES = {"start_embedding": "start_embedding.npy", "vocabulary_embeddings": "vocabulary_embeddings.npy"}
Log = Callable[[str], None]


def _vqvae_prefix(config: DepthConfig | InstanceConfig) -> str:
    return INSTANCE_VQVAE_PREFIX if isinstance(config, InstanceConfig) else PREFIXES["vqvae"]


def read_vqvae_checkpoint(path: Path, *, trust: bool, prefix: str = PREFIXES["vqvae"]) -> dict[str, torch.Tensor]:
    """A standalone VQVAE file (tensors under ``weights``, maybe ``module.``-prefixed) or a plain state."""
    state = read_checkpoint(path, trust=trust)
    if not state:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust)
        except Exception as exc:  # read_checkpoint already accepted the file; report what differs
            raise CheckpointError(f"{path}: could not read its 'weights' entry: {exc}") from exc
        weights = obj.get("weights") if isinstance(obj, dict) else None
        if not isinstance(weights, dict):
            raise CheckpointError(f"{path}: expected a VQVAE state or a dict with 'weights', found "
                                  f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
        state = {k: v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith(prefix) for k in state):
        return select_prefix(state, prefix)
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_modules(config: DepthConfig | InstanceConfig, checkpoint: Path | None, *,
                  vqvae_checkpoint: Path | None = None, trust: bool = False,
                  seed: int = 0) -> dict[str, torch.nn.Module]:
    """Swin backbone, ARTransformer and the task's VQVAE, filled from checkpoints or seeded random weights."""
    prefixes = {**PREFIXES, "vqvae": _vqvae_prefix(config)}
    (spec,) = component_specs(config)
    from_file = {"backbone": checkpoint, "transformer": checkpoint, "vqvae": vqvae_checkpoint or checkpoint}
    modules = {}
    for name in PARTS:
        if from_file[name] is None:
            modules[name] = spec.build_part(name)
        else:  # weights come from a file: build on the meta device, the memory-mapped tensors become the weights
            with meta_parameters():
                modules[name] = spec.build_part(name)
    state = read_checkpoint(checkpoint, trust=trust) if checkpoint is not None else None
    for offset, (name, module) in enumerate(modules.items()):
        if name == "vqvae" and vqvae_checkpoint is not None:
            load_into(module, read_vqvae_checkpoint(vqvae_checkpoint, trust=trust, prefix=prefixes["vqvae"]),
                      what=f"{config.name} vqvae")
        elif state is not None:
            load_into(module, select_prefix(state, prefixes[name]), what=f"{config.name} {name}")
        else:
            randomize_(module, seed + offset)
    if state is None and vqvae_checkpoint is None:  # the EMA codebook is a buffer: give it random codes too
        codebook = modules["vqvae"]._vq_vae._embedding
        codebook.copy_(torch.randn(codebook.shape, generator=torch.Generator().manual_seed(seed + len(modules))))
    return {name: module.eval() for name, module in modules.items()}


def pipeline_constants(config: DepthConfig, transformer: ARTransformer) -> DepthConstants:
    """A depth bundle's pipeline constants: sizes, the official TTA, the AR loop's settings and vocabulary."""
    t = transformer
    return DepthConstants(
        task="depth",
        task_id=2,
        image_size=config.image_size,
        test_size=tuple(config.test_size),
        normalisation=DepthNormalisation(
            scale=1 / 255, mean=None, std=None,
            note="RGB in [0, 1] (ToTensor), no mean/std: the official NYUv2 depth data path"),
        resize="bilinear to test_size (TTA) or image_size (no TTA); depth bilinear back to the input size",
        shift_size=config.shift_size,
        flip_test=config.flip_test,
        min_depth=config.min_depth,
        max_depth=config.max_depth,
        token_length=config.token_length,
        feature_side=config.feature_side,
        top_p=t.top_p,
        soft_transformer=t.soft_transformer,
        soft_vae=t.soft_vae,
        tau=config.vqvae["tau"],
        vocabulary=DepthVocabulary(num_vocal=int(t.voc_embed.shape[0]), class_offset=t.class_offset,
                                   special_offset=t.special_offset, noise_label=t.noise_label,
                                   mask_offset=t.mask_offset, depth_slice=(t.depth_offset, t.enddepth_offset)),
        decoder=DecoderShape(layers=t.num_layers, heads=t.nhead, head_dim=t.head_dim, d_model=t.d_model),
        tables=DepthTables(**TABLES),
    )


def instance_pipeline_constants(config: InstanceConfig, transformer: ARTransformer) -> InstanceConstants:
    """An insseg bundle's pipeline constants: size and normalisation, the AR loop's settings and vocabulary
    slices, box and mask decoding."""
    t = transformer
    if not t.soft_vae:
        raise ValueError(f"{config.name}: soft_vae false decodes the sampled mask codes, but an insseg bundle "
                         f"exports only the soft mask decoder; set soft_vae true (the released setting)")
    return InstanceConstants(
        task="insseg",
        task_id=INSSEG_TASK,
        image_size=config.image_size,
        normalisation=PixelNormalisation(
            mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375),
            note="RGB 0-255 minus mean over std (img_norm_cfg), after the keep-ratio resize"),
        resize="keep ratio, long side to image_size (bilinear, size rounded half up), zero padding right/bottom",
        norm_val=config.norm_val,
        num_bins=t.class_offset - 1,
        num_query=config.num_query,
        object_length=config.object_length,
        mask_tokens=config.mask_tokens,
        mask_size=config.vqvae["mask_size"],
        mask_threshold=0.5,
        top_p=t.top_p,
        soft_transformer=t.soft_transformer,
        soft_vae=t.soft_vae,
        vocabulary=InstanceVocabulary(num_vocal=int(t.voc_embed.shape[0]), box_slice=(0, t.class_offset),
                                      class_slice=(t.class_offset, t.special_offset), noise_label=t.noise_label,
                                      mask_slice=(t.mask_offset, t.depth_offset)),
        decoder=DecoderShape(layers=t.num_layers, heads=t.nhead, head_dim=t.head_dim, d_model=t.d_model),
        tables=InstanceTables(**INSTANCE_TABLES),
    )


def _task_tables(config: DepthConfig | InstanceConfig, transformer: ARTransformer
                 ) -> tuple[dict[str, str], dict[str, np.ndarray], DepthConstants | InstanceConstants]:
    """(table files, table arrays, pipeline constants) of the config's task."""
    if isinstance(config, InstanceConfig):
        return INSTANCE_TABLES, instance_tables(transformer), instance_pipeline_constants(config, transformer)
    return TABLES, depth_tables(transformer), pipeline_constants(config, transformer)


def export_bundle(config: DepthConfig | InstanceConfig, out: Path, *, checkpoint: Path | None = None,
                  vqvae_checkpoint: Path | None = None, trust: bool = False, seed: int = 0, log: Log = print) -> Path:
    """Build, export, check and write the AiT depth or insseg bundle for ``config`` at ``out``."""
    started = time.perf_counter()
    source = f"checkpoint {checkpoint}" if checkpoint else f"seeded random weights (seed {seed}), no checkpoint given"
    if vqvae_checkpoint:
        source += f"; VQVAE from {vqvae_checkpoint}"
    log(f"ait {config.name}: building modules from {source}")
    (spec,) = component_specs(config)
    tables = {}

    def build():
        modules = build_modules(config, checkpoint, vqvae_checkpoint=vqvae_checkpoint, trust=trust, seed=seed)
        tables.update(zip(("files", "arrays", "constants"), _task_tables(config, modules["transformer"])))
        return modules

    with BundleWriter(out) as root:
        components = {c.name: c for c in export_component(f"[1/1] {spec.name}", spec, build, root, log)}
        table_files = tables["files"]
        for key, rel in table_files.items():
            np.save(root / rel, np.ascontiguousarray(tables["arrays"][key], dtype=np.float32))
        files = list(table_files.values()) + [f for c in components.values() for f in c.files]
        manifest = Manifest(family="ait", variant=config.name, components=components,
                            pipeline=tables["constants"].to_dict(), files={f: {} for f in files},
                            note="; ".join([f"weights: {source}", *config.notes]))
        write_manifest(root, manifest)
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s (peak RSS {peak_rss_gib():.2f} GiB)")
    return out
