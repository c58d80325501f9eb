"""T2V-Turbo weights at export: the v1 LoRA merge against the official inject + collapse, its refusals, the
time_cond_proj base, and v2's whole-UNet file (keys from the official tiny v2 UNet)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from export.__main__ import main
from export.checkpoint import CheckpointError, meta_parameters, read_checkpoint
from export.golden import Case
from export.videocrafter1.bundle import build_modules, export_bundle
from export.videocrafter1.graphs import component_spec
from export.videocrafter1.lora import LoraError, expected_shapes, lora_targets, merge_lora_, read_lora
from export.videocrafter1.presets import tiny_variants
from export.videocrafter1.turbo_weights import (TIME_COND_PROJ_SEED, TurboWeights, check_options, drawn_time_cond_proj,
                                                read_time_cond_proj)
from export.videocrafter1.unet import UNetModel
from runtime.bundle import Bundle

GOLDEN = Path(__file__).parent / "golden"
CASE = GOLDEN / "lora_merge_t2v_turbo"
TURBO_KEYS = ("time_cond_proj.weight", "motion_cond_proj.weight", "combine_proj.weight")


class _Payload:
    """Something weights_only=True must refuse to unpickle."""


class _TensorList(list):
    """A list of tensors in a class of its own: loads only when trusted."""


def _case_unet() -> tuple[dict, list[torch.Tensor]]:
    case = json.loads((CASE / "case.json").read_text())
    return case["config"]["unet"], read_lora(CASE / "unet_lora.pt")


def _meta_unet(config: dict) -> UNetModel:
    with meta_parameters():
        return UNetModel(**config)


def _case_eps(state: dict) -> np.ndarray:
    config, _ = _case_unet()
    unet = UNetModel(**config).eval()
    unet.load_state_dict(state)
    io = Case.load(CASE).io
    with torch.no_grad():
        return unet(**{n: torch.from_numpy(io[n]) for n in ("x", "timesteps", "context", "fps", "timestep_cond")}
                    ).numpy()


def test_golden_lora_merge_passes_torch_and_onnx(capsys):
    assert main(["verify-reference", str(CASE)]) == 0
    output = capsys.readouterr().out
    assert "lora_merge_t2v_turbo       lora.merge                   torch" in output
    assert "2 of 2 rows pass" in output


def test_golden_case_sees_the_lora():
    """Without the merge the UNet's output is far outside the case's tolerance (the case can fail)."""
    expected = Case.load(CASE).io["eps"]
    config, lora = _case_unet()
    merged = read_checkpoint(CASE / "weights.safetensors")
    merge_lora_(merged, _meta_unet(config), lora)
    assert np.abs(_case_eps(merged) - expected).max() < 1e-5
    assert np.abs(_case_eps(read_checkpoint(CASE / "weights.safetensors")) - expected).max() > 1e-2


def test_targets_are_linear_conv2d_conv3d_in_module_order_without_conv1d():
    config, lora = _case_unet()
    unet = _meta_unet(config)
    names = [name for name, _ in lora_targets(unet)]
    assert len(lora) == 2 * len(names)
    assert names[:5] == ["time_embed.0", "time_embed.2", "fps_embedding.0", "fps_embedding.2", "time_cond_proj"]
    assert names[-1] == "out.2"
    assert not any(isinstance(unet.get_submodule(n), torch.nn.Conv1d) for n in names)
    assert any(isinstance(m, torch.nn.Conv1d) for m in unet.modules())  # init_attn's proj_in/proj_out
    assert {type(unet.get_submodule(n)) for n in names} == {torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d}
    assert expected_shapes(unet.get_submodule("input_blocks.0.0")) == ((32, 4, 1, 1), (4, 4, 3, 3))


def test_wrong_count_is_refused_and_state_untouched():
    config, lora = _case_unet()
    state = read_checkpoint(CASE / "weights.safetensors")
    before = state["time_embed.0.weight"].clone()
    n = len(lora)
    with pytest.raises(LoraError, match=rf"holds {n - 2} tensors; expected {n} .*{n // 2} Linear/Conv2d/Conv3d "
                                        rf"modules\); the first one missing is tensor {n - 2}, the up of out.2"):
        merge_lora_(state, _meta_unet(config), lora[:-2], what="unet_lora.pt")
    with pytest.raises(LoraError, match=rf"holds {n + 1} tensors.*; tensors {n} to {n} fit no module"):
        merge_lora_(state, _meta_unet(config), [*lora, lora[0]], what="unet_lora.pt")
    assert torch.equal(state["time_embed.0.weight"], before)


def test_first_misfit_is_named_with_index_module_and_shapes():
    config, lora = _case_unet()
    unet = _meta_unet(config)
    names = [name for name, _ in lora_targets(unet)]
    bad = list(lora)
    bad[9] = torch.zeros(3, 3)  # the down of the 5th target (time_cond_proj), one of two misfits
    bad[21] = torch.zeros(3, 3)
    up, down = expected_shapes(unet.get_submodule(names[4]))
    message = rf"LoRA tensor 9 \(down of {names[4]}, a Linear with weight \(32, 256\)\) has shape \(3, 3\); " \
              rf"expected \(32, 256\) \(rank 32\)"
    assert down == (32, 256)
    with pytest.raises(LoraError, match=message):
        merge_lora_(read_checkpoint(CASE / "weights.safetensors"), unet, bad)


def test_lora_pickle_with_code_is_refused_unless_trusted(tmp_path):
    _, lora = _case_unet()
    path = tmp_path / "unet_lora.pt"
    torch.save(_TensorList(lora[:4]), path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        read_lora(path)
    assert all(torch.equal(a, b) for a, b in zip(read_lora(path, trust=True), lora[:4]))
    torch.save({"lora": lora[:2], "x": _Payload()}, path)
    with pytest.raises(LoraError, match="found a dict .*--unet"):
        read_lora(path, trust=True)


def test_time_cond_proj_default_is_nn_linear_init_under_the_recorded_seed():
    torch.manual_seed(TIME_COND_PROJ_SEED)
    official = torch.nn.Linear(256, 320, bias=False).weight.detach()  # openaimodel3d's time_cond_proj
    drawn = drawn_time_cond_proj(320, 256)
    assert torch.equal(drawn, official)
    assert drawn.abs().max() <= 1 / 16 and drawn.std().item() == pytest.approx(1 / 16 / math.sqrt(3), rel=0.02)


def test_time_cond_proj_file_tensor_or_state_dict(tmp_path):
    weight = torch.randn(32, 256)
    torch.save(weight, tmp_path / "w.pt")
    save_file({"model.diffusion_model.time_cond_proj.weight": weight}, tmp_path / "w.safetensors")
    for name in ("w.pt", "w.safetensors"):
        assert torch.equal(read_time_cond_proj(tmp_path / name, (32, 256)), weight)
    with pytest.raises(CheckpointError, match=r"shape \(32, 256\); expected \(64, 256\)"):
        read_time_cond_proj(tmp_path / "w.pt", (64, 256))


@pytest.mark.parametrize("variant, turbo, checkpoint, message", [
    ("tiny-t2v", TurboWeights(lora=Path("l.pt")), Path("m.ckpt"), "takes no T2V-Turbo files.*found --lora"),
    ("tiny-t2v-turbo", TurboWeights(unet=Path("u.pt")), Path("m.ckpt"), "--unet is T2V-Turbo v2's; found --unet"),
    ("tiny-t2v-turbo-v2", TurboWeights(lora=Path("l.pt")), Path("m.ckpt"), "T2V-Turbo v1's; found --lora"),
    ("tiny-t2v-turbo", TurboWeights(), Path("m.ckpt"), "needs --lora unet_lora.pt"),
    ("tiny-t2v-turbo-v2", TurboWeights(), Path("m.ckpt"), "needs --unet unet_mg.pt"),
    ("tiny-t2v-turbo", TurboWeights(lora=Path("l.pt")), None, "--lora needs --checkpoint"),
])
def test_options_that_do_not_fit_the_variant_are_refused(variant, turbo, checkpoint, message):
    with pytest.raises(CheckpointError, match=message):
        check_options(tiny_variants()[variant], turbo, checkpoint)


def _vc2_checkpoint(config, path: Path) -> dict[str, torch.Tensor]:
    """A Lightning-layout checkpoint as VideoCrafter2 ships it: every component, no Turbo projections."""
    state = {}
    for name, module in build_modules(config, None, trust=False, seed=3).items():
        prefix = component_spec(config, name).prefix
        state.update({prefix + k: v for k, v in module.state_dict().items()
                      if not (name == "unet" and k in TURBO_KEYS)})
    torch.save({"state_dict": state}, path)
    return state


def _random_lora(config) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [0.1 * torch.randn(shape, generator=generator)
            for _, module in lora_targets(_meta_unet(config.unet)) for shape in expected_shapes(module)]


def test_cli_exports_v1_with_lora_and_records_time_cond_proj(tmp_path):
    config = tiny_variants()["tiny-t2v-turbo"]
    state = _vc2_checkpoint(config, tmp_path / "model.ckpt")
    lora = _random_lora(config)
    torch.save(lora, tmp_path / "unet_lora.pt")
    out = tmp_path / "bundle"
    assert main(["videocrafter1", "--variant", "tiny-t2v-turbo", "--checkpoint", str(tmp_path / "model.ckpt"),
                 "--lora", str(tmp_path / "unet_lora.pt"), "--out", str(out)]) == 0
    note = Bundle(out).manifest.note
    assert "unet_lora.pt merged into the UNet" in note and f"under seed {TIME_COND_PROJ_SEED}" in note

    unet = build_modules(config, tmp_path / "model.ckpt", trust=False, seed=0,
                         turbo=TurboWeights(lora=tmp_path / "unet_lora.pt"))["unet"]
    names = [name for name, _ in lora_targets(unet)]
    k = names.index("time_cond_proj")
    base = drawn_time_cond_proj(32, 256)
    assert torch.allclose(unet.time_cond_proj.weight, base + lora[2 * k] @ lora[2 * k + 1], atol=1e-6)
    w = state["model.diffusion_model.out.2.weight"]
    up, down = lora[-2], lora[-1]
    assert torch.allclose(unet.out[2].weight, w + (up.flatten(1) @ down.flatten(1)).reshape(w.shape), atol=1e-6)
    assert torch.equal(unet.out[2].bias, state["model.diffusion_model.out.2.bias"])
    on_disk = read_checkpoint(tmp_path / "model.ckpt")["model.diffusion_model.out.2.weight"]
    assert torch.equal(on_disk, w)  # merged in place on a private memory map: the file is unchanged


def test_misfit_lora_leaves_no_bundle(tmp_path):
    config = tiny_variants()["tiny-t2v-turbo"]
    _vc2_checkpoint(config, tmp_path / "model.ckpt")
    torch.save(_random_lora(config)[:-1], tmp_path / "unet_lora.pt")
    out = tmp_path / "bundles" / "turbo"
    with pytest.raises(LoraError, match="holds .* tensors; expected"):
        export_bundle(config, out, checkpoint=tmp_path / "model.ckpt", log=lambda _: None,
                      turbo=TurboWeights(lora=tmp_path / "unet_lora.pt"))
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())


def _official_v2():
    """The official tiny v2 UNet's config and key manifest (tests/videocrafter1/golden, made by the official code)."""
    manifest = json.loads((GOLDEN / "t2v_turbo_v2_tiny.unet.json").read_text())
    config = tiny_variants()["tiny-t2v-turbo-v2"]
    config.unet = manifest["config"]
    return config, manifest["keys"]


def test_v2_unet_file_replaces_the_checkpoint_unet_strictly(tmp_path):
    config, keys = _official_v2()
    _vc2_checkpoint(config, tmp_path / "model.ckpt")
    generator = torch.Generator().manual_seed(7)
    unet_file = {k: torch.randn(shape, generator=generator).half() for k, (shape, _) in keys.items()}
    torch.save(unet_file, tmp_path / "unet_mg.pt")
    modules = build_modules(config, tmp_path / "model.ckpt", trust=False, seed=0,
                            turbo=TurboWeights(unet=tmp_path / "unet_mg.pt"))
    own = modules["unet"].state_dict()
    assert set(own) == set(keys) and all(k in own for k in TURBO_KEYS)
    assert all(own[k].dtype == torch.float32 and torch.equal(own[k], v.float()) for k, v in unet_file.items())

    del unet_file["combine_proj.weight"]
    unet_file["extra.weight"] = torch.zeros(1)
    torch.save(unet_file, tmp_path / "unet_no_mg.pt")
    out = tmp_path / "bundle"
    with pytest.raises(CheckpointError, match=r"--unet .*unet_no_mg.pt: .*1 missing keys: combine_proj.weight; "
                                              r"1 unexpected keys: extra.weight"):
        export_bundle(config, out, checkpoint=tmp_path / "model.ckpt", log=lambda _: None,
                      turbo=TurboWeights(unet=tmp_path / "unet_no_mg.pt"))
    assert not out.exists()

