"""verify-reference handlers for the AiT golden cases (``ait.vqvae``, ``ait.swin``, ``ait.ar_depth``,
``ait.insseg``).

``torch`` rows run our modules; ``onnx`` rows run the exported graphs under ONNX Runtime. For
``ait.ar_depth`` the onnx row is the runtime's own numpy AR loop driving the exported
memory-encoder and decoder-step graphs: tokens must match exactly, logits within tolerance.
For ``ait.insseg`` the onnx row is the runtime's ``InstanceHead`` (AR loop, boxes, mask decode and
paste) driving the exported memory-encoder, task-1 decoder-step and mask-decoder graphs.
"""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from export.ait.ar_transformer import DEPTH_TASK, INSSEG_TASK, ARTransformer
from export.ait.bundle import INSTANCE_VQVAE_PREFIX, PREFIXES, instance_pipeline_constants
from export.ait.graphs import (MASK_SOFT_DECODER, VQVAE_ENCODER, VQVAE_INDEX_DECODER, VQVAE_SOFT_DECODER,
                               decoder_step_graph, depth_tables, instance_tables)
from export.ait.insseg_head import MASK_THRESHOLD, segment_features
from export.ait.presets import InstanceConfig
from export.ait.swin import SwinV2TransformerRPE2FC
from export.ait.vqvae import VQVAE, model_args
from export.checkpoint import load_checkpoint, load_into, read_checkpoint, select_prefix
from export.graphs import GraphSpec
from export.golden import Case, Row, score, verify_graphs
from runtime.ait.depth import depth_ar_loop
from runtime.ait.instances import InstanceHead, paste_values
from runtime.backends.onnxrt import inference_session


class LastStage(nn.Module):
    """Swin -> the last stage's map (after its norm), the only one AiT uses."""

    def __init__(self, backbone: SwinV2TransformerRPE2FC):
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)[-1]


class MemoryEncoder(nn.Module):
    """Backbone features (B, C, h, w) -> AR encoder -> per-layer cross keys/values."""

    def __init__(self, transformer: ARTransformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transformer.cross_kv(self.transformer.encode(src))


def _export_session(spec: GraphSpec, example: Sequence[np.ndarray], folder: Path):
    session = inference_session(spec.export(dict(zip(spec.inputs, example)), folder / f"{spec.name}.onnx"))
    return lambda feeds: dict(zip(spec.outputs, session.run(list(spec.outputs), dict(feeds))))


def verify_vqvae(case: Case) -> list[Row]:
    vqvae = load_checkpoint(VQVAE(**case.config).eval(), case.weights, what=f"{case.component} ({case.name})")
    logits = case.io["logits"]
    per_token = np.ascontiguousarray(logits.reshape(*logits.shape[:2], -1).transpose(0, 2, 1))  # (B, N, K)
    plan = [  # (spec, input array, case output name)
        (VQVAE_ENCODER.spec({"vqvae": vqvae}), case.io["depth"], "indices"),
        (VQVAE_INDEX_DECODER.spec({"vqvae": vqvae}), case.io["indices"], "decoded"),
        (VQVAE_SOFT_DECODER.spec({"vqvae": vqvae}), per_token, "decoded_soft"),
    ]
    torch_out: dict[str, np.ndarray] = {}
    onnx_out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        for spec, array, expected in plan:
            feeds = {spec.inputs[0]: array}
            torch_out[expected] = spec.run_torch(feeds)[spec.outputs[0]]
            onnx_out[expected] = _export_session(spec, [array[:1]], Path(tmp))(feeds)[spec.outputs[0]]
    return [score(case, "torch", torch_out), score(case, "onnx", onnx_out)]


def verify_swin(case: Case) -> list[Row]:
    swin = SwinV2TransformerRPE2FC(**case.config)
    spec = GraphSpec("swin", LastStage(swin).eval(), ["image"], ["features"], {"image": {0: "batch"},
                                                                                "features": {0: "batch"}})
    return verify_graphs(case, swin, [spec])


def _loop_outputs(run_step, cross: Mapping[str, np.ndarray], tables: Mapping[str, np.ndarray], steps: int,
                  soft: bool) -> dict[str, np.ndarray]:
    logits, tokens = depth_ar_loop(run_step, cross["cross_k"], cross["cross_v"],
                                   start_embedding=tables["start_embedding"],
                                   code_embeddings=tables["depth_code_embeddings"],
                                   depth_slice=tuple(tables["depth_slice"]), steps=steps, soft=soft)
    return {"pred_logits": logits, "pred_tokens": tokens}


def _decoder_sessions(model: ARTransformer, src: np.ndarray, task_id: int, folder: Path):
    """The memory-encoder (features -> cross keys/values) and decoder-step graphs of ``task_id``, exported and
    opened under ONNX Runtime."""
    memory = GraphSpec("memory_encoder", MemoryEncoder(model).eval(), ["src"], ["cross_k", "cross_v"],
                       {"src": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}})
    step = decoder_step_graph(task_id).spec({"transformer": model})
    with torch.no_grad():
        cross_k, cross_v = (t.numpy() for t in memory.module(torch.from_numpy(src)))
    cache = np.zeros((model.num_layers, src.shape[0], model.nhead, 1, model.head_dim), np.float32)
    step_example = [np.zeros((src.shape[0], 1, model.d_model), np.float32), np.array([1], np.int64),
                    cache, cache, cross_k, cross_v]
    return _export_session(memory, [src], folder), _export_session(step, step_example, folder)


def verify_ar_depth(case: Case) -> list[Row]:
    model = load_checkpoint(ARTransformer(**case.config).eval(), case.weights, what=f"{case.component} ({case.name})")
    src, steps = case.io["src"], int(case.io["pred_len"])
    logits, tokens = model.forward_depth(torch.from_numpy(src), steps)
    rows = [score(case, "torch", {"pred_logits": logits.numpy(), "pred_tokens": tokens.numpy()})]
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        run_memory, run_step = _decoder_sessions(model, src, DEPTH_TASK, Path(tmp))
        found = _loop_outputs(run_step, run_memory({"src": src}), depth_tables(model), steps,
                              soft=model.soft_transformer)
    rows.append(score(case, "onnx", found))
    return rows


EXACT_OUTPUTS = ("tokens", "labels")


def _instance_config(case: Case, transformer: ARTransformer) -> InstanceConfig:
    """The case's ``InsSegHead`` settings as the export's config (what a bundle's constants come from)."""
    c = case.config
    if c["coord_norm"] != "abs":
        raise ValueError(f"coord_norm must be 'abs' (box bins over norm_val, the released setting), "
                         f"found {c['coord_norm']!r}")
    if c["num_bins"] != transformer.class_offset - 1:
        raise ValueError(f"the head's num_bins ({c['num_bins']}) must equal the transformer's "
                         f"({transformer.class_offset - 1}): boxes and vocabulary slices share them")
    return InstanceConfig(name=case.name, backbone={}, transformer=c["transformer"], vqvae=model_args(c["vqvae"]),
                          image_size=c["img_meta"]["batch_input_shape"][0], norm_val=c["norm_val"],
                          num_query=c["num_query"])


def _instance_row(case: Case, path: str, found: Mapping[str, np.ndarray], mask_values: np.ndarray) -> Row:
    """``score`` of every output but the masks, plus the masks: equal, except pixels whose value (before the
    ``>= 0.5``) lies within atol of the threshold, a tie that rounding may flip either way. The detail gives
    the figures: exact tokens/labels, max abs error per output, differing mask pixels."""
    names = [n for n in case.outputs if n != "masks"]
    row = score(case, path, found, names)
    expected = case.io["masks"]
    if np.shape(found["masks"]) != expected.shape:
        return replace(row, passed=False, detail=f"masks: expected {expected.shape}, found {np.shape(found['masks'])}")
    comparable = [n for n in names if np.shape(found.get(n)) == case.io[n].shape]
    figures = [f"{n} {int((found[n] == case.io[n]).sum())}/{case.io[n].size} exact" if n in EXACT_OUTPUTS
               else f"{n} max abs {np.abs(found[n].astype(np.float64) - case.io[n]).max():.2e}" for n in comparable]
    differ = found["masks"] != expected
    ties = int((differ & (np.abs(mask_values - MASK_THRESHOLD) <= case.atol)).sum())
    figures.append(f"masks {int(differ.sum())} of {differ.size} pixels differ"
                   + (f" ({ties} within atol of the {MASK_THRESHOLD} threshold)" if differ.any() else ""))
    passed = row.passed and int(differ.sum()) == ties
    return replace(row, passed=passed, detail="; ".join(filter(None, [row.detail, ", ".join(figures)])))


def insseg_modules(case: Case) -> tuple[ARTransformer, VQVAE]:
    """The case's transformer and instance VQVAE, loaded under the released checkpoint's prefixes."""
    c = case.config
    state = read_checkpoint(case.weights)
    transformer, vqvae = ARTransformer(**c["transformer"]).eval(), VQVAE(**model_args(c["vqvae"])).eval()
    load_into(transformer, select_prefix(state, PREFIXES["transformer"]), what=f"{case.component} transformer")
    load_into(vqvae, select_prefix(state, INSTANCE_VQVAE_PREFIX), what=f"{case.component} instance VQVAE")
    return transformer, vqvae


def _image_geometry(case: Case) -> tuple[list[float], tuple[int, int]]:
    """The img_meta's box scale (w, h, w, h; ones without ``rescale``) and the original (H, W) masks are pasted at."""
    meta = case.config["img_meta"]
    return (list(meta["scale_factor"]) if case.config["rescale"] else [1.0] * 4), tuple(meta["ori_shape"][:2])


def insseg_torch(case: Case, transformer: ARTransformer, vqvae: VQVAE) -> dict[str, np.ndarray]:
    """The case's outputs (and ``mask_values``) from our torch modules and the torch mask paste."""
    config = _instance_config(case, transformer)
    scale, size = _image_geometry(case)
    return segment_features(transformer, vqvae, torch.from_numpy(case.io["feats"]), num_query=config.num_query,
                            norm_val=config.norm_val, num_bins=case.config["num_bins"], scale_factor=scale, size=size)


def insseg_runtime(case: Case, transformer: ARTransformer, vqvae: VQVAE) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The case's outputs from the exported graphs driven by the runtime's ``InstanceHead``, and the pasted
    mask values before the threshold."""
    config = _instance_config(case, transformer)
    scale, size = _image_geometry(case)
    feats = case.io["feats"]
    mask_decoder = MASK_SOFT_DECODER.spec({"vqvae": vqvae})
    code_example = np.zeros((1, config.mask_tokens, vqvae._vq_vae._embedding.shape[0]), np.float32)
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        run_memory, run_step = _decoder_sessions(transformer, feats, INSSEG_TASK, Path(tmp))
        run_masks = _export_session(mask_decoder, [code_example], Path(tmp))
        head = InstanceHead(instance_pipeline_constants(config, transformer), instance_tables(transformer), run_step,
                            lambda logits: run_masks({"code_logits": logits})["masks"])
        cross = run_memory({"src": feats})
        tokens, scores, mask_logits = (a[0] for a in head.tokens(cross["cross_k"], cross["cross_v"], seed=case.seed))
        result = head.instances(tokens, scores, mask_logits, scale=(scale[0], scale[1]), size=size)
        masks64 = head.decode_masks(mask_logits)
    values = np.stack([paste_values(m, b, *size) for m, b in zip(masks64, result.boxes)])
    found = {"tokens": tokens, "scores": scores, "mask_logits": mask_logits, "labels": result.classes,
             "boxes": np.concatenate([result.boxes, result.scores[:, None]], axis=1), "masks": result.masks}
    return found, values


def verify_insseg(case: Case) -> list[Row]:
    """The official insseg test path on backbone features: (torch) our transformer loop, instance VQVAE and
    mask paste in torch; (onnx) the exported memory-encoder, task-1 decoder-step and mask-decoder graphs
    driven by the runtime's ``InstanceHead``, the code ``segment_instances`` runs after the backbone."""
    transformer, vqvae = insseg_modules(case)
    expected = insseg_torch(case, transformer, vqvae)
    found, values = insseg_runtime(case, transformer, vqvae)
    return [_instance_row(case, "torch", expected, expected["mask_values"]), _instance_row(case, "onnx", found, values)]


HANDLERS = {
    "ait.vqvae": verify_vqvae,
    "ait.swin": verify_swin,
    "ait.ar_depth": verify_ar_depth,
    "ait.insseg": verify_insseg,
}
