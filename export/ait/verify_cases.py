"""verify-reference handlers for the AiT golden cases (``ait.vqvae``, ``ait.swin``, ``ait.ar_depth``).

``torch`` rows run our modules; ``onnx`` rows run the exported graphs under ONNX Runtime. For
``ait.ar_depth`` the onnx row is the runtime's own numpy AR loop driving the exported
memory-encoder and decoder-step graphs: tokens must match exactly, logits within tolerance.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from export.ait.ar_transformer import ARTransformer
from export.ait.graphs import (DecoderStep, VQVAEEncoder, VQVAEIndexDecoder, VQVAESoftDecoder, depth_tables,
                               graph_spec)
from export.ait.swin import SwinV2TransformerRPE2FC
from export.ait.vqvae import VQVAE
from export.checkpoint import load_checkpoint
from export.graphs import GraphSpec
from export.onnx_io import export_onnx
from runtime.backends.onnxrt import inference_session
from export.golden import Case, Row, score, verify_graphs
from runtime.ait.depth import depth_ar_loop


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
    path = folder / f"{spec.name}.onnx"
    export_onnx(spec.module, [torch.from_numpy(np.ascontiguousarray(a)) for a in example], path,
                input_names=list(spec.inputs), output_names=list(spec.outputs), dynamic_axes=spec.dynamic_axes)
    session = inference_session(path)
    return lambda feeds: dict(zip(spec.outputs, session.run(list(spec.outputs), dict(feeds))))


def verify_vqvae(case: Case) -> list[Row]:
    vqvae = load_checkpoint(VQVAE(**case.config).eval(), case.weights, what=f"{case.component} ({case.name})")
    logits = case.io["logits"]
    per_token = np.ascontiguousarray(logits.reshape(*logits.shape[:2], -1).transpose(0, 2, 1))  # (B, N, K)
    plan = [  # (spec, input array, case output name)
        (graph_spec("vqvae_encoder", VQVAEEncoder(vqvae)), case.io["depth"], "indices"),
        (graph_spec("vqvae_index_decoder", VQVAEIndexDecoder(vqvae)), case.io["indices"], "decoded"),
        (graph_spec("vqvae_soft_decoder", VQVAESoftDecoder(vqvae)), per_token, "decoded_soft"),
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


def verify_ar_depth(case: Case) -> list[Row]:
    model = load_checkpoint(ARTransformer(**case.config).eval(), case.weights, what=f"{case.component} ({case.name})")
    src, steps = case.io["src"], int(case.io["pred_len"])
    logits, tokens = model.forward_depth(torch.from_numpy(src), steps)
    rows = [score(case, "torch", {"pred_logits": logits.numpy(), "pred_tokens": tokens.numpy()})]
    memory = GraphSpec("memory_encoder", MemoryEncoder(model).eval(), ["src"], ["cross_k", "cross_v"],
                       {"src": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}})
    step = graph_spec("decoder_step", DecoderStep(model))
    with torch.no_grad():
        cross_k, cross_v = (t.numpy() for t in memory.module(torch.from_numpy(src)))
    cache = np.zeros((model.num_layers, src.shape[0], model.nhead, 1, model.head_dim), np.float32)
    step_example = [np.zeros((src.shape[0], 1, model.d_model), np.float32), np.array([1], np.int64),
                    cache, cache, cross_k, cross_v]
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        run_memory = _export_session(memory, [src], Path(tmp))
        run_step = _export_session(step, step_example, Path(tmp))
        found = _loop_outputs(run_step, run_memory({"src": src}), depth_tables(model), steps,
                              soft=model.soft_transformer)
    rows.append(score(case, "onnx", found))
    return rows


HANDLERS = {
    "ait.vqvae": verify_vqvae,
    "ait.swin": verify_swin,
    "ait.ar_depth": verify_ar_depth,
}
