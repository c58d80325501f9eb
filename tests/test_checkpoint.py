"""Safe checkpoint loading: trusted formats load, pickles need opting in, mismatches are listed."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from export.checkpoint import SHOWN_KEYS, CheckpointError, load_checkpoint, load_into, meta_parameters, read_checkpoint


class _Payload:
    """Something weights_only=True must refuse to unpickle."""


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


def test_lightning_checkpoint_with_prefix_loads(tmp_path):
    source = _net()
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.diffusion_model.{k}": v for k, v in source.state_dict().items()},
                "epoch": 3}, path)
    target = load_checkpoint(_net(), path, prefix="model.diffusion_model.")
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_safetensors_loads(tmp_path):
    source = _net()
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    target = load_checkpoint(_net(), tmp_path / "w.safetensors")
    assert torch.equal(target[0].weight, source[0].weight)


def test_pickle_needing_code_is_refused_unless_trusted(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": _net().state_dict(), "extra": _Payload()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        read_checkpoint(path)
    assert set(read_checkpoint(path, trust=True)) == set(_net().state_dict())


def test_mismatch_lists_first_keys_and_count(tmp_path):
    big = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(30)])
    save_file({"other.weight": torch.zeros(1)}, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(big, tmp_path / "w.safetensors", what="tiny net")
    message = str(info.value)
    assert "60 missing keys" in message and f"and {60 - SHOWN_KEYS} more" in message
    assert "1 unexpected keys: other.weight" in message and "tiny net" in message


def test_wrong_shapes_are_named(tmp_path):
    state = _net().state_dict()
    state["0.weight"] = torch.zeros(5, 3)
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"0.weight \(checkpoint \(5, 3\), model \(4, 3\)\)"):
        load_checkpoint(_net(), tmp_path / "w.safetensors")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", bytes(range(256)) * 10])
def test_garbage_files_give_clean_errors(tmp_path, content):
    for name in ("x.ckpt", "x.safetensors"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError):
            read_checkpoint(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_meta_built_module_takes_the_checkpoint_tensors_without_copying(tmp_path):
    source = _net()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "model.ckpt")
    state = read_checkpoint(tmp_path / "model.ckpt")
    with meta_parameters():
        target = _net()
    assert all(p.is_meta for p in target.parameters())
    load_into(target, state)
    assert target[0].weight.data_ptr() == state["0.weight"].data_ptr()  # the memory-mapped tensor itself
    x = torch.randn(5, 3)
    assert torch.equal(target(x), source(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_load_as_float32(tmp_path, dtype):
    source = _net()
    torch.save({k: v.to(dtype) for k, v in source.state_dict().items()}, tmp_path / "half.pth")
    with meta_parameters():
        target = _net()
    load_checkpoint(target, tmp_path / "half.pth")
    assert target[0].weight.dtype == torch.float32
    assert torch.equal(target[0].weight, source[0].weight.detach().to(dtype).float())


def test_meta_parameters_keeps_computed_buffers():
    class WithMask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.register_buffer("mask", torch.tril(torch.ones(3, 3)), persistent=False)

    with meta_parameters():
        module = WithMask()
    assert module.linear.weight.is_meta and torch.equal(module.mask, torch.tril(torch.ones(3, 3)))
    assert not torch.nn.Linear(2, 2).weight.is_meta  # only inside the context


def test_legacy_format_checkpoint_loads_without_mmap(tmp_path):
    source = _net()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    target = load_checkpoint(_net(), tmp_path / "old.ckpt")
    assert torch.equal(target[1].bias, source[1].bias)
