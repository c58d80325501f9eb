"""Seeded random weights for the ``tiny`` presets and released-size dry runs.

Every parameter gets non-zero values (so no code path hides behind a zero-initialised
layer, e.g. the official zero-initialised ``proj_out`` convolutions): weights are
normal with a fan-in scale, biases small, norm scales near one. Buffers (attention
masks, fixed logit scales) keep the values their module gave them.
"""
from __future__ import annotations

import math

import torch


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.named_parameters()):
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            is_norm = any(tag in name for tag in ("norm", "ln_", "ln.", "_ln")) and tensor.dim() == 1
            if tensor.dim() == 0:
                value = tensor.detach().clone().float()  # scalars such as logit scales keep their init
            elif is_norm and leaf == "weight":
                value = 1.0 + 0.1 * noise
            elif tensor.dim() == 1:
                value = 0.02 * noise
            else:
                fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
                value = noise / math.sqrt(max(fan_in, 1))
            tensor.copy_(value.to(tensor.dtype))
    return module
