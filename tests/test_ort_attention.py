"""ONNX Runtime's graph of a component: traced attention fused into ``MultiHeadAttention``, checked against torch."""
from __future__ import annotations

import collections
import shutil

import numpy as np
import onnx
import pytest
import torch

from export import ort_attention
from export.onnx_io import export_onnx, run_onnx
from export.ort_attention import write_ort_graph
from export.videocrafter1.unet_blocks import CrossAttention
from runtime.backends import open_session
from runtime.bundle import Bundle, BundleError


def _ops(path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def _export(module, tmp_path, x, context=None, causal=False):
    """The attention traced as export traces it: ``x`` (batch, tokens, channels) and, for cross-attention, ``context``."""
    class Call(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x, *context):
            return self.inner(x, *context, causal=causal)

    names = ["x"] + (["context"] if context is not None else [])
    axes = {"x": {0: "batch", 1: "tokens"}, "context": {0: "batch"}, "y": {0: "batch", 1: "tokens"}}
    args = (x,) if context is None else (x, context)
    return export_onnx(Call(), args, tmp_path / "attention.onnx", input_names=names, output_names=["y"],
                       dynamic_axes={k: v for k, v in axes.items() if k in names or k == "y"})


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_plain_attention_becomes_one_node_that_matches_torch(tmp_path, cross):
    torch.manual_seed(0)
    module = CrossAttention(query_dim=32, context_dim=24 if cross else None, heads=4, dim_head=8).eval()
    path = _export(module, tmp_path, torch.randn(3, 10, 32), torch.randn(3, 7, 24) if cross else None)
    fused, count = write_ort_graph(path)
    assert count == 1 and fused.name == "attention.ort.onnx"
    ops = _ops(fused)
    assert ops["MultiHeadAttention"] == 1 and "Softmax" not in ops
    with torch.no_grad():
        for batch, tokens in ((3, 10), (2, 17)):  # the symbolic axes still vary
            x, context = torch.randn(batch, tokens, 32), torch.randn(batch, 7, 24) if cross else None
            expected = module(x, context).numpy()
            feeds = {"x": x.numpy(), **({"context": context.numpy()} if cross else {})}
            np.testing.assert_allclose(run_onnx(fused, feeds)["y"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["relative_position", "causal"])
def test_attention_with_anything_between_is_left_alone(tmp_path, kind):
    torch.manual_seed(0)
    module = CrossAttention(query_dim=32, heads=4, dim_head=8, relative_position=kind == "relative_position",
                            temporal_length=16).eval()
    path = _export(module, tmp_path, torch.randn(2, 6, 32), causal=kind == "causal")
    assert write_ort_graph(path) is None
    assert not (tmp_path / "attention.ort.onnx").exists()


def test_a_graph_that_embeds_its_weights_past_the_limit_gets_none(tmp_path, monkeypatch):
    module = CrossAttention(query_dim=32, heads=4, dim_head=8).eval()
    path = _export(module, tmp_path, torch.randn(2, 6, 32))
    monkeypatch.setattr(ort_attention, "MAX_EMBEDDED_BYTES", path.stat().st_size - 1)
    assert write_ort_graph(path) is None  # its weights would be stored twice


def _unet(tiny_bundles) -> Bundle:
    return Bundle(next(p for p in tiny_bundles.values() if Bundle(p).manifest.family == "videocrafter1"))


def test_the_unet_of_a_bundle_runs_its_fused_graph_on_onnx_runtime(tiny_bundles):
    bundle = _unet(tiny_bundles)
    component = bundle.component("unet")
    assert component.ort_graph == "unet.ort.onnx" and component.ort_graph in bundle.manifest.files
    ops = _ops(bundle.root / component.ort_graph)
    assert ops["MultiHeadAttention"] > 0 and ops["Softmax"] < _ops(bundle.root / component.file)["Softmax"]
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in component.inputs:
        shape = [component.profile[spec.name]["opt"][i] for i in range(len(spec.shape))]
        feeds[spec.name] = (rng.integers(0, 900, shape) if spec.dtype == "int64"
                            else rng.standard_normal(shape)).astype(spec.dtype)
    with open_session(bundle, "unet", backend="onnxruntime") as fused, \
            open_session(bundle, "unet", backend="onnxruntime", graph=bundle.root / component.file) as standard:
        found, expected = fused.run(feeds)["eps"], standard.run(feeds)["eps"]
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5)


def test_a_tampered_onnx_runtime_graph_is_refused(tiny_bundles, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(_unet(tiny_bundles).root, copy)
    with open(copy / "unet.ort.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="unet.ort.onnx"):
        open_session(Bundle(copy), "unet", backend="onnxruntime")
