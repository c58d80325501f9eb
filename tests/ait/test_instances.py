"""AiT instance-segmentation bundle + runtime: loop vs a torch loop from the official code, mask pasting,
output form, input/bundle errors."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from export.ait.ar_transformer import INSSEG_TASK, ARTransformer, nucleus_probs
from export.ait.bundle import build_modules, export_bundle, instance_pipeline_constants
from export.ait.insseg_head import paste_values
from export.ait.presets import InstanceConfig, swinv2b_640reso_inssegonly, tiny_depth, tiny_insseg
from export.ait.verify_cases import insseg_modules, insseg_torch
from export.ait.vqvae import VQVAE
from export.golden import Case
from export.verify import handlers, verify_case
from runtime import BundleError, InstancePipeline, segment_instances
from runtime.ait.instances import paste_mask

IMAGE = (np.random.default_rng(0).random((61, 83, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, torch modules with the same seeded weights, opened pipeline)."""
    config = tiny_insseg()
    root = export_bundle(config, tmp_path_factory.mktemp("ait") / "ait-tiny-insseg", seed=0, log=lambda _: None)
    return config, build_modules(config, None, seed=0), InstancePipeline(root)


def test_opened_with_defaults_the_decoder_step_runs_on_onnx_runtime_the_rest_on_openvino(tiny):
    """``backend="auto"`` (the default) follows the rule of docs/backends.md on a CPU with OpenVINO."""
    pytest.importorskip("openvino")
    pipeline = tiny[2]
    labels = {name: session.label for name, session in pipeline.sessions.items()}
    assert labels == {"image_encoder": "OpenVINO", "decoder_step": "ONNX Runtime", "mask_soft_decoder": "OpenVINO"}


def official_loop(modules, pixels: np.ndarray, config: InstanceConfig, seed: int, top_p: float):
    """``ARTransformer.forward_insseg`` (the official task-1 loop, checked against the golden case) with the
    ``torch.multinomial`` draw replaced by the inverse CDF at the runtime's uniforms."""
    t = modules["transformer"]
    rng = np.random.default_rng(seed)

    def choose(logits: torch.Tensor) -> torch.Tensor:
        cdf = torch.cumsum(nucleus_probs(logits, top_p), dim=-1)
        u = torch.from_numpy(rng.random(len(logits))).float()
        return torch.clamp((cdf <= (u * cdf[:, -1])[:, None]).sum(-1), max=cdf.shape[-1] - 1)

    with torch.no_grad():
        features = modules["backbone"](torch.from_numpy(pixels))[-1]
    return (a.numpy() for a in t.forward_insseg(features, config.num_query, config.mask_tokens, choose))


def test_released_config_and_manifest(tiny):
    released = swinv2b_640reso_inssegonly()
    assert released.transformer["num_vocal"] == 2467 and released.transformer["top_p"] == 0.3
    assert released.token_length == 2100 == released.transformer["dec_length"]
    with torch.device("meta"):
        assert VQVAE(**released.vqvae).tau == 1.0  # the instance vae_cfg sets no tau (the depth one: 0.8)
    config, modules, pipeline = tiny
    t, c = modules["transformer"], pipeline.constants
    assert c.task == "insseg" and c.task_id == INSSEG_TASK and c.num_query == config.num_query
    assert c.vocabulary.mask_slice == (t.mask_offset, t.mask_offset + config.vqvae["num_embeddings"])
    np.testing.assert_array_equal(pipeline.head.vocabulary, t.voc_embed.detach())
    np.testing.assert_array_equal(pipeline.head.start_embedding, t.det_embed[INSSEG_TASK].detach())
    assert set(pipeline.bundle.manifest.files) >= {"start_embedding.npy", "vocabulary_embeddings.npy"}


@pytest.mark.parametrize("seed", [0, 7])
def test_runtime_loop_matches_official_torch_loop(tiny, seed):
    config, modules, pipeline = tiny
    pixels = np.concatenate([pipeline.pixels(IMAGE)[0], pipeline.pixels(IMAGE[::-1].copy())[0]])
    tokens, scores, mask_logits = pipeline.tokens(pixels, seed=seed)
    ref_tokens, ref_scores, ref_mask_logits = official_loop(modules, pixels, config, seed, config.transformer["top_p"])
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(mask_logits.reshape(ref_mask_logits.shape), ref_mask_logits, atol=1e-4, rtol=1e-4)
    assert tokens.shape == (2, config.token_length) and scores.shape == (2, config.num_query)
    assert (pipeline.tokens(pixels, seed=seed + 1)[0] != tokens).any()


def test_mask_decoder_graph_matches_vqvae(tiny):
    config, modules, pipeline = tiny
    logits = np.random.default_rng(3).normal(size=(4, 16, config.vqvae["num_embeddings"])).astype(np.float32)
    masks = pipeline.run("mask_soft_decoder", {"code_logits": logits})["masks"]
    with torch.no_grad():
        grid = torch.from_numpy(logits).transpose(1, 2).reshape(4, -1, 4, 4)
        ref = modules["vqvae"].decode_soft(grid).numpy()
    assert masks.shape == (4, 64, 64)
    np.testing.assert_allclose(masks, ref, atol=1e-5)


@pytest.mark.parametrize("box", [[10.3, 5.7, 40.2, 30.9], [-6.0, 20.5, 30.0, 75.0], [50.0, 50.0, 50.0, 60.0],
                                 [20.5, 10.0, 20.5, 40.0]])  # the last: zero width at a pixel centre (0/0)
def test_paste_mask_matches_official_and_stays_in_box(box):
    mask = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    box = np.array(box, np.float32)
    pasted = paste_mask(mask, box, 61, 83)
    official = paste_values(torch.from_numpy(mask), torch.from_numpy(box), 61, 83).numpy()
    np.testing.assert_array_equal(pasted, official >= 0.5)
    ys, xs = np.nonzero(pasted)
    if len(ys):
        assert xs.min() >= np.floor(box[0]) - 1 and xs.max() < np.ceil(box[2]) + 1
        assert ys.min() >= np.floor(box[1]) - 1 and ys.max() < np.ceil(box[3]) + 1


def test_segment_instances_official_form(tiny):
    config, _, pipeline = tiny
    result = segment_instances(IMAGE, bundle=pipeline, seed=0, progress=False)
    n = config.num_query
    assert result.boxes.shape == (n, 4) and result.boxes.dtype == np.float32
    assert result.scores.shape == (n,) and ((result.scores >= 0) & (result.scores <= 1)).all()
    assert result.classes.dtype == np.int64 and ((result.classes >= 0) & (result.classes < 3)).all()
    assert result.masks.shape == (n, *IMAGE.shape[:2]) and result.masks.dtype == bool
    tokens = pipeline.tokens(pipeline.pixels(IMAGE)[0], seed=0)[0][0].reshape(n, config.object_length)
    scale = np.array([128 / 83, 94 / 61] * 2, np.float32)  # keep-ratio resize 83x61 -> 128x94
    np.testing.assert_allclose(result.boxes, tokens[:, :4] * config.norm_val / 10 / scale, rtol=1e-6)
    bbox_results, mask_results = result.official()
    assert len(bbox_results) == len(mask_results) == 3
    assert sum(len(r) for r in bbox_results) == n and all(r.shape[1:] == (5,) for r in bbox_results)
    for label, (dets, masks) in enumerate(zip(bbox_results, mask_results)):
        np.testing.assert_array_equal(dets[:, 4], result.scores[result.classes == label])
        assert len(masks) == len(dets)
    assert (segment_instances(IMAGE, bundle=pipeline, seed=0, progress=False).boxes == result.boxes).all()
    again = segment_instances(IMAGE, bundle=pipeline.bundle.root, seed=0, progress=False, backend="onnxruntime",
                              memory="low")
    np.testing.assert_allclose(again.boxes, result.boxes, atol=1e-4)
    np.testing.assert_array_equal(again.classes, result.classes)


def test_bad_inputs_and_bundle_say_what_was_expected(tiny, tmp_path):
    _, _, pipeline = tiny
    with pytest.raises(ValueError, match="expected a uint8 or uint16 image, found dtype float32"):
        segment_instances(IMAGE.astype(np.float32), bundle=pipeline)
    with pytest.raises(ValueError, match="expected an HxWx3 RGB image"):
        segment_instances(np.zeros((4, 4, 2), np.uint8), bundle=pipeline)
    depth = export_bundle(tiny_depth(), tmp_path / "depth", seed=0, log=lambda _: None)
    with pytest.raises(BundleError, match="needs an AiT insseg bundle"):
        InstancePipeline(depth)


def test_top_p_zero_is_deterministic_and_the_top_token(tiny):
    config, modules, pipeline = tiny
    pixels = pipeline.pixels(IMAGE)[0]
    tokens, scores, mask_logits = pipeline.tokens(pixels, seed=0, top_p=0)
    ref_tokens, ref_scores, ref_mask_logits = official_loop(modules, pixels, config, 0, 0.0)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(mask_logits, ref_mask_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(pipeline.tokens(pixels, seed=5, top_p=0)[0], tokens)
    assert (pipeline.tokens(pixels, seed=0)[0] != tokens).any()  # the bundle's 0.3 samples
    first, second = (segment_instances(IMAGE, bundle=pipeline, seed=s, top_p=0.0, progress=False) for s in (0, 5))
    np.testing.assert_array_equal(first.masks, second.masks)
    np.testing.assert_array_equal(first.boxes, second.boxes)


@pytest.mark.parametrize("top_p", [-0.1, 1.5, float("nan"), "0.3", True])
def test_bad_top_p_says_what_was_expected(tiny, top_p):
    with pytest.raises(ValueError, match=r"top_p must be a number in \[0, 1\]"):
        segment_instances(IMAGE, bundle=tiny[2], top_p=top_p, progress=False)


def test_insseg_golden_case_passes_every_row(reference):
    rows = verify_case(reference / "ait" / "golden" / "insseg", handlers())
    assert [r.path for r in rows] == ["torch", "onnx"]
    for row in rows:
        assert row.passed, row
        assert "tokens 42/42 exact" in row.detail and "labels 2/2 exact" in row.detail, row.detail


def _perturbed_insseg_case(reference, tmp_path, pixel: tuple[int, int, int]):
    """A copy of the golden insseg case with one mask pixel flipped."""
    case = tmp_path / "insseg_perturbed"
    shutil.copytree(reference / "ait" / "golden" / "insseg", case)
    case.chmod(0o755)
    with np.load(case / "io.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["masks"][pixel] = ~arrays["masks"][pixel]
    (case / "io.npz").chmod(0o644)
    np.savez(case / "io.npz", **arrays)
    return case


def test_insseg_mask_pixels_may_differ_only_on_the_threshold(reference, tmp_path):
    golden = Case.load(reference / "ait" / "golden" / "insseg")
    distance = np.abs(insseg_torch(golden, *insseg_modules(golden))["mask_values"] - 0.5)
    tie = np.unravel_index(distance.argmin(), distance.shape)  # 1.2e-6 from 0.5 in this case
    inside = np.unravel_index(distance.argmax(), distance.shape)  # deep inside or outside a mask
    assert distance[tie] <= golden.atol < distance[inside]
    rows = verify_case(_perturbed_insseg_case(reference, tmp_path / "tie", tie), handlers())
    assert [r.passed for r in rows] == [True, True]
    assert all("masks 1 of 153600 pixels differ (1 within atol" in r.detail for r in rows)
    rows = verify_case(_perturbed_insseg_case(reference, tmp_path / "wrong", inside), handlers())
    assert [r.passed for r in rows] == [False, False]
    assert all("masks 1 of 153600 pixels differ (0 within atol" in r.detail for r in rows)


@pytest.mark.parametrize("key, value, message", [("coord_norm", "rel", "coord_norm must be 'abs'"),
                                                 ("num_bins", 1000, "must equal the transformer's")])
def test_insseg_case_settings_we_do_not_run_say_so(reference, key, value, message):
    golden = Case.load(reference / "ait" / "golden" / "insseg")
    with pytest.raises(ValueError, match=message):
        handlers()["ait.insseg"](replace(golden, config={**golden.config, key: value}))


def test_insseg_bundle_refuses_hard_mask_decoding():
    config = tiny_insseg()
    config.transformer["soft_vae"] = False
    with pytest.raises(ValueError, match="soft_vae false decodes the sampled mask codes"):
        instance_pipeline_constants(config, ARTransformer(**config.transformer))
