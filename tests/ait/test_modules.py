"""AiT modules against the official golden cases, the released key manifests, and ONNX Runtime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.ait.ar_transformer import ARTransformer
from export.ait.graphs import (IMAGE_ENCODER, VQVAE_ENCODER, VQVAE_INDEX_DECODER,
                               VQVAE_SOFT_DECODER, decoder_step_graph, depth_tables)
from export.ait.swin import SwinV2TransformerRPE2FC
from export.ait.vqvae import VQVAE
from export.checkpoint import load_into, read_checkpoint
from export.onnx_io import run_onnx
from tests.paths import REFERENCE as REFERENCE_ROOT

REFERENCE = REFERENCE_ROOT / "ait"
GOLDEN = REFERENCE / "golden"
KEYS = REFERENCE / "keys"
CLASSES = {"ait.vqvae": VQVAE, "ait.swin": SwinV2TransformerRPE2FC, "ait.ar_depth": ARTransformer}

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"AiT reference data not found at {REFERENCE}")


def load_case(name: str):
    """(module with golden weights, case.json, io.npz arrays)."""
    case = json.loads((GOLDEN / name / "case.json").read_text())
    module = CLASSES[case["component"]](**case["config"]).eval()
    load_into(module, read_checkpoint(GOLDEN / name / "weights.safetensors"), what=name)
    io = dict(np.load(GOLDEN / name / "io.npz"))
    return module, case, io


def assert_close(found, expected, case, label: str) -> float:
    found = np.asarray(found)
    assert found.shape == expected.shape, f"{label}: expected shape {expected.shape}, found {found.shape}"
    np.testing.assert_allclose(found, expected, atol=case["atol"], rtol=case["rtol"], err_msg=label)
    return float(np.abs(found - expected).max())


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Small random weights for parameters that no golden case provides."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


# ---- golden cases ------------------------------------------------------------------------

def test_vqvae_matches_golden():
    vqvae, case, io = load_case("vqvae_depth")
    with torch.no_grad():
        indices = vqvae.encode_indices(torch.from_numpy(io["depth"]))
        decoded = vqvae.decode_indices(torch.from_numpy(io["indices"]))
        soft = vqvae.decode_soft(torch.from_numpy(io["logits"]))
    assert indices.dtype == torch.int64
    np.testing.assert_array_equal(indices.numpy(), io["indices"])
    assert_close(decoded, io["decoded"], case, "decoded")
    assert_close(soft, io["decoded_soft"], case, "decoded_soft")


def test_swin_matches_golden():
    swin, case, io = load_case("swin_backbone")
    with torch.no_grad():
        features = swin(torch.from_numpy(io["image"]))[-1]
    assert_close(features, io["features"], case, "features")


@pytest.mark.parametrize("name", ["ar_depth_soft", "ar_depth_hard"])
def test_ar_depth_matches_golden(name):
    model, case, io = load_case(name)
    logits, tokens = model.forward_depth(torch.from_numpy(io["src"]), int(io["pred_len"]))
    np.testing.assert_array_equal(tokens.numpy(), io["pred_tokens"])
    assert_close(logits, io["pred_logits"], case, "pred_logits")


def test_sine_table_matches_checkpoint_buffer():
    case = json.loads((GOLDEN / "ar_depth_soft" / "case.json").read_text())
    fresh = ARTransformer(**case["config"])
    stored = read_checkpoint(GOLDEN / "ar_depth_soft" / "weights.safetensors")["enc_embed"]
    torch.testing.assert_close(fresh.enc_embed, stored, atol=1e-6, rtol=0)


# ---- released configurations on the meta device ------------------------------------------

@pytest.mark.parametrize("manifest, cls", [
    ("vqvae_depth.json", VQVAE),
    ("swinv2b_480_backbone.json", SwinV2TransformerRPE2FC),
    ("ar_transformer_depthonly.json", ARTransformer),
])
def test_released_keys_and_shapes(manifest, cls):
    spec = json.loads((KEYS / manifest).read_text())
    with torch.device("meta"):
        module = cls(**spec["config"])
    found = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()}
    expected = {k: [list(s), d] for k, (s, d) in spec["keys"].items()}
    assert sorted(set(expected) - set(found)) == [], "keys missing from the module"
    assert sorted(set(found) - set(expected)) == [], "module keys absent from the release"
    assert {k: v for k, v in found.items() if v != expected[k]} == {}, "shape/dtype mismatch"
    assert sum(p.numel() for p in module.parameters()) == spec["params"]


# ---- KV cache ----------------------------------------------------------------------------

def test_cached_step_equals_uncached_prefix():
    model, _, io = load_case("ar_depth_soft")
    gen = torch.Generator().manual_seed(1)
    steps = 7
    with torch.no_grad():
        cross_k, cross_v = model.cross_kv(model.encode(torch.from_numpy(io["src"])))
        embeds = torch.randn(cross_k.shape[1], steps, model.d_model, generator=gen)
        full = model.decode_full(embeds, cross_k, cross_v)
        self_k, self_v = model.empty_cache(embeds.shape[0])
        for step in range(steps):
            logits, self_k, self_v = model.decode_step(embeds[:, step:step + 1], torch.tensor([step]),
                                                       self_k, self_v, cross_k, cross_v)
            torch.testing.assert_close(logits, full[:, step], atol=1e-5, rtol=0)
    assert self_k.shape == (model.num_layers, embeds.shape[0], model.nhead, steps, model.head_dim)


# ---- ONNX graphs under ONNX Runtime -------------------------------------------------------

def export(spec, args, path):
    """Trace the bundle graph ``spec`` on ``args`` (tensors, in its input order) into ``path``."""
    return spec.export({name: arg.numpy() for name, arg in zip(spec.inputs, args)}, path)


def test_onnx_image_encoder(tmp_path):
    swin, case, io = load_case("swin_backbone")
    channels = swin.num_features[-1]
    transformer = randomize(ARTransformer(in_chans=channels, d_model=32, nhead=4, num_encoder_layers=1,
                                          num_decoder_layers=2, dim_feedforward=64, num_vocal=40,
                                          num_bins=10, num_classes=3, num_embeddings=8,
                                          num_embeddings_depth=16, dec_length=40, n_rows=4, n_cols=4)).eval()
    graph = IMAGE_ENCODER.spec({"backbone": swin, "transformer": transformer})
    image = torch.from_numpy(io["image"])
    path = export(graph, [image], tmp_path / "image_encoder.onnx")
    batch = torch.cat([image, image.flip(-1)])  # a batch size other than the traced one
    got = run_onnx(path, {"image": batch.numpy()})
    with torch.no_grad():
        want_k, want_v = graph.module(batch)
        features = swin(batch)[-1]
    assert_close(features[:1], io["features"], case, "features")
    np.testing.assert_allclose(got["cross_k"], want_k.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got["cross_v"], want_v.numpy(), atol=1e-4, rtol=1e-4)


def _step_feeds(model, past: int, batch: int, cross_k, cross_v, seed: int):
    gen = torch.Generator().manual_seed(seed)
    cache = (model.num_layers, batch, model.nhead, past, model.head_dim)
    return [torch.randn(batch, 1, model.d_model, generator=gen), torch.tensor([past]),
            torch.randn(cache, generator=gen), torch.randn(cache, generator=gen), cross_k, cross_v]


def test_onnx_decoder_step_dynamic_past(tmp_path):
    model, _, io = load_case("ar_depth_soft")
    step = decoder_step_graph().spec({"transformer": model})
    with torch.no_grad():
        cross_k, cross_v = model.cross_kv(model.encode(torch.from_numpy(io["src"])))
    path = export(step, _step_feeds(model, 3, 2, cross_k, cross_v, 0), tmp_path / "step.onnx")
    for past in (0, 5, 11):  # none equal to the traced past length
        feeds = _step_feeds(model, past, 2, cross_k, cross_v, past + 1)
        got = run_onnx(path, {n: t.numpy() for n, t in zip(step.inputs, feeds)})
        with torch.no_grad():
            want = step.module(*feeds)
        for name, ref in zip(step.outputs, want):
            np.testing.assert_allclose(got[name], ref.numpy(), atol=1e-5, rtol=1e-5, err_msg=f"{name} past={past}")


@pytest.mark.parametrize("name", ["ar_depth_soft", "ar_depth_hard"])
def test_onnx_decoder_loop_reproduces_golden(tmp_path, name):
    """The runtime's loop in numpy, driving the step graph, gives the official tokens and logits."""
    model, case, io = load_case(name)
    with torch.no_grad():
        cross_k, cross_v = (t.numpy() for t in model.cross_kv(model.encode(torch.from_numpy(io["src"]))))
    args = _step_feeds(model, 1, 2, torch.from_numpy(cross_k), torch.from_numpy(cross_v), 0)
    path = export(decoder_step_graph().spec({"transformer": model}), args, tmp_path / "step.onnx")
    tables = depth_tables(model)
    lo, hi = tables["depth_slice"]
    batch = cross_k.shape[1]
    cache = np.zeros((model.num_layers, batch, model.nhead, 0, model.head_dim), np.float32)
    self_k, self_v = cache, cache
    x = np.broadcast_to(tables["start_embedding"], (batch, 1, model.d_model)).astype(np.float32)
    logits_all, tokens_all = [], []
    for step in range(int(io["pred_len"])):
        out = run_onnx(path, {"token_embedding": x, "step_index": np.array([step], np.int64), "self_k": self_k,
                              "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v})
        logits, self_k, self_v = out["logits"][:, lo:hi], out["new_self_k"], out["new_self_v"]
        tokens = logits.argmax(-1)
        if model.soft_transformer:
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            x = (probs / probs.sum(-1, keepdims=True) @ tables["depth_code_embeddings"])[:, None]
        else:
            x = tables["depth_code_embeddings"][tokens][:, None]
        logits_all.append(logits)
        tokens_all.append(tokens)
    np.testing.assert_array_equal(np.stack(tokens_all, 1), io["pred_tokens"])
    assert_close(np.stack(logits_all, 1), io["pred_logits"], case, "pred_logits (onnx loop)")


def test_onnx_vqvae_decoders(tmp_path):
    vqvae, case, io = load_case("vqvae_depth")
    per_token = torch.from_numpy(io["logits"]).flatten(2).transpose(1, 2).contiguous()  # (B, N, K)
    indices = torch.from_numpy(io["indices"])
    cases = [(VQVAE_SOFT_DECODER, per_token, "decoded_soft"), (VQVAE_INDEX_DECODER, indices, "decoded")]
    for graph, arg, expected in cases:
        spec = graph.spec({"vqvae": vqvae})
        path = export(spec, [arg[:1]], tmp_path / f"{graph.name}.onnx")  # traced at batch 1
        got = run_onnx(path, {spec.inputs[0]: arg.numpy()})["depth"]
        assert_close(got, io[expected], case, f"{graph.name} (onnx)")


def test_onnx_vqvae_encoder(tmp_path):
    vqvae, _, io = load_case("vqvae_depth")
    depth = torch.from_numpy(io["depth"])
    path = export(VQVAE_ENCODER.spec({"vqvae": vqvae}), [depth[:1]], tmp_path / "vqvae_encoder.onnx")
    got = run_onnx(path, {"depth": io["depth"]})["indices"]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, io["indices"])
