"""The diffusion schedule stored in a released checkpoint against the one the bundle will sample with.

The official ``LatentDiffusion`` registers its DDPM tables as buffers, so a Lightning
``state_dict`` carries ``betas``, ``alphas_cumprod``, … and, with ``use_scale``,
``scale_arr`` beside the modules. A checkpoint fine-tuned with another schedule must not be
sampled with the variant's: :func:`check_schedule` compares ``alphas_cumprod`` and
``scale_arr`` with the runtime's :class:`~runtime.videocrafter1.ddim.DDIMSchedule` for the
bundle's diffusion schedule and refuses a mismatch, showing both values.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Mapping

import numpy as np
import torch

from export.checkpoint import CheckpointError
from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.ddim import DDIMSchedule


def bundle_schedule(diffusion: DiffusionSchedule) -> DDIMSchedule:
    """The schedule the runtime builds from a bundle's diffusion schedule (any step count will do:
    ``alphas_cumprod`` and ``scale_arr`` do not depend on it)."""
    return DDIMSchedule.make(1, eta=0.0, **asdict(diffusion))


def _mismatch(name: str, stored: torch.Tensor, expected: np.ndarray | None) -> str | None:
    """Why ``stored`` is not ``expected`` within the rounding of the checkpoint's dtype, or None."""
    if expected is None:
        return (f"the checkpoint carries {name} ({tuple(stored.shape)}, so it was trained with use_scale) but the "
                f"bundle's schedule has none")
    found = stored.detach().to(torch.float64).numpy()
    if found.shape != expected.shape:
        return f"{name}: checkpoint shape {found.shape}, bundle schedule shape {expected.shape}"
    tolerance = float(torch.finfo(stored.dtype).eps) if stored.is_floating_point() else 0.0
    error = np.abs(found - expected)
    bad = np.flatnonzero(error > tolerance * np.abs(expected) + np.finfo(np.float32).eps)
    if not bad.size:
        return None
    i = int(bad[0])
    return (f"{name} differs at {bad.size} of {expected.size} timesteps; first at t={i}: checkpoint {found[i]:.8g}, "
            f"bundle schedule {expected[i]:.8g} (largest difference {error.max():.3g})")


def check_schedule(state: Mapping[str, torch.Tensor], diffusion: DiffusionSchedule, *, what: str) -> list[str]:
    """Compare the checkpoint's ``alphas_cumprod`` and ``scale_arr`` (when present) with the bundle's schedule;
    raise :class:`CheckpointError` on a mismatch. Returns the names of the buffers checked."""
    schedule = bundle_schedule(diffusion)
    settings = ", ".join(f"{k} {v}" for k, v in diffusion.to_dict().items())
    expected = {"alphas_cumprod": schedule.alphas_cumprod.astype(np.float64),
                "scale_arr": None if schedule.scale_arr is None else schedule.scale_arr.astype(np.float64)}
    checked, problems = [], []
    for name, values in expected.items():
        if name not in state:
            continue
        checked.append(name)
        problem = _mismatch(name, state[name], values)
        if problem:
            problems.append(problem)
    if problems:
        raise CheckpointError(
            f"the checkpoint's diffusion schedule does not match {what} ({settings}): " + "; ".join(problems)
            + ". Sampling it with this schedule would be wrong: pick the variant (or --config yaml) it was "
            "trained with.")
    return checked
