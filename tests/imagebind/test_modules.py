"""ImageBind encoders against the official golden cases, the released key manifests, and ONNX Runtime."""
from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import onnx
import pytest
import torch

from export.checkpoint import load_into, read_checkpoint
from export.imagebind.graphs import encoder_graph
from export.imagebind.model import IMAGEBIND_HUGE, MODALITIES, ModalityEncoder, build_encoder
from export.onnx_io import export_onnx, run_onnx
from runtime.arrays import agreement
from tests.paths import REFERENCE as REFERENCE_ROOT

REFERENCE = REFERENCE_ROOT / "imagebind"
GOLDEN = REFERENCE / "golden"
KEYS = REFERENCE / "keys"
MODEL_CASES = ["vision", "vision_video", "text", "audio", "depth", "thermal", "imu"]
ONNX_ATOL, ONNX_MIN_COSINE = 1e-4, 0.9999
START_ID, END_ID = 49406, 49407

pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"ImageBind reference data not found at {REFERENCE}")


@lru_cache(maxsize=None)
def load_case(name: str) -> tuple[ModalityEncoder, dict, dict[str, np.ndarray]]:
    """(encoder with the golden weights, case.json, io.npz arrays)."""
    case = json.loads((GOLDEN / name / "case.json").read_text())
    (modality,) = case["inputs"]
    encoder = build_encoder(modality, case["config"]).eval()
    state = read_checkpoint(GOLDEN / name / "weights.safetensors")
    prefix = case["checkpoint_prefix"]
    load_into(encoder, {prefix + k: v for k, v in state.items()}, what=name)
    return encoder, case, dict(np.load(GOLDEN / name / "io.npz"))


def assert_close(found: torch.Tensor, expected: np.ndarray, case: dict, label: str) -> float:
    found = found.detach().numpy()
    assert found.shape == expected.shape, f"{label}: expected shape {expected.shape}, found {found.shape}"
    np.testing.assert_allclose(found, expected, atol=case["atol"], rtol=case["rtol"], err_msg=label)
    return float(np.abs(found - expected).max())


def assert_agrees(reference: torch.Tensor, found: np.ndarray, label: str) -> None:
    result = agreement(reference.detach().numpy(), found)
    assert result.max_abs <= ONNX_ATOL, f"{label}: ONNX vs torch max abs {result.max_abs:.3g} > {ONNX_ATOL}"
    assert result.cosine >= ONNX_MIN_COSINE, f"{label}: ONNX vs torch cosine {result.cosine:.6f} < {ONNX_MIN_COSINE}"


def random_ids(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Tokenizer-shaped ids: start token, random content, end token at a random position, zero padding."""
    ids = torch.zeros(batch, 77, dtype=torch.int64)
    for row in range(batch):
        end = int(torch.randint(1, 77, (1,), generator=generator))
        ids[row, 0] = START_ID
        ids[row, 1:end] = torch.randint(1, START_ID, (end - 1,), generator=generator)
        ids[row, end] = END_ID
    return ids


def random_like(x: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A new input with ``batch`` items of ``x``'s per-item shape and dtype."""
    if x.dtype == torch.int64:
        return random_ids(batch, generator)
    return torch.randn((batch, *x.shape[1:]), generator=generator)


# ---- golden cases ------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_CASES)
def test_encoder_matches_golden(name):
    encoder, case, io = load_case(name)
    x = torch.from_numpy(io[case["inputs"][0]])
    with torch.no_grad():
        assert_close(encoder(x), io["embedding"], case, f"{name} embedding")
        assert_close(encoder.head_output(x), io["head_output"], case, f"{name} head_output")


def test_text_scale_is_clamped_at_100():
    encoder, _, io = load_case("text")
    scaling = encoder.modality_postprocessors["text"][1]
    saved = scaling.log_logit_scale.detach().clone()
    try:
        with torch.no_grad():
            scaling.log_logit_scale.fill_(math.log(1000.0))
            norms = encoder(torch.from_numpy(io["text"])).norm(dim=-1)
    finally:
        with torch.no_grad():
            scaling.log_logit_scale.copy_(saved)
    np.testing.assert_allclose(norms.numpy(), 100.0, rtol=1e-5)


def test_clip_embedding_is_mean_of_clip_embeddings():
    encoder, _, io = load_case("audio")
    clips = torch.from_numpy(io["audio"])
    with torch.no_grad():
        per_clip = encoder.encode(clips.flatten(0, 1)).unflatten(0, clips.shape[:2])
        torch.testing.assert_close(encoder(clips), per_clip.mean(dim=1))


# ---- released key manifests --------------------------------------------------------------

@pytest.mark.parametrize("modality", MODALITIES)
def test_released_keys_and_shapes(modality):
    manifest = json.loads((KEYS / f"{modality}.json").read_text())
    with torch.device("meta"):
        encoder = build_encoder(modality, IMAGEBIND_HUGE)
    found = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in encoder.state_dict().items()}
    expected = {k: [list(shape), dtype] for k, (shape, dtype) in manifest["keys"].items()}
    assert sorted(set(expected) - set(found)) == [], "keys missing from the module"
    assert sorted(set(found) - set(expected)) == [], "keys the released checkpoint lacks"
    assert found == expected
    assert sum(p.numel() for p in encoder.parameters()) == manifest["params"]


def test_unknown_modality_and_argument_are_refused():
    with pytest.raises(ValueError, match="unknown modality"):
        build_encoder("smell", {})
    with pytest.raises(ValueError, match="unknown ImageBindModel arguments"):
        build_encoder("vision", {"vision_dim": 8})


# ---- ONNX --------------------------------------------------------------------------------

def per_item_input(name: str) -> torch.Tensor:
    """The golden input with any clip axis folded into the batch: what the per-item graph takes."""
    _, case, io = load_case(name)
    x = torch.from_numpy(io[case["inputs"][0]])
    return x.flatten(0, 1) if x.dim() >= 5 else x


@pytest.mark.parametrize("name", MODEL_CASES)
def test_per_item_graph_matches_torch(name, tmp_path):
    """vision_video exports the 2-frame clip form (N, 3, 2, 224, 224); audio one mel clip per item."""
    encoder, case, _ = load_case(name)
    (modality,) = case["inputs"]
    traced = per_item_input(name)
    path = encoder_graph(modality).spec(encoder).export({modality: traced.numpy()}, tmp_path / f"{name}.onnx")
    other = random_like(traced, traced.shape[0] + 1, torch.Generator().manual_seed(1))
    for x in (traced, other):
        found = run_onnx(path, {modality: x.numpy()})["embedding"]
        with torch.no_grad():
            assert_agrees(encoder.encode(x), found, f"{name} batch {x.shape[0]}")


def test_text_graph_pools_with_argmax_and_gather(tmp_path):
    encoder, _, _ = load_case("text")
    path = encoder_graph("text").spec(encoder).export({"text": per_item_input("text").numpy()}, tmp_path / "text.onnx")
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"ArgMax", "Gather"} <= ops
    unwanted = ops & {"GatherND", "ScatterND", "Loop", "If"}
    assert not unwanted, f"text graph should pool with ArgMax + Gather only, found {sorted(unwanted)}"


@pytest.mark.parametrize("name", ["vision_video", "audio"])
def test_clip_averaging_graph_matches_golden_and_torch(name, tmp_path):
    """The official forward on (B, S, ...) exported with dynamic batch and clip axes."""
    encoder, case, io = load_case(name)
    (modality,) = case["inputs"]
    traced = torch.from_numpy(io[modality])
    path = export_onnx(encoder, [traced], tmp_path / f"{name}.onnx", input_names=[modality],
                       output_names=["embedding"],
                       dynamic_axes={modality: {0: "batch", 1: "clips"}, "embedding": {0: "batch"}})
    found = run_onnx(path, {modality: traced.numpy()})["embedding"]
    assert_close(torch.from_numpy(found), io["embedding"], case, f"{name} ONNX embedding")
    batch, clips = traced.shape[0] + 1, traced.shape[1] + 1
    other = torch.randn((batch, clips, *traced.shape[2:]), generator=torch.Generator().manual_seed(2))
    found = run_onnx(path, {modality: other.numpy()})["embedding"]
    with torch.no_grad():
        assert_agrees(encoder(other), found, f"{name} B={batch} S={clips}")
