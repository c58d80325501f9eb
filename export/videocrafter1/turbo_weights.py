"""Where a T2V-Turbo export takes its UNet weights: VideoCrafter2's ``model.ckpt`` plus the official Turbo files.

- **v1** (``t2v-turbo-vc2``): ``--lora unet_lora.pt``, the official LoRA list, merged into VideoCrafter2's UNet
  (:mod:`export.videocrafter1.lora`). ``time_cond_proj`` (Linear 256 -> 320, no bias) is in neither file: the
  official app builds it with PyTorch's default ``nn.Linear`` init from an unseeded generator, so its base weight
  differs at every launch (the LoRA's ``up @ down`` is added to it). We draw the same distribution
  (``kaiming_uniform_``, ``a=sqrt(5)``) under a fixed, recorded seed, or take ``--time-cond-proj FILE``
  (e.g. the base an official run drew and saved), and the bundle's note says which.
- **v2** (``t2v-turbo-v2``): ``--unet unet_mg.pt`` (or ``unet_no_mg.pt``), a whole UNet state dict with official
  key names and no prefix, loaded strictly as the official app does; it replaces the checkpoint's UNet.

The text encoder and the VAE always come from ``model.ckpt``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from export.checkpoint import (CheckpointError, fit_problem, meta_parameters, read_checkpoint, read_torch_file,
                               refuse)
from export.videocrafter1.graphs import component_spec
from export.videocrafter1.lora import check_lora, merge_lora_, read_lora
from export.videocrafter1.presets import VariantConfig

UNET = "unet"
TIME_COND_PROJ = "time_cond_proj.weight"
TIME_COND_PROJ_SEED = 0  # the seed the default time_cond_proj base is drawn under (recorded in the bundle's note)


@dataclass(frozen=True)
class TurboWeights:
    """The T2V-Turbo files given on the command line (all None for other variants)."""

    lora: Path | None = None  # v1: the official unet_lora.pt
    unet: Path | None = None  # v2: the official unet_mg.pt / unet_no_mg.pt
    time_cond_proj: Path | None = None  # v1: a saved time_cond_proj base (default: drawn under TIME_COND_PROJ_SEED)

    def flags(self) -> list[str]:
        return [f"--{name.replace('_', '-')}" for name, path in vars(self).items() if path is not None]


def turbo_version(config: VariantConfig) -> str | None:
    """``"v1"`` (time_cond_proj only: LoRA), ``"v2"`` (with motion_cond_proj: full UNet) or None (not Turbo)."""
    if config.unet.get("motion_cond_proj_dim"):
        return "v2"
    return "v1" if config.unet.get("time_cond_proj_dim") else None


def check_options(config: VariantConfig, turbo: TurboWeights, checkpoint: Path | None) -> None:
    """Refuse Turbo files on a variant that does not take them, and a Turbo checkpoint export without them."""
    version, flags = turbo_version(config), turbo.flags()
    wrong = {None: flags, "v1": [f for f in flags if f == "--unet"],
             "v2": [f for f in flags if f in ("--lora", "--time-cond-proj")]}[version]
    if wrong:
        takes = {None: "no T2V-Turbo files (those are for --variant t2v-turbo-vc2 or t2v-turbo-v2)",
                 "v1": "--lora unet_lora.pt (and optionally --time-cond-proj); --unet is T2V-Turbo v2's",
                 "v2": "--unet unet_mg.pt; --lora and --time-cond-proj are T2V-Turbo v1's"}[version]
        raise CheckpointError(f"{config.name} takes {takes}; found {' '.join(wrong)}")
    if flags and checkpoint is None:
        raise CheckpointError(f"{' '.join(flags)} needs --checkpoint (VideoCrafter2's model.ckpt, which gives the "
                              f"text encoder and the VAE)")
    needed = {"v1": ("lora", "--lora unet_lora.pt (T2V-Turbo v1 is VideoCrafter2's UNet plus this LoRA)"),
              "v2": ("unet", "--unet unet_mg.pt (T2V-Turbo v2's own UNet; model.ckpt's is VideoCrafter2's)")}
    if checkpoint is not None and version in needed and getattr(turbo, needed[version][0]) is None:
        raise CheckpointError(f"{config.name} from a checkpoint needs {needed[version][1]}; found no such flag")


def drawn_time_cond_proj(out_features: int, in_features: int, seed: int = TIME_COND_PROJ_SEED) -> torch.Tensor:
    """``nn.Linear(in_features, out_features, bias=False)``'s default weight (``kaiming_uniform_`` with
    ``a=sqrt(5)``: U(-1/sqrt(in), 1/sqrt(in))) drawn from a generator seeded with ``seed``: the values that
    Linear gets when built right after ``torch.manual_seed(seed)``."""
    weight = torch.empty(out_features, in_features)
    return nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(seed))


def read_time_cond_proj(path: Path, shape: tuple[int, int], *, trust: bool = False) -> torch.Tensor:
    """A saved ``time_cond_proj`` base: a torch file holding the tensor, or a state dict (torch or safetensors)
    with one ``...time_cond_proj.weight`` key."""
    tensor = None if path.suffix == ".safetensors" else read_torch_file(path, trust=trust)
    if not isinstance(tensor, torch.Tensor):
        state = read_checkpoint(path, trust=trust)
        keys = [k for k in state if k == TIME_COND_PROJ or k.endswith("." + TIME_COND_PROJ)]
        if len(keys) != 1:
            raise CheckpointError(f"--time-cond-proj {path}: expected a tensor or exactly one '{TIME_COND_PROJ}' "
                                  f"key; found {len(keys)} such keys among {len(state)}")
        tensor = state[keys[0]]
    if tuple(tensor.shape) != shape:
        raise CheckpointError(f"--time-cond-proj {path}: shape {tuple(tensor.shape)}; expected {shape} "
                              f"(model_channels, time_cond_proj_dim)")
    return tensor.float()


def time_cond_proj_source(turbo: TurboWeights) -> str:
    """Where the v1 ``time_cond_proj`` base comes from, in the words of the bundle's note."""
    if turbo.time_cond_proj is not None:
        return f"time_cond_proj base from {turbo.time_cond_proj}"
    return (f"time_cond_proj base drawn as nn.Linear's default init (kaiming_uniform_, a=sqrt(5)) under seed "
            f"{TIME_COND_PROJ_SEED}; the official app draws it unseeded, so no value is the official one")


def describe(config: VariantConfig, turbo: TurboWeights) -> str:
    """The Turbo part of a bundle's weight source (empty for other variants)."""
    version = turbo_version(config)
    if version == "v1" and turbo.lora is not None:
        return f"T2V-Turbo v1 LoRA {turbo.lora} merged into the UNet; {time_cond_proj_source(turbo)}"
    if version == "v2" and turbo.unet is not None:
        return f"UNet from {turbo.unet} (T2V-Turbo v2)"
    return ""


def _empty_unet(config: VariantConfig) -> nn.Module:
    with meta_parameters():
        return component_spec(config, UNET).build()


def _time_cond_proj(config: VariantConfig, turbo: TurboWeights, trust: bool) -> torch.Tensor:
    shape = (config.unet["model_channels"], config.unet["time_cond_proj_dim"])
    if turbo.time_cond_proj is not None:
        return read_time_cond_proj(turbo.time_cond_proj, shape, trust=trust)
    return drawn_time_cond_proj(*shape)


def check_turbo_files(config: VariantConfig, turbo: TurboWeights, *, trust: bool) -> None:
    """Before any export: each Turbo file read and checked against the UNet (on the meta device, nothing merged)."""
    version = turbo_version(config)
    unet = _empty_unet(config)
    if version == "v1" and turbo.lora is not None:
        check_lora(unet, read_lora(turbo.lora, trust=trust), what=f"--lora {turbo.lora}")
        _time_cond_proj(config, turbo, trust)
    if version == "v2" and turbo.unet is not None:
        problem = fit_problem(unet, read_checkpoint(turbo.unet, trust=trust), what=f"{config.name} unet")
        refuse([f"--unet {turbo.unet}: {problem}"] if problem else [])


def read_state(config: VariantConfig, checkpoint: Path, turbo: TurboWeights, *, trust: bool,
               component: str | None = None, merge_lora: bool = True) -> dict[str, torch.Tensor]:
    """``checkpoint``'s tensors (official prefixes) with the UNet's as T2V-Turbo's app loads them: v2's UNet
    file in place of the checkpoint's, or v1's ``time_cond_proj`` base added and (``merge_lora``) the LoRA merged
    in place, in float32. For a ``component`` other than the UNet the Turbo files are not read."""
    check_options(config, turbo, checkpoint)
    state = read_checkpoint(checkpoint, trust=trust)
    version = turbo_version(config)
    if version is None or component not in (None, UNET):
        return state
    prefix = component_spec(config, UNET).prefix
    if version == "v2":
        unet: Mapping[str, torch.Tensor] = read_checkpoint(turbo.unet, trust=trust)
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        state.update({prefix + k: v for k, v in unet.items()})
        return state
    state[prefix + TIME_COND_PROJ] = _time_cond_proj(config, turbo, trust)
    if merge_lora:
        merge_lora_(state, _empty_unet(config), read_lora(turbo.lora, trust=trust), prefix=prefix,
                    what=f"--lora {turbo.lora}")
    return state
