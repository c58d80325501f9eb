"""AiT depth bundle + runtime: cached step graph, runtime loop vs torch, soft/hard, TTA, input handling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export.ait.bundle import build_modules, export_bundle
from export.ait.presets import tiny_depth
from runtime import BundleError, DepthPipeline, estimate_depth
from runtime.ait.depth import window_starts
from runtime.backends import open_session

RNG = np.random.default_rng(0)
IMAGE = (RNG.random((61, 83, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, torch modules with the same seeded weights, opened pipeline)."""
    config = tiny_depth()
    root = export_bundle(config, tmp_path_factory.mktemp("ait") / "ait-tiny-depth", seed=0, log=lambda _: None)
    return config, build_modules(config, None, seed=0), DepthPipeline(root)


def test_opened_with_defaults_the_decoder_step_runs_on_onnx_runtime_the_rest_on_openvino(tiny):
    """``backend="auto"`` (the default) follows the rule of docs/backends.md on a CPU with OpenVINO."""
    pytest.importorskip("openvino")
    pipeline = tiny[2]
    labels = {name: session.label for name, session in pipeline.sessions.items()}
    assert labels == {"image_encoder": "OpenVINO", "decoder_step": "ONNX Runtime", "vqvae_soft_decoder": "OpenVINO",
                      "vqvae_index_decoder": "OpenVINO"}


def test_manifest_ranges_and_tables(tiny):
    config, modules, pipeline = tiny
    step = pipeline.bundle.component("decoder_step")
    assert step.profile["self_k"]["min"][3] == 0 and step.profile["self_k"]["max"][3] == config.token_length - 1
    t = modules["transformer"]
    assert pipeline.constants.vocabulary.depth_slice == (t.depth_offset, t.enddepth_offset)
    np.testing.assert_array_equal(pipeline.code_embeddings, t.voc_embed[t.depth_offset:t.enddepth_offset].detach())
    assert set(pipeline.bundle.manifest.files) >= {"start_embedding.npy", "depth_code_embeddings.npy"}


def test_cached_step_graph_equals_uncached_decoder(tiny):
    _, modules, pipeline = tiny
    t = modules["transformer"]
    image = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    cross = pipeline.sessions["image_encoder"].run({"image": image.numpy()})
    embeds = torch.randn(2, 9, t.d_model, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = t.decode_full(embeds, torch.from_numpy(cross["cross_k"]), torch.from_numpy(cross["cross_v"])).numpy()
    self_k = self_v = np.zeros((t.num_layers, 2, t.nhead, 0, t.head_dim), np.float32)
    for step in range(embeds.shape[1]):
        out = pipeline.sessions["decoder_step"].run({"token_embedding": embeds[:, step:step + 1].numpy(),
                                                     "step_index": np.array([step]), "self_k": self_k,
                                                     "self_v": self_v, **cross})
        self_k, self_v = out["new_self_k"], out["new_self_v"]
        np.testing.assert_allclose(out["logits"], full[:, step], atol=1e-4, rtol=1e-4, err_msg=f"step {step}")
    assert self_k.shape[3] == embeds.shape[1]


@pytest.mark.parametrize("soft", [True, False])
def test_runtime_loop_matches_torch(tiny, soft):
    config, modules, pipeline = tiny
    pixels = pipeline.pixels(IMAGE, config.image_size, config.image_size)
    logits, tokens = pipeline.tokens(pixels, soft=soft)
    depth = pipeline.solve(pixels, soft=soft)
    with torch.no_grad():
        features = modules["backbone"](torch.from_numpy(pixels))[-1]
        want_logits, want_tokens = modules["transformer"].forward_depth(features, config.token_length, soft=soft)
        side = config.feature_side
        vqvae = modules["vqvae"]
        want_depth = (vqvae.decode_soft(want_logits.transpose(1, 2).reshape(1, -1, side, side)) if soft
                      else vqvae.decode_indices(want_tokens))
    np.testing.assert_array_equal(tokens, want_tokens.numpy())
    np.testing.assert_allclose(logits, want_logits.numpy(), atol=5e-4, rtol=1e-3)
    np.testing.assert_allclose(depth, want_depth.numpy(), atol=5e-4, rtol=1e-3)


def test_soft_and_hard_differ(tiny):
    _, _, pipeline = tiny
    soft = estimate_depth(IMAGE, bundle=pipeline, progress=False)
    hard = estimate_depth(IMAGE, bundle=pipeline, soft=False, progress=False)
    assert np.abs(soft - hard).max() > 1e-4


def test_tta_is_the_manual_window_flip_average(tiny):
    config, _, pipeline = tiny
    h, w = config.test_size
    pixels = pipeline.pixels(IMAGE, h, w)
    total, count = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    for x in window_starts(w, h, config.shift_size):
        window = np.ascontiguousarray(pixels[..., x:x + h])
        plain = pipeline.solve(window)[0]
        flipped = pipeline.solve(np.ascontiguousarray(window[..., ::-1]))[0][:, ::-1]
        total[:, x:x + h] += (plain + flipped) / 2
        count[:, x:x + h] += 1
    import cv2

    manual = cv2.resize(np.clip(total / count, 1e-3, None), (IMAGE.shape[1], IMAGE.shape[0]),
                        interpolation=cv2.INTER_LINEAR)
    with_tta = estimate_depth(IMAGE, bundle=pipeline, progress=False)
    without = estimate_depth(IMAGE, bundle=pipeline, tta=False, progress=False)
    np.testing.assert_allclose(with_tta, manual, atol=1e-5, rtol=1e-5)
    assert np.abs(with_tta - without).max() > 1e-4
    assert with_tta.min() >= 1e-3


def test_more_windows_than_the_profile_takes_run_in_batches(tiny):
    config, _, pipeline = tiny
    limit = pipeline.batch_limit("image_encoder", "decoder_step")
    size = config.image_size
    images = np.random.default_rng(3).random((limit + 2, 3, size, size), dtype=np.float32)
    batched = pipeline.solve(images)
    singles = np.concatenate([pipeline.solve(images[i:i + 1]) for i in range(len(images))])
    np.testing.assert_allclose(batched, singles, atol=1e-5, rtol=1e-5)


def test_estimate_depth_takes_backend_and_memory(tiny):
    pipeline = tiny[2]
    expected = estimate_depth(IMAGE, bundle=pipeline, progress=False)
    found = estimate_depth(IMAGE, bundle=pipeline.bundle.root, progress=False, backend="onnxruntime", memory="low")
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 31), (50, 70, 4)])
def test_output_has_the_input_size(tiny, shape):
    _, _, pipeline = tiny
    image = (RNG.random(shape) * 255).astype(np.uint8)
    depth = estimate_depth(image, bundle=pipeline, progress=False)
    assert depth.shape == shape[:2] and depth.dtype == np.float32 and np.isfinite(depth).all()


def test_path_input(tiny, tmp_path):
    import cv2

    _, _, pipeline = tiny
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), IMAGE[:, :, ::-1])
    np.testing.assert_allclose(estimate_depth(path, bundle=pipeline, progress=False),
                               estimate_depth(IMAGE, bundle=pipeline, progress=False), atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((20, 20, 3), np.float32), "uint8"),
    (np.zeros((20, 20, 2), np.uint8), "HxWx3"),
    ("/nonexistent/image.png", "could not read"),
])
def test_bad_input_is_refused(tiny, bad, message):
    with pytest.raises(ValueError, match=message):
        estimate_depth(bad, bundle=tiny[2], progress=False)


def test_wrong_bundle_is_refused(tiny, tmp_path):
    import json
    import shutil

    root = tmp_path / "other"
    shutil.copytree(tiny[2].bundle.root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["family"] = "videocrafter1"
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="AiT depth bundle"):
        DepthPipeline(root)


def test_step_session_refuses_past_beyond_profile(tiny):
    config, modules, pipeline = tiny
    t = modules["transformer"]
    session = open_session(pipeline.bundle, "decoder_step")
    too_long = np.zeros((t.num_layers, 1, t.nhead, config.token_length, t.head_dim), np.float32)
    cross = np.zeros((t.num_layers, 1, t.nhead, config.feature_side ** 2, t.head_dim), np.float32)
    with pytest.raises(BundleError, match="past"):
        session.run({"token_embedding": np.zeros((1, 1, t.d_model), np.float32), "step_index": np.array([0]),
                     "self_k": too_long, "self_v": too_long, "cross_k": cross, "cross_v": cross})
