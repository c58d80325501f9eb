"""T2V-Turbo's LCM sampler in numpy (``scheduler.t2v_turbo_scheduler.T2VTurboScheduler`` as
``T2VTurboVC2Pipeline`` runs it).

A consistency-distilled UNet denoises in a few steps and takes no guidance branch: the guidance scale
w is an input, the sinusoidal embedding of w·1000 (:func:`w_embedding`, fed as ``timestep_cond``).
Each step maps the sample to the consistency function's estimate ``denoised`` (boundary scalings
c_skip, c_out of t/0.1 with σ_data 0.5) and, before the next step, noises it again to that step's
timestep with fresh N(0, I) noise. The result of the last step is its ``denoised``.

The schedule is the scheduler's own, bit for bit: β from a float32 linspace of sqrt(β), squared in
float32 (not the model's float64 β that DDIM uses), ᾱ their cumulative product as torch computes it;
the latent scale schedule of VideoCrafter2 (``use_scale``) does not apply.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from runtime.videocrafter1.constants import DiffusionSchedule

SIGMA_DATA = 0.5  # the boundary condition's σ_data
TIMESTEP_SCALING = 10.0  # t / 0.1: the boundary condition is almost a delta at t = 0
EMBEDDING_DIM = 256  # T2V-Turbo's guidance (and motion) embedding width
EMBEDDING_SCALE = 1000.0  # the guidance scale is embedded as w·1000

# noise=: the per-step noise, a sequence (one array per step that draws, the last step's is not used) or a
# callable noise(shape) -> array.
Noise = Sequence[np.ndarray] | Callable[[tuple[int, ...]], np.ndarray]


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=float32)`` as its CPU kernel computes it: a float32 step
    (end − start)/(steps − 1), then start + step·i on the first half and end − step·(steps − 1 − i) on the
    second, each a fused multiply-add (one rounding; exact in float64 for these magnitudes)."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(steps - 1))
    index = np.arange(steps, dtype=np.float64)
    first = np.float64(start32) + step * index
    second = np.float64(end32) - step * (steps - 1 - index)
    return np.where(index < steps // 2, first, second).astype(np.float32)


def lcm_alphas_cumprod(linear_start: float, linear_end: float, num_timesteps: int) -> np.ndarray:
    """ᾱ as ``T2VTurboScheduler`` computes it ("scaled_linear"): float32 β = linspace(sqrt β_0, sqrt β_N)², then
    the cumulative product of the float32 1 − β, which torch accumulates in float64 and rounds per entry."""
    betas = torch_linspace_f32(linear_start ** 0.5, linear_end ** 0.5, num_timesteps) ** 2
    return np.cumprod((np.float32(1.0) - betas).astype(np.float64)).astype(np.float32)


def lcm_timesteps(steps: int, origin_steps: int, num_timesteps: int = 1000) -> np.ndarray:
    """The ``steps`` LCM timesteps, from the top: every (origin_steps // steps)-th of the distillation's grid
    ``c·k − 1`` (k = 1..origin_steps, c = num_timesteps // origin_steps), e.g. 4 of 50: 999, 759, 519, 279."""
    if not 1 <= origin_steps <= num_timesteps:
        raise ValueError(f"lcm_origin_steps must be in [1, {num_timesteps}], got {origin_steps}")
    if not 1 <= steps <= origin_steps:
        raise ValueError(f"LCM steps must be in [1, lcm_origin_steps = {origin_steps}], got {steps}")
    origin = np.arange(1, origin_steps + 1, dtype=np.int64) * (num_timesteps // origin_steps) - 1
    return origin[::-(origin_steps // steps)][:steps].copy()


def boundary_scalings(t: int) -> tuple[np.float32, np.float32]:
    """(c_skip, c_out) of the consistency boundary condition at timestep ``t``, in float32: c_skip as torch
    computes it; c_out within one ulp (torch's float32 square root differs from a correctly rounded one at
    38 of the 1000 timesteps)."""
    f32 = np.float32
    scaled = f32(t) * f32(TIMESTEP_SCALING)
    squared = scaled * scaled + f32(SIGMA_DATA ** 2)
    return f32(SIGMA_DATA ** 2) / squared, scaled / np.sqrt(squared)


def w_embedding(w: np.ndarray | float, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """The sinusoidal embedding ``(B, dim)`` of guidance scales ``w`` (one per row): sin then cos of
    w·1000·exp(−k·log(10000)/(dim/2 − 1)), k < dim/2, zero-padded to an odd ``dim``; float32.

    The float32 angles reach 15000 rad, so an ulp of a frequency moves them by about 1e-3: exp, sin and cos
    are taken in float64 and rounded once, as correctly rounded float32 functions (torch's) give them.
    """
    f32 = np.float32
    scaled = np.atleast_1d(np.asarray(w, dtype=np.float32)) * f32(EMBEDDING_SCALE)
    half = dim // 2
    exponent = f32(np.log(f32(10000.0))) / f32(half - 1)
    freqs = np.exp((np.arange(half, dtype=np.float32) * -exponent).astype(np.float64)).astype(np.float32)
    angles = (scaled[:, None] * freqs[None, :]).astype(np.float64)
    emb = np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)
    if dim % 2:
        emb = np.pad(emb, ((0, 0), (0, 1)))
    return emb.astype(np.float32)


def motion_scale(t: int, motion_gs: float, percentage: float, num_timesteps: int = 1000) -> float:
    """T2V-Turbo v2's motion guidance at timestep ``t``: ``motion_gs`` over the first ``percentage`` of the
    timesteps (t >= num_timesteps·(1 − percentage)), 0 after (whose embedding is not zero: cos 0 = 1)."""
    return motion_gs if t >= num_timesteps * (1 - percentage) else 0.0


def lcm_step(model_output: np.ndarray, sample: np.ndarray, alpha: np.float32, t: int) -> np.ndarray:
    """The consistency estimate ``denoised`` from the ε prediction at ``t`` (ᾱ_t = ``alpha``), float32."""
    f32 = np.float32
    pred_x0 = (sample - np.sqrt(f32(1.0) - alpha) * model_output) / np.sqrt(alpha)
    c_skip, c_out = boundary_scalings(t)
    return c_out * pred_x0 + c_skip * sample


class LCMSampler:
    """The LCM sampler in the diffusers shape (``set_timesteps``, then ``step``) on a bundle's diffusion schedule.

    ``step`` returns the next step's noised sample, and ``denoised`` itself at the last step. The noise
    between steps is ``noise`` (see :data:`Noise`), else ``rng.standard_normal(shape, float32)``.
    """

    name = "lcm"

    def __init__(self, diffusion: DiffusionSchedule, *, origin_steps: int, rng: np.random.Generator | None = None,
                 noise: Noise | None = None):
        self.num_timesteps = diffusion.num_timesteps
        self.alphas_cumprod = lcm_alphas_cumprod(diffusion.linear_start, diffusion.linear_end, self.num_timesteps)
        self.origin_steps, self.rng, self.noise = origin_steps, rng, noise
        self._timesteps: np.ndarray | None = None

    def set_timesteps(self, steps: int) -> None:
        self._timesteps = lcm_timesteps(steps, self.origin_steps, self.num_timesteps)
        draws = len(self._timesteps) - 1
        if self.noise is None and self.rng is None and draws:
            raise ValueError(f"lcm: {steps} steps draw noise between steps: pass rng=np.random.default_rng(seed) "
                             "or noise=")
        if self.noise is not None and not callable(self.noise) and len(self.noise) < draws:
            raise ValueError(f"lcm: noise has {len(self.noise)} arrays, expected one per step but the last "
                             f"({draws} for {steps} steps)")
        self.step_index = 0

    @property
    def timesteps(self) -> np.ndarray:
        if self._timesteps is None:
            raise RuntimeError("lcm: call set_timesteps(steps) before sampling")
        return self._timesteps

    def _next_noise(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.noise is None:
            return self.rng.standard_normal(shape, dtype=np.float32)
        found = self.noise(shape) if callable(self.noise) else self.noise[self.step_index]
        if tuple(np.shape(found)) != tuple(shape):
            raise ValueError(f"lcm: noise for step {self.step_index} has shape {list(np.shape(found))}, "
                             f"expected {list(shape)}")
        return np.asarray(found, dtype=np.float32)

    def step(self, model_output: np.ndarray, t: int, sample: np.ndarray) -> np.ndarray:
        index = self.step_index
        if index >= len(self.timesteps) or int(t) != self.timesteps[index]:
            expected = self.timesteps[index] if index < len(self.timesteps) else "none"
            raise ValueError(f"lcm: expected timestep {expected}, got {t}; call set_timesteps to restart")
        denoised = lcm_step(model_output, sample, self.alphas_cumprod[int(t)], int(t))
        if index == len(self.timesteps) - 1:
            self.step_index += 1
            return denoised.astype(np.float32)
        alpha_next = self.alphas_cumprod[int(self.timesteps[index + 1])]
        noise = self._next_noise(sample.shape)
        self.step_index += 1
        f32 = np.float32
        return (np.sqrt(alpha_next) * denoised + np.sqrt(f32(1.0) - alpha_next) * noise).astype(np.float32)
