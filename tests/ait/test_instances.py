"""AiT instance-segmentation bundle + runtime: loop vs a torch loop from the official code, mask pasting,
output form, input/bundle errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.ait.ar_transformer import INSSEG_TASK
from export.ait.bundle import build_modules, export_bundle
from export.ait.presets import InstanceConfig, swinv2b_640reso_inssegonly, tiny_depth, tiny_insseg
from runtime import BundleError, InstancePipeline, segment_instances
from runtime.ait.instances import paste_mask

IMAGE = (np.random.default_rng(0).random((61, 83, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, torch modules with the same seeded weights, opened pipeline)."""
    config = tiny_insseg()
    root = export_bundle(config, tmp_path_factory.mktemp("ait") / "ait-tiny-insseg", seed=0, log=lambda _: None)
    return config, build_modules(config, None, seed=0), InstancePipeline(root)


@torch.no_grad()
def official_loop(modules, pixels: np.ndarray, config: InstanceConfig, seed: int):
    """``ARTransformer.forward`` task 1 (pred_eos false), written after ait/code/model/transformer.py; the
    ``torch.multinomial`` draw is replaced by the inverse CDF at the runtime's uniforms."""
    t = modules["transformer"]
    cross_k, cross_v = t.cross_kv(t.encode(modules["backbone"](torch.from_numpy(pixels))[-1]))
    b = pixels.shape[0]
    self_k, self_v = t.empty_cache(b)
    input_embed = t.det_embed[[INSSEG_TASK]].expand(b, -1, -1)
    rng = np.random.default_rng(seed)
    obj_len = 5 + config.mask_tokens
    tokens, scores, mask_logits = [], [], []
    for i in range(1, config.num_query * obj_len + 1):
        logits, self_k, self_v = t.decode_step(input_embed, torch.tensor([i - 1]), self_k, self_v, cross_k, cross_v,
                                               INSSEG_TASK)
        is_mask = False
        if (i - 1) % obj_len == 4:
            offset, offset_end = t.class_offset, t.special_offset
            current_logits = logits[:, offset:offset_end]
            current_scores = torch.cat([current_logits, logits[:, [t.noise_label]]], dim=1).softmax(dim=-1)[:, :-1]
        elif (i - 1) % obj_len < 4:
            offset, offset_end = 0, t.class_offset
            current_logits = logits[:, offset:offset_end]
        else:
            is_mask = True
            offset, offset_end = t.mask_offset, t.depth_offset
            current_logits = logits[:, offset:offset_end]
            tmp_current_logits = current_logits.clone()
            mask_logits.append(tmp_current_logits)
        current_logits = current_logits.clone()
        sorted_logits, sorted_idx = torch.sort(current_logits, descending=True)
        sorted_idx_to_remove = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > t.top_p
        sorted_idx_to_remove[..., 1:] = sorted_idx_to_remove[..., :-1].clone()
        sorted_idx_to_remove[..., 0] = 0
        for row in range(b):
            current_logits[row][sorted_idx[row][sorted_idx_to_remove[row]]] = -float("inf")
        cdf = torch.cumsum(F.softmax(current_logits, dim=-1), dim=-1)
        u = torch.from_numpy(rng.random(b)).float()
        pred = torch.clamp((cdf <= (u * cdf[:, -1])[:, None]).sum(-1), max=cdf.shape[-1] - 1)[:, None]
        if (i - 1) % obj_len == 4:
            scores.append(torch.gather(current_scores, 1, pred))
        if t.soft_transformer and is_mask:
            input_embed = (tmp_current_logits.softmax(dim=1) @ t.voc_embed[offset:offset_end]).unsqueeze(1)
        else:
            input_embed = t.voc_embed[pred + offset]
        tokens.append(pred)
    return torch.cat(tokens, 1).numpy(), torch.cat(scores, 1).numpy(), torch.stack(mask_logits, 1).numpy()


def official_paste(mask: np.ndarray, box: np.ndarray, h: int, w: int) -> np.ndarray:
    """``_do_paste_mask`` (skip_empty, one box) + ``>= 0.5``, from detection/insseg_head.py."""
    boxes = torch.from_numpy(box[None].astype(np.float32))
    x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
    x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=w).to(dtype=torch.int32)
    y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=h).to(dtype=torch.int32)
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    img_y = (torch.arange(y0_int, y1_int).float() + 0.5 - y0) / (y1 - y0) * 2 - 1
    img_x = (torch.arange(x0_int, x1_int).float() + 0.5 - x0) / (x1 - x0) * 2 - 1
    img_x[torch.isinf(img_x)] = 0
    img_y[torch.isinf(img_y)] = 0
    grid = torch.stack([img_x[:, None, :].expand(1, img_y.size(1), img_x.size(1)),
                        img_y[:, :, None].expand(1, img_y.size(1), img_x.size(1))], dim=3)
    pasted = F.grid_sample(torch.from_numpy(mask)[None, None].float(), grid, align_corners=False)[0, 0]
    out = np.zeros((h, w), bool)
    out[y0_int:y1_int, x0_int:x1_int] = (pasted >= 0.5).numpy()
    return out


def test_released_config_and_manifest(tiny):
    released = swinv2b_640reso_inssegonly()
    assert released.transformer["num_vocal"] == 2467 and released.transformer["top_p"] == 0.3
    assert released.token_length == 2100 == released.transformer["dec_length"]
    config, modules, pipeline = tiny
    t, c = modules["transformer"], pipeline.constants
    assert c["task"] == "insseg" and c["task_id"] == INSSEG_TASK and c["num_query"] == config.num_query
    assert c["vocabulary"]["mask_slice"] == [t.mask_offset, t.mask_offset + config.vqvae["num_embeddings"]]
    np.testing.assert_array_equal(pipeline.vocabulary, t.voc_embed.detach())
    np.testing.assert_array_equal(pipeline.start_embedding, t.det_embed[INSSEG_TASK].detach())
    assert set(pipeline.bundle.manifest.files) >= {"start_embedding.npy", "vocabulary_embeddings.npy"}


@pytest.mark.parametrize("seed", [0, 7])
def test_runtime_loop_matches_official_torch_loop(tiny, seed):
    config, modules, pipeline = tiny
    pixels = np.concatenate([pipeline.pixels(IMAGE)[0], pipeline.pixels(IMAGE[::-1].copy())[0]])
    tokens, scores, mask_logits = pipeline.tokens(pixels, seed=seed)
    ref_tokens, ref_scores, ref_mask_logits = official_loop(modules, pixels, config, seed)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(mask_logits.reshape(ref_mask_logits.shape), ref_mask_logits, atol=1e-4, rtol=1e-4)
    assert tokens.shape == (2, config.token_length) and scores.shape == (2, config.num_query)
    assert (pipeline.tokens(pixels, seed=seed + 1)[0] != tokens).any()


def test_mask_decoder_graph_matches_vqvae(tiny):
    config, modules, pipeline = tiny
    logits = np.random.default_rng(3).normal(size=(4, 16, config.vqvae["num_embeddings"])).astype(np.float32)
    masks = pipeline.mask_decoder.run({"code_logits": logits})["masks"]
    with torch.no_grad():
        grid = torch.from_numpy(logits).transpose(1, 2).reshape(4, -1, 4, 4)
        ref = modules["vqvae"].decode_soft(grid).numpy()
    assert masks.shape == (4, 64, 64)
    np.testing.assert_allclose(masks, ref, atol=1e-5)


@pytest.mark.parametrize("box", [[10.3, 5.7, 40.2, 30.9], [-6.0, 20.5, 30.0, 75.0], [50.0, 50.0, 50.0, 60.0]])
def test_paste_mask_matches_official_and_stays_in_box(box):
    mask = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    box = np.array(box, np.float32)
    pasted = paste_mask(mask, box, 61, 83)
    np.testing.assert_array_equal(pasted, official_paste(mask, box, 61, 83))
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


def test_bad_inputs_and_bundle_say_what_was_expected(tiny, tmp_path):
    _, _, pipeline = tiny
    with pytest.raises(ValueError, match="expected a uint8 or uint16 image, found dtype float32"):
        segment_instances(IMAGE.astype(np.float32), bundle=pipeline)
    with pytest.raises(ValueError, match="expected an HxWx3 RGB image"):
        segment_instances(np.zeros((4, 4, 2), np.uint8), bundle=pipeline)
    depth = export_bundle(tiny_depth(), tmp_path / "depth", seed=0, log=lambda _: None)
    with pytest.raises(BundleError, match="needs an AiT insseg bundle"):
        InstancePipeline(depth)
