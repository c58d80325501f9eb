"""VideoCrafter1 KL autoencoder: golden numbers, released keys, option checks and ONNX with dynamic sizes."""
from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from export.checkpoint import load_into, read_checkpoint
from export.onnx_io import export_onnx, run_onnx
from export.random_init import randomize_
from export.videocrafter1.vae import AutoencoderKL

DATA_DEPENDENT_OPS = {"NonZero", "Loop", "If", "Scan", "Unique"}


class _Encode(nn.Module):
    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, frames):
        return self.vae.encode(frames)


class _Decode(nn.Module):
    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z)


@pytest.fixture(scope="module")
def golden(reference):
    folder = reference / "videocrafter1" / "golden" / "vae"
    case = json.loads((folder / "case.json").read_text())
    vae = AutoencoderKL(**case["config"]).eval()
    load_into(vae, read_checkpoint(folder / "weights.safetensors"), what="AutoencoderKL")
    return case, vae, dict(np.load(folder / "io.npz"))


def _close(found, expected, case) -> None:
    found = np.asarray(found)
    assert found.shape == expected.shape
    assert np.allclose(found, expected, atol=case["atol"], rtol=case["rtol"]), np.abs(found - expected).max()


def _ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_golden_encode_decode(golden):
    case, vae, io = golden
    with torch.no_grad():
        mean, logvar = vae.encode(torch.from_numpy(io["frames"]))
        decoded = vae.decode(torch.from_numpy(io["z"]))
    _close(mean, io["posterior_mean"], case)
    _close(logvar, io["posterior_logvar"], case)
    _close(decoded, io["decoded"], case)


def test_released_keys_on_meta(reference):
    manifest = json.loads((reference / "videocrafter1" / "keys" / "vae.json").read_text())
    with torch.device("meta"):
        vae = AutoencoderKL(**manifest["config"])
    found = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in vae.state_dict().items()}
    assert found == manifest["keys"]
    assert sum(p.numel() for p in vae.parameters()) == manifest["params"]


def _attn_config(reference) -> dict:
    case = json.loads((reference / "videocrafter1" / "golden" / "vae" / "case.json").read_text())
    config = copy.deepcopy(case["config"])
    config["ddconfig"].update(resolution=32, attn_resolutions=[16])
    return config


def test_attn_resolutions_place_attention_where_official_does(reference):
    with torch.device("meta"):
        vae = AutoencoderKL(**_attn_config(reference))
    attn = {k.rsplit(".", 2)[0] for k in vae.state_dict() if ".attn." in k}
    # ch_mult (1, 2) at resolution 32: level 1 runs at 16; 1 res block down, 2 up
    assert attn == {"encoder.down.1.attn.0", "decoder.up.1.attn.0", "decoder.up.1.attn.1"}


def test_logvar_is_clamped():
    vae = AutoencoderKL(4, {"ch": 32, "out_ch": 3, "ch_mult": [1], "num_res_blocks": 1, "attn_resolutions": [],
                            "in_channels": 3, "resolution": 8, "z_channels": 4}).eval()
    with torch.no_grad():
        vae.quant_conv.bias[4:] = 1e4
        _, logvar = vae.encode(torch.zeros(1, 3, 8, 8))
    assert torch.all(logvar == 20.0)


@pytest.mark.parametrize("change, message", [
    ({"attn_type": "linear"}, "attn_type"),
    ({"use_linear_attn": True}, "attn_type"),
    ({"double_z": False}, "double_z"),
    ({"spatial": 2}, "unknown"),
])
def test_unsupported_ddconfig_is_refused(golden, change, message):
    case, _, _ = golden
    config = copy.deepcopy(case["config"])
    config["ddconfig"].update(change)
    with pytest.raises(ValueError, match=message):
        AutoencoderKL(**config)


def test_training_loss_is_refused(golden):
    case, _, _ = golden
    config = {**case["config"], "lossconfig": {"target": "lvdm.modules.losses.LPIPSWithDiscriminator"}}
    with pytest.raises(ValueError, match="torch.nn.Identity"):
        AutoencoderKL(**config)


def test_onnx_golden_with_dynamic_batch_and_size(golden, tmp_path):
    case, vae, io = golden
    latent = {0: "frames", 2: "latent_height", 3: "latent_width"}
    encoder = export_onnx(_Encode(vae), [torch.zeros(1, 3, 24, 40)], tmp_path / "enc.onnx", input_names=["frames"],
                          output_names=["posterior_mean", "posterior_logvar"],
                          dynamic_axes={"frames": {0: "frames", 2: "height", 3: "width"},
                                        "posterior_mean": latent, "posterior_logvar": latent})
    decoder = export_onnx(_Decode(vae), [torch.zeros(1, 4, 12, 20)], tmp_path / "dec.onnx", input_names=["z"],
                          output_names=["decoded"],
                          dynamic_axes={"z": latent, "decoded": {0: "frames", 2: "height", 3: "width"}})
    encoded = run_onnx(encoder, {"frames": io["frames"]})
    _close(encoded["posterior_mean"], io["posterior_mean"], case)
    _close(encoded["posterior_logvar"], io["posterior_logvar"], case)
    _close(run_onnx(decoder, {"z": io["z"]})["decoded"], io["decoded"], case)
    assert not (_ops(encoder) | _ops(decoder)) & DATA_DEPENDENT_OPS


def test_onnx_with_attention_matches_torch_at_other_size(reference, tmp_path):
    vae = randomize_(AutoencoderKL(**_attn_config(reference)), seed=3).eval()
    latent = {0: "frames", 2: "latent_height", 3: "latent_width"}
    encoder = export_onnx(_Encode(vae), [torch.zeros(1, 3, 32, 32)], tmp_path / "enc.onnx", input_names=["frames"],
                          output_names=["posterior_mean", "posterior_logvar"],
                          dynamic_axes={"frames": {0: "frames", 2: "height", 3: "width"},
                                        "posterior_mean": latent, "posterior_logvar": latent})
    decoder = export_onnx(_Decode(vae), [torch.zeros(1, 4, 16, 16)], tmp_path / "dec.onnx", input_names=["z"],
                          output_names=["decoded"],
                          dynamic_axes={"z": latent, "decoded": {0: "frames", 2: "height", 3: "width"}})
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, 24, 40, generator=generator) * 2 - 1
    z = torch.randn(3, 4, 10, 6, generator=generator)
    with torch.no_grad():
        mean, logvar = vae.encode(frames)
        decoded = vae.decode(z)
    encoded = run_onnx(encoder, {"frames": frames.numpy()})
    tolerance = {"atol": 2e-4, "rtol": 1e-3}
    _close(encoded["posterior_mean"], mean.numpy(), tolerance)
    _close(encoded["posterior_logvar"], logvar.numpy(), tolerance)
    _close(run_onnx(decoder, {"z": z.numpy()})["decoded"], decoded.numpy(), tolerance)
