"""VideoCrafter1 3D UNet: official keys, golden outputs, and ONNX export with dynamic shapes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from export.checkpoint import load_into, read_checkpoint
from export.onnx_io import export_onnx, run_onnx
from runtime.arrays import agreement
from export.videocrafter1.unet import UNetModel

GOLDEN_CASES = ["unet3d_t2v", "unet3d_i2v"]
RELEASED = ["t2v-512", "t2v-1024", "i2v-512"]
ONNX_ATOL = 1e-4
VIDEO_AXES = {0: "batch", 2: "frames", 3: "latent_height", 4: "latent_width"}


def _case(reference, name):
    folder = reference / "videocrafter1" / "golden" / name
    case = json.loads((folder / "case.json").read_text())
    unet = UNetModel(**case["config"]).eval()
    load_into(unet, read_checkpoint(folder / "weights.safetensors"), what=name)
    return case, unet, dict(np.load(folder / "io.npz"))


def _run_torch(unet, feeds, names):
    with torch.no_grad():
        return unet(*[torch.from_numpy(feeds[n]) for n in names]).numpy()


def _export(unet, case_inputs, feeds, path):
    axes = {"x": VIDEO_AXES, "eps": VIDEO_AXES, "timesteps": {0: "batch"},
            "context": {0: "batch", 1: "context_length"}, "fps": {0: "batch"}}
    return export_onnx(unet, [torch.from_numpy(feeds[n]) for n in case_inputs], path,
                       input_names=case_inputs, output_names=["eps"],
                       dynamic_axes={n: axes[n] for n in [*case_inputs, "eps"]})


def _other_shape_feeds(feeds, *, batch=1, frames=3, size=16, context_length=None):
    """Inputs with another batch, frame count and latent size than the golden ones (seeded)."""
    generator = torch.Generator().manual_seed(1)
    channels, length, width = feeds["x"].shape[1], feeds["context"].shape[1], feeds["context"].shape[2]
    other = {
        "x": torch.randn(batch, channels, frames, size, size, generator=generator).numpy(),
        "timesteps": np.array([500] * batch, dtype=np.int64),
        "context": torch.randn(batch, context_length or length, width, generator=generator).numpy(),
    }
    if "fps" in feeds:
        other["fps"] = np.array([12] * batch, dtype=np.int64)
    return other


@pytest.mark.parametrize("name", RELEASED)
def test_state_dict_matches_released_keys(reference, name):
    manifest = json.loads((reference / "videocrafter1" / "keys" / f"{name}.unet.json").read_text())
    with torch.device("meta"):
        unet = UNetModel(**manifest["config"])
    found = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in unet.state_dict().items()}
    assert sorted(set(manifest["keys"]) - set(found)) == []
    assert sorted(set(found) - set(manifest["keys"])) == []
    assert found == manifest["keys"]
    assert sum(p.numel() for p in unet.parameters()) == manifest["params"]


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_golden_case(reference, name):
    case, unet, io = _case(reference, name)
    eps = _run_torch(unet, io, case["inputs"])
    error = float(np.abs(eps - io["eps"]).max())
    assert np.allclose(eps, io["eps"], atol=case["atol"], rtol=case["rtol"]), f"{name}: max abs error {error}"


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_onnx_dynamic_shapes(reference, tmp_path, name):
    case, unet, io = _case(reference, name)
    path = _export(unet, case["inputs"], io, tmp_path / f"{name}.onnx")
    golden = run_onnx(path, {n: io[n] for n in case["inputs"]})["eps"]
    assert np.allclose(golden, io["eps"], atol=case["atol"], rtol=case["rtol"]), \
        f"{name}: ORT vs golden max abs error {agreement(io['eps'], golden).max_abs}"
    # text-only context may change length; the image cross-attention needs its 77 text tokens
    length = None if case["config"].get("use_image_attention") else 5
    other = _other_shape_feeds(io, context_length=length)
    found = run_onnx(path, other)["eps"]
    expected = _run_torch(unet, other, case["inputs"])
    assert found.shape == expected.shape == other["x"].shape
    assert agreement(expected, found).max_abs < ONNX_ATOL


def _every_path_config(**overrides):
    """A tiny config that switches on the optional paths the released models leave off."""
    config = dict(in_channels=4, out_channels=4, model_channels=32, num_res_blocks=1, attention_resolutions=[1],
                  channel_mult=[1, 2], num_heads=2, context_dim=16, use_linear=False, use_scale_shift_norm=True,
                  resblock_updown=True, temporal_conv=True, tempspatial_aware=True, use_relative_position=True,
                  use_causal_attention=True, temporal_length=4, temporal_selfatt_only=False,
                  temporal_transformer_depth=2, fps_cond=True)
    return {**config, **overrides}


OPTIONAL_PATHS = {
    "temporal_cross_attention": {},
    "causal_linear_avgpool": dict(attention_resolutions=[2], temporal_selfatt_only=True, use_linear=True, resblock_updown=False,
                                  conv_resample=False, tempspatial_aware=False, use_relative_position=False,
                                  num_heads=-1, num_head_channels=16, addition_attention=True),
}


@pytest.mark.parametrize("paths", sorted(OPTIONAL_PATHS))
def test_optional_paths_export(tmp_path, paths):
    torch.manual_seed(0)
    unet = UNetModel(**_every_path_config(**OPTIONAL_PATHS[paths])).eval()
    for p in unet.parameters():  # no zero-initialised layer may hide a path
        torch.nn.init.normal_(p, std=0.05)
    names = ["x", "timesteps", "context", "fps"]
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 4, 4, 8, 8), dtype=np.float32),
             "timesteps": np.array([10], dtype=np.int64), "fps": np.array([8], dtype=np.int64),
             "context": np.random.default_rng(1).standard_normal((1, 3, 16), dtype=np.float32)}
    path = _export(unet, names, feeds, tmp_path / f"{paths}.onnx")
    other = _other_shape_feeds(feeds, batch=2, frames=4, size=4)
    expected = _run_torch(unet, other, names)
    assert agreement(expected, run_onnx(path, other)["eps"]).max_abs < ONNX_ATOL


def test_fps_defaults_to_16():
    torch.manual_seed(0)
    unet = UNetModel(**_every_path_config(temporal_conv=False, resblock_updown=False)).eval()
    timesteps = torch.tensor([3, 7])
    default = unet.embedding(timesteps, None)
    assert torch.equal(default, unet.embedding(timesteps, torch.full_like(timesteps, 16)))
    assert not torch.equal(default, unet.embedding(timesteps, torch.full_like(timesteps, 24)))


@pytest.mark.parametrize("overrides, message", [
    (dict(dims=3), "dims=2"),
    (dict(use_fp16=True), "use_fp16"),
    (dict(num_heads=-1, num_head_channels=-1), "num_heads or num_head_channels"),
    (dict(temporal_length=None), "temporal_length"),
    (dict(default_fs=3), "default_fs"),
])
def test_rejects_unsupported_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        UNetModel(**_every_path_config(**overrides))
