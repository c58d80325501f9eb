"""The diffusion schedule stored in a released checkpoint against the one the bundle will sample with.

The official ``LatentDiffusion`` registers its DDPM tables as buffers, so a Lightning
``state_dict`` carries ``betas``, ``alphas_cumprod``, … and, with ``use_scale``,
``scale_arr`` beside the modules. A checkpoint fine-tuned with another schedule must not be
sampled with the variant's: :func:`check_schedule` compares ``alphas_cumprod`` and
``scale_arr`` with the runtime's :class:`~runtime.videocrafter1.ddim.DDIMSchedule` for the
bundle's sampler constants and refuses a mismatch, showing both values.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from export.checkpoint import CheckpointError
from runtime.videocrafter1.ddim import SCALE_KEYS, DDIMSchedule

# The DDPM buffers of the official LatentDiffusion (scale_arr only with use_scale).
DDPM_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                "posterior_mean_coef1", "posterior_mean_coef2", "scale_arr")


def bundle_schedule(sampler: Mapping) -> DDIMSchedule:
    """The schedule the runtime builds from a bundle's ``pipeline.sampler`` constants (any step count will do:
    ``alphas_cumprod`` and ``scale_arr`` do not depend on it)."""
    return DDIMSchedule.make(1, eta=0.0, linear_start=sampler["linear_start"], linear_end=sampler["linear_end"],
                             num_timesteps=sampler["num_timesteps"],
                             **{k: sampler[k] for k in SCALE_KEYS if k in sampler})


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


def check_schedule(state: Mapping[str, torch.Tensor], sampler: Mapping, *, what: str) -> list[str]:
    """Compare the checkpoint's ``alphas_cumprod`` and ``scale_arr`` (when present) with the bundle's schedule;
    raise :class:`CheckpointError` on a mismatch. Returns the names of the buffers checked."""
    schedule = bundle_schedule(sampler)
    settings = ", ".join(f"{k} {sampler[k]}" for k in ("linear_start", "linear_end", "num_timesteps", *SCALE_KEYS)
                         if k in sampler)
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
