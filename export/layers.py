"""Layers shared by several families' model code, named as their checkpoints name them."""
from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """``fc1`` -> exact GELU -> ``fc2`` (the timm-style MLP of Swin, AiT's transformer and ImageBind)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
