"""T2V-Turbo v1's LoRA (``unet_lora.pt``): read it, check it fits the UNet, merge it into the weights.

The official file (``utils/lora.py`` ``save_lora_weight``) is a plain list of tensors: for every ``nn.Linear``,
``nn.Conv2d`` and ``nn.Conv3d`` of the UNet, in ``named_modules()`` order (``nn.Conv1d`` is not a target), its
``up`` then its ``down``. The official app injects them at rank ``min(64, in, out)`` with scale 1 and collapses
them into the weights before sampling (``collapse_lora``: ``W += up @ down``, convolutions flattened to matrices
and reshaped back). We do the same once, at export, on the loaded float32 state, so the bundle holds one UNet
graph and no LoRA runs at inference time.

The official loader takes tensors from the front of the list and ignores any left over; here the whole file must
fit, and the first tensor that does not is named before anything is merged.
"""
from __future__ import annotations

from pathlib import Path
from typing import MutableMapping, Sequence

import torch
from torch import nn

from export.checkpoint import CheckpointError, read_torch_file

LORA_RANK = 64  # the official app's r (LoraHandler.add_lora_to_model(..., r=64))
TARGET_TYPES = (nn.Linear, nn.Conv2d, nn.Conv3d)


class LoraError(CheckpointError):
    """A LoRA file that is not the official list of tensors or does not fit the UNet."""


def lora_targets(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules the official injection replaces, in the file's order: exactly ``nn.Linear``, ``nn.Conv2d`` or
    ``nn.Conv3d`` (the official injector skips subclasses), in ``named_modules()`` pre-order."""
    return [(name, module) for name, module in unet.named_modules() if type(module) in TARGET_TYPES]


def expected_shapes(module: nn.Module, rank: int = LORA_RANK) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(up, down)`` shapes for one target: Linear ``(out, r)``, ``(r, in)``; a convolution ``(out, r, 1, ...)``
    and ``(r, in, *kernel)``; with ``r = min(rank, in, out)`` as the official injected layers clamp it."""
    out_features, in_features, *kernel = module.weight.shape
    r = min(rank, in_features, out_features)
    return (out_features, r, *[1] * len(kernel)), (r, in_features, *kernel)


def read_lora(path: str | Path, *, trust: bool = False) -> list[torch.Tensor]:
    """The list of tensors of an official ``unet_lora.pt`` (read with ``weights_only=True`` unless ``trust``)."""
    tensors = read_torch_file(path, trust=trust)
    if not isinstance(tensors, (list, tuple)):
        hint = " (a dict is a state dict: T2V-Turbo v2's unet_*.pt goes to --unet)" if isinstance(tensors, dict) else ""
        raise LoraError(f"{path}: expected the official LoRA file, a list of up/down tensors; found a "
                        f"{type(tensors).__name__}{hint}")
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            found = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise LoraError(f"{path}: entry {index} of the LoRA list is not a floating-point tensor (found {found})")
    return list(tensors)


def lora_problem(unet: nn.Module, tensors: Sequence[torch.Tensor], *, rank: int = LORA_RANK) -> str | None:
    """Why ``tensors`` do not fit ``unet`` (the count, or the first up/down whose shape is wrong), or None.
    Reads only shapes, so ``unet`` may be built on the meta device."""
    targets = lora_targets(unet)
    count = (f"the LoRA file holds {len(tensors)} tensors; expected {2 * len(targets)} (an up and a down for "
             f"each of the UNet's {len(targets)} Linear/Conv2d/Conv3d modules)")
    for number, (name, module) in enumerate(targets):
        up, down = expected_shapes(module, rank)
        for index, role, shape in ((2 * number, "up", up), (2 * number + 1, "down", down)):
            if index >= len(tensors):
                return f"{count}; the first one missing is tensor {index}, the {role} of {name}"
            found = tuple(tensors[index].shape)
            if found != shape:
                return (f"LoRA tensor {index} ({role} of {name}, a {type(module).__name__} with weight "
                        f"{tuple(module.weight.shape)}) has shape {found}; expected {shape} (rank {down[0]})")
    if len(tensors) != 2 * len(targets):
        return f"{count}; tensors {2 * len(targets)} to {len(tensors) - 1} fit no module"
    return None


def check_lora(unet: nn.Module, tensors: Sequence[torch.Tensor], *, what: str, rank: int = LORA_RANK) -> None:
    """Raise :class:`LoraError` naming the first misfit when ``tensors`` do not fit ``unet``."""
    problem = lora_problem(unet, tensors, rank=rank)
    if problem:
        raise LoraError(f"{what}: {problem}. Is this the unet_lora.pt of T2V-Turbo v1 (VideoCrafter2)?")


@torch.no_grad()
def merge_lora_(state: MutableMapping[str, torch.Tensor], unet: nn.Module, tensors: Sequence[torch.Tensor], *,
                prefix: str = "", what: str = "unet", rank: int = LORA_RANK) -> None:
    """Add ``up @ down`` to each target's weight in ``state`` (keys ``prefix + module name + '.weight'``), in
    place and in float32, as ``collapse_lora`` does. ``unet`` (meta device is fine) gives the targets; the
    whole list is checked first, so a misfit leaves ``state`` untouched."""
    check_lora(unet, tensors, what=what, rank=rank)
    for number, (name, _) in enumerate(lora_targets(unet)):
        key = f"{prefix}{name}.weight"
        weight = state[key].float()
        up, down = tensors[2 * number].float(), tensors[2 * number + 1].float()
        weight.add_((up.flatten(1) @ down.flatten(1)).reshape(weight.shape))
        state[key] = weight
