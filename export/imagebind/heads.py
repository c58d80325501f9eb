"""ImageBind's heads (tokens -> one vector) and postprocessors (normalise, then scale).

Indices inside the ``nn.Sequential``s match the official ones, so the keys are
``<m>.0.*``/``<m>.2.weight`` (``<m>.3.weight`` for IMU, after its dropout),
``text.proj.{0,1}.*`` and ``<m>.1.log_logit_scale``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

HEAD_LN_EPS = 1e-6
MAX_LOGIT_SCALE = 100.0
IMU_HEAD_DROPOUT = 0.5


class SelectElement(nn.Module):
    """Token ``index`` of (N, L, D) -> (N, D)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index, ...]


class SelectEOSAndProject(nn.Module):
    """Text head: the token at each row's pooling index (argmax of ids) -> LayerNorm -> Linear.

    The gather is a flat ``index_select`` (one ONNX Gather) on rows ``n * L + index[n]``.
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=HEAD_LN_EPS), nn.Linear(dim, out_dim, bias=False))

    def forward(self, x: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[0], device=x.device) * x.shape[1] + pool_index
        return self.proj(x.flatten(0, 1).index_select(0, rows))


def cls_head(dim: int, out_dim: int, dropout: float | None = None) -> nn.Sequential:
    """LayerNorm -> cls token -> [Dropout] -> Linear (no bias)."""
    layers = [nn.LayerNorm(dim, eps=HEAD_LN_EPS), SelectElement(0)]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dim, out_dim, bias=False))
    return nn.Sequential(*layers)


class Normalize(nn.Module):
    """L2 normalisation over the last dim (``x / max(|x|, 1e-12)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1, p=2)


class LearnableLogitScaling(nn.Module):
    """Multiply by ``min(exp(log_logit_scale), 100)``; a Parameter when learnable, else a persistent buffer."""

    def __init__(self, logit_scale_init: float, learnable: bool):
        super().__init__()
        log_scale = torch.tensor(math.log(logit_scale_init))
        if learnable:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_logit_scale", log_scale, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.log_logit_scale.exp(), max=MAX_LOGIT_SCALE) * x


def postprocessor(logit_scale_init: float | None, learnable: bool = False) -> nn.Module:
    """Normalize only (``None``), or Normalize followed by the logit scaling."""
    if logit_scale_init is None:
        return Normalize()
    return nn.Sequential(Normalize(), LearnableLogitScaling(logit_scale_init, learnable))
