"""VideoCrafter1 conditioning: OpenCLIP text and vision towers and the I2V Resampler.

Golden numbers, released keys on the meta device, option checks and ONNX with a dynamic batch.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from export.checkpoint import load_into, read_checkpoint
from export.onnx_io import export_onnx, run_onnx
from export.videocrafter1.openclip import VIT_H_14_TEXT, OpenCLIPTextEncoder, OpenCLIPVisionTokens
from export.videocrafter1.resampler import Resampler

DATA_DEPENDENT_OPS = {"NonZero", "Loop", "If", "Scan", "Unique"}


def _build(name: str, config: dict) -> torch.nn.Module:
    if name == "text_encoder":
        return OpenCLIPTextEncoder(config["text_cfg"], config["embed_dim"], layer=config["layer"])
    if name == "image_encoder":
        return OpenCLIPVisionTokens(config["vision_cfg"], config["embed_dim"])
    return Resampler(**config)


def _released(name: str) -> torch.nn.Module:
    return {"text_encoder": OpenCLIPTextEncoder.vit_h_14, "image_encoder": OpenCLIPVisionTokens.vit_h_14}[name]()


def _golden(reference, name: str):
    folder = reference / "videocrafter1" / "golden" / name
    case = json.loads((folder / "case.json").read_text())
    module = _build(name, case["config"]).eval()
    load_into(module, read_checkpoint(folder / "weights.safetensors"), what=case["official_class"])
    io = dict(np.load(folder / "io.npz"))
    (inp,), (out,) = case["inputs"], case["outputs"]
    return case, module, io[inp], io[out]


def _close(found, expected, case) -> None:
    found = np.asarray(found)
    assert found.shape == expected.shape
    assert np.allclose(found, expected, atol=case["atol"], rtol=case["rtol"]), np.abs(found - expected).max()


CASES = ["text_encoder", "image_encoder", "image_proj"]


@pytest.mark.parametrize("name", CASES)
def test_golden(reference, name):
    case, module, inputs, expected = _golden(reference, name)
    with torch.no_grad():
        _close(module(torch.from_numpy(inputs)), expected, case)


@pytest.mark.parametrize("name", CASES)
def test_released_keys_on_meta(reference, name):
    manifest = json.loads((reference / "videocrafter1" / "keys" / f"{name}.json").read_text())
    with torch.device("meta"):
        module = Resampler(**manifest["config"]) if name == "image_proj" else _released(name)
    found = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()}
    assert found == manifest["keys"]
    assert sum(p.numel() for p in module.parameters()) == manifest["params"]


@pytest.mark.parametrize("name", CASES)
def test_onnx_dynamic_batch(reference, name, tmp_path):
    case, module, inputs, expected = _golden(reference, name)
    (inp,), (out,) = case["inputs"], case["outputs"]
    example = torch.from_numpy(inputs[:1])
    path = export_onnx(module, [example], tmp_path / f"{name}.onnx", input_names=[inp], output_names=[out],
                       dynamic_axes={inp: {0: "batch"}, out: {0: "batch"}})
    assert len(inputs) > 1, "the golden batch must differ from the traced batch of 1"
    _close(run_onnx(path, {inp: inputs})[out], expected, case)
    assert not {node.op_type for node in onnx.load(str(path)).graph.node} & DATA_DEPENDENT_OPS


def test_text_layers_last_runs_every_block_and_penultimate_skips_one(reference):
    case, penultimate, tokens, _ = _golden(reference, "text_encoder")
    last = OpenCLIPTextEncoder(case["config"]["text_cfg"], case["config"]["embed_dim"], layer="last").eval()
    last.load_state_dict(penultimate.state_dict())
    x = torch.from_numpy(tokens)
    with torch.no_grad():
        states = last.token_embedding(x) + last.positional_embedding
        for block in last.transformer.resblocks:
            states = block(states, last.attn_mask)
        torch.testing.assert_close(last(x), last.ln_final(states))
        assert not torch.allclose(last(x), penultimate(x))


def test_text_is_causal(reference):
    _, encoder, tokens, _ = _golden(reference, "text_encoder")
    changed = torch.from_numpy(tokens.copy())
    changed[:, 40:] = 7
    with torch.no_grad():
        before, after = encoder(torch.from_numpy(tokens)), encoder(changed)
    torch.testing.assert_close(before[:, :40], after[:, :40])


@pytest.mark.parametrize("build, message", [
    (lambda: OpenCLIPTextEncoder(VIT_H_14_TEXT, 1024, layer="pooled"), "layer"),
    (lambda: OpenCLIPTextEncoder({**VIT_H_14_TEXT, "embed_cls": True}, 1024), "embed_cls"),
    (lambda: OpenCLIPTextEncoder({**VIT_H_14_TEXT, "widht": 8}, 1024), "widht"),
    (lambda: OpenCLIPVisionTokens({"width": 32, "head_width": 16, "ls_init_value": 0.1}, 16), "ls_init_value"),
])
def test_unsupported_options_are_refused(build, message):
    with torch.device("meta"), pytest.raises(ValueError, match=message):
        build()


def test_vision_wrong_image_size_is_refused():
    encoder = OpenCLIPVisionTokens({"width": 32, "head_width": 16, "layers": 1, "patch_size": 14}, 16)
    with pytest.raises(ValueError, match="16x16 patch grid"):
        encoder(torch.zeros(1, 3, 112, 112))

