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
from export.ait.graphs import (DecoderStep, ImageEncoder, VQVAEEncoder, VQVAEIndexDecoder, VQVAESoftDecoder,
                               depth_tables, graph_spec, instance_tables)
from export.ait.presets import DepthConfig, InstanceConfig
from export.ait.swin import SwinV2TransformerRPE2FC
from export.ait.vqvae import VQVAE
from export.checkpoint import CheckpointError, load_into, meta_parameters, read_checkpoint, select_prefix
from export.graphs import GraphSpec
from export.phases import export_component, peak_rss_gib
from export.random_init import randomize_
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
    builders = {"backbone": lambda: SwinV2TransformerRPE2FC(**config.backbone),
                "transformer": lambda: ARTransformer(**config.transformer), "vqvae": lambda: VQVAE(**config.vqvae)}
    from_file = {"backbone": checkpoint, "transformer": checkpoint, "vqvae": vqvae_checkpoint or checkpoint}
    modules = {}
    for name, builder in builders.items():
        if from_file[name] is None:
            modules[name] = builder()
        else:  # weights come from a file: build on the meta device, the memory-mapped tensors become the weights
            with meta_parameters():
                modules[name] = builder()
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


def shape_ranges(config: DepthConfig | InstanceConfig) -> dict[str, dict[str, int]]:
    """min/opt/max of the symbolic axes: batch (depth: windows x flips; insseg: images, and objects for the
    mask decoder) and the decoder's past length."""
    if isinstance(config, InstanceConfig):
        batch = {"min": 1, "opt": 1, "max": max(8, config.num_query)}
    else:
        windows = config.shift_size * (2 if config.flip_test else 1)
        batch = {"min": 1, "opt": windows, "max": max(8, windows)}
    n = config.token_length
    return {"batch": batch,
            "past": {"min": 0, "opt": n // 2, "max": n - 1},
            "past_plus_one": {"min": 1, "opt": n // 2 + 1, "max": n}}


def _step_feeds(transformer: ARTransformer, cross_k: torch.Tensor, cross_v: torch.Tensor,
                generator: torch.Generator) -> dict[str, np.ndarray]:
    past = 3
    cache = (transformer.num_layers, 2, transformer.nhead, past, transformer.head_dim)
    return {"token_embedding": torch.randn(2, 1, transformer.d_model, generator=generator).numpy(),
            "step_index": np.array([past], np.int64),
            "self_k": torch.randn(cache, generator=generator).numpy(),
            "self_v": torch.randn(cache, generator=generator).numpy(),
            "cross_k": cross_k.numpy(), "cross_v": cross_v.numpy()}


def instance_graph_plan(config: InstanceConfig, modules: dict[str, torch.nn.Module]) -> list[tuple[GraphSpec, dict]]:
    """(spec, example feeds) for every graph of an insseg bundle."""
    transformer, vqvae = modules["transformer"], modules["vqvae"]
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, config.image_size, config.image_size, generator=generator)
    encoder = ImageEncoder(modules["backbone"], transformer)
    with torch.no_grad():
        cross_k, cross_v = encoder(image)
    return [
        (graph_spec("image_encoder", encoder), {"image": image.numpy()}),
        (graph_spec("decoder_step", DecoderStep(transformer, INSSEG_TASK)),
         _step_feeds(transformer, cross_k, cross_v, generator)),
        (graph_spec("mask_soft_decoder", VQVAESoftDecoder(vqvae)),
         {"code_logits": torch.randn(3, config.mask_tokens, config.vqvae["num_embeddings"],
                                     generator=generator).numpy()}),
    ]


def graph_plan(config: DepthConfig | InstanceConfig, modules: dict[str, torch.nn.Module]
               ) -> list[tuple[GraphSpec, dict]]:
    """(spec, example feeds) for every graph of the bundle."""
    if isinstance(config, InstanceConfig):
        return instance_graph_plan(config, modules)
    backbone, transformer, vqvae = modules["backbone"], modules["transformer"], modules["vqvae"]
    generator = torch.Generator().manual_seed(0)
    size, n, k = config.image_size, config.token_length, config.vqvae["num_embeddings"]
    image = torch.rand(2, 3, size, size, generator=generator)
    encoder = ImageEncoder(backbone, transformer)
    with torch.no_grad():
        cross_k, cross_v = encoder(image)
    step_feeds = _step_feeds(transformer, cross_k, cross_v, generator)
    return [
        (graph_spec("image_encoder", encoder), {"image": image.numpy()}),
        (graph_spec("decoder_step", DecoderStep(transformer)), step_feeds),
        (graph_spec("vqvae_soft_decoder", VQVAESoftDecoder(vqvae)),
         {"code_logits": torch.randn(2, n, k, generator=generator).numpy()}),
        (graph_spec("vqvae_index_decoder", VQVAEIndexDecoder(vqvae)),
         {"indices": torch.randint(0, k, (2, n), generator=generator).numpy()}),
        (graph_spec("vqvae_encoder", VQVAEEncoder(vqvae)),
         {"depth": (torch.rand(2, size, size, generator=generator) * config.max_depth).numpy()}),
    ]


def pipeline_constants(config: DepthConfig, transformer: ARTransformer) -> dict:
    t = transformer
    return {
        "task": "depth",
        "task_id": 2,
        "image_size": config.image_size,
        "test_size": list(config.test_size),
        "normalisation": {"scale": 1 / 255, "mean": None, "std": None,
                          "note": "RGB in [0, 1] (ToTensor), no mean/std: the official NYUv2 depth data path"},
        "resize": "bilinear to test_size (TTA) or image_size (no TTA); depth bilinear back to the input size",
        "shift_size": config.shift_size,
        "flip_test": config.flip_test,
        "min_depth": config.min_depth,
        "max_depth": config.max_depth,
        "token_length": config.token_length,
        "feature_side": config.feature_side,
        "top_p": t.top_p,
        "soft_transformer": t.soft_transformer,
        "soft_vae": t.soft_vae,
        "tau": config.vqvae["tau"],
        "vocabulary": {"num_vocal": int(t.voc_embed.shape[0]), "class_offset": t.class_offset,
                       "special_offset": t.special_offset, "noise_label": t.noise_label,
                       "mask_offset": t.mask_offset, "depth_slice": [t.depth_offset, t.enddepth_offset]},
        "decoder": {"layers": t.num_layers, "heads": t.nhead, "head_dim": t.head_dim, "d_model": t.d_model},
        "tables": dict(TABLES),
    }


def instance_pipeline_constants(config: InstanceConfig, transformer: ARTransformer) -> dict:
    t = transformer
    if not t.soft_vae:
        raise ValueError(f"{config.name}: soft_vae false decodes the sampled mask codes, but an insseg bundle "
                         f"exports only the soft mask decoder; set soft_vae true (the released setting)")
    return {
        "task": "insseg",
        "task_id": INSSEG_TASK,
        "image_size": config.image_size,
        "normalisation": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                          "note": "RGB 0-255 minus mean over std (img_norm_cfg), after the keep-ratio resize"},
        "resize": "keep ratio, long side to image_size (bilinear, size rounded half up), zero padding right/bottom",
        "norm_val": config.norm_val,
        "num_bins": t.class_offset - 1,
        "num_query": config.num_query,
        "object_length": config.object_length,
        "mask_tokens": config.mask_tokens,
        "mask_size": config.vqvae["mask_size"],
        "mask_threshold": 0.5,
        "top_p": t.top_p,
        "soft_transformer": t.soft_transformer,
        "soft_vae": t.soft_vae,
        "vocabulary": {"num_vocal": int(t.voc_embed.shape[0]), "box_slice": [0, t.class_offset],
                       "class_slice": [t.class_offset, t.special_offset], "noise_label": t.noise_label,
                       "mask_slice": [t.mask_offset, t.depth_offset]},
        "decoder": {"layers": t.num_layers, "heads": t.nhead, "head_dim": t.head_dim, "d_model": t.d_model},
        "tables": dict(INSTANCE_TABLES),
    }


def _task_tables(config: DepthConfig | InstanceConfig, transformer: ARTransformer
                 ) -> tuple[dict[str, str], dict[str, np.ndarray], dict]:
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
    ranges = shape_ranges(config)
    tables = {}

    def build():
        modules = build_modules(config, checkpoint, vqvae_checkpoint=vqvae_checkpoint, trust=trust, seed=seed)
        tables.update(zip(("files", "arrays", "constants"), _task_tables(config, modules["transformer"])))
        return modules

    def graphs(modules):
        return [(spec, feeds, ranges) for spec, feeds in graph_plan(config, modules)]

    with BundleWriter(out) as root:
        components = {c.name: c for c in export_component(f"[1/1] {config.name}", build, graphs, root, log)}
        table_files = tables["files"]
        for key, rel in table_files.items():
            np.save(root / rel, np.ascontiguousarray(tables["arrays"][key], dtype=np.float32))
        files = list(table_files.values()) + [f for c in components.values() for f in (c.file, *c.extra_files)]
        manifest = Manifest(family="ait", variant=config.name, components=components,
                            pipeline=tables["constants"], files={f: {} for f in files},
                            note="; ".join([f"weights: {source}", *config.notes]))
        write_manifest(root, manifest)
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s (peak RSS {peak_rss_gib():.2f} GiB)")
    return out
