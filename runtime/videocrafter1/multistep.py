"""What the multistep ODE solvers (DPM-Solver++, UniPC) share: the (α, σ, λ) schedule and the step bookkeeping.

The solvers see the diffusion as ``x_t = α_t·x0 + σ_t·ε`` with λ_t = log(α_t/σ_t).
For VideoCrafter's "linear" β schedule (diffusers' ``scaled_linear``) α_t =
sqrt(ᾱ_t) and σ_t = sqrt(1 − ᾱ_t). With the latent scale schedule (``use_scale``:
I2V-512, VideoCrafter2) the official DDIM divides its x0 estimate by scale_t and
multiplies it by scale_prev on the way down: the same process with the signal
scale α_t = sqrt(ᾱ_t)·scale_t and the noise scale unchanged, which is how the
solvers here take it (their first-order step is then exactly that DDIM with eta 0).

The timesteps are spaced as diffusers' ``linspace`` (its default for these
solvers: ``linspace(0, N−1, steps+1)`` rounded, the first ``steps`` from the top,
so every step count starts at N−1 where the initial noise belongs) or as the
official DDIM's (``leading``: ``1 + k·(N // steps)``, diffusers' ``leading`` with
``steps_offset=1`` as its DDIM has it; the start drops with fewer steps, e.g. 901
at 10 steps), exactly ``steps`` of them; or any strictly decreasing list given as
``timesteps=``. After the last timestep the
solvers land on timestep 0 (``final="sigma_min"``, where the official DDIM ends:
ᾱ_0) or on the clean latent (``final="zero"``, diffusers' default).
The per-step constants are float64; the arrays are updated in float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.ddim import alphas_cumprod, scale_array

FINALS = ("sigma_min", "zero")
SPACINGS = ("linspace", "leading")


def spaced_timesteps(steps: int, num_timesteps: int, spacing: str) -> np.ndarray:
    """``steps`` descending timesteps: ``linspace`` from num_timesteps − 1, or ``leading`` (the official DDIM's)."""
    if not 1 <= steps < num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps - 1}], got {steps}")
    if spacing == "linspace":
        return np.linspace(0, num_timesteps - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "leading":
        return (np.arange(steps - 1, -1, -1, dtype=np.int64) * (num_timesteps // steps)) + 1
    raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")


def _checked_timesteps(timesteps: Sequence[int], num_timesteps: int) -> np.ndarray:
    found = np.asarray(timesteps)
    if found.ndim != 1 or found.size == 0 or not np.issubdtype(found.dtype, np.integer):
        raise ValueError(f"timesteps must be a non-empty 1-D list of integers, got {timesteps!r}")
    if found.min() < 0 or found.max() >= num_timesteps or (np.diff(found) >= 0).any():
        raise ValueError(f"timesteps must be strictly decreasing integers in [0, {num_timesteps - 1}], "
                         f"got {found.tolist()}")
    return found.astype(np.int64)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """α, σ and λ at each timestep (index i, i < S) and at the end point (index S); float64."""

    timesteps: np.ndarray  # (S,) int64, descending: the values fed to the UNet
    alphas: np.ndarray  # (S + 1,) signal scale α
    sigmas: np.ndarray  # (S + 1,) noise scale σ (0 at the end with final="zero")
    lambdas: np.ndarray  # (S + 1,) log(α/σ) (+inf at a zero σ)

    @classmethod
    def make(cls, diffusion: DiffusionSchedule, *, steps: int | None = None, timesteps: Sequence[int] | None = None,
             spacing: str = "linspace", final: str = "sigma_min") -> "NoiseSchedule":
        """The schedule of a bundle's diffusion schedule (its β and, with ``use_scale``, the latent scale) for
        ``steps`` timesteps spaced by ``spacing``, or the given ``timesteps``."""
        if (steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of steps= and timesteps=")
        if final not in FINALS:
            raise ValueError(f"final must be one of {', '.join(FINALS)}, got {final!r}")
        d, num = diffusion, diffusion.num_timesteps
        chosen = spaced_timesteps(steps, num, spacing) if timesteps is None else _checked_timesteps(timesteps, num)
        cumprod = alphas_cumprod(d.linear_start, d.linear_end, num).astype(np.float64)
        signal = np.sqrt(cumprod)
        if d.use_scale:
            scale = scale_array(d.scale_a, d.scale_b, d.mid_step, num, d.fix_scale_bug)
            signal = signal * scale[:num].astype(np.float64)
        noise = np.sqrt(1.0 - cumprod)
        # the end point: timestep 0, or the clean latent (σ = 0, α = the scale at timestep 0)
        end_alpha, end_sigma = (signal[0], noise[0]) if final == "sigma_min" else (signal[0] / np.sqrt(cumprod[0]), 0.0)
        alphas = np.append(signal[chosen], end_alpha)
        sigmas = np.append(noise[chosen], end_sigma)
        with np.errstate(divide="ignore"):
            lambdas = np.log(alphas) - np.log(sigmas)
        schedule = cls(timesteps=chosen, alphas=alphas, sigmas=sigmas, lambdas=lambdas)
        for array in (chosen, alphas, sigmas, lambdas):
            array.setflags(write=False)
        return schedule

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


class MultistepSolver:
    """The diffusers shape: ``set_timesteps`` once per run, then ``step(model_output, t, sample)`` per timestep.

    ``model_output`` is the (guided) ε prediction; the solvers keep the x0 predictions
    of the last ``order`` steps. Subclasses implement ``_update``.
    """

    name = ""
    max_order = 1

    def __init__(self, diffusion: DiffusionSchedule, *, order: int, lower_order_final: bool = True,
                 spacing: str = "linspace", final: str = "sigma_min"):
        if not 1 <= order <= self.max_order:
            raise ValueError(f"{self.name}: order must be in [1, {self.max_order}], got {order}")
        self.diffusion, self.order, self.lower_order_final = diffusion, order, lower_order_final
        self.spacing, self.final = spacing, final
        self.schedule: NoiseSchedule | None = None

    def set_timesteps(self, steps: int | None = None, *, timesteps: Sequence[int] | None = None) -> None:
        """Build the schedule for ``steps`` spaced timesteps (or the given ones) and start a new run."""
        self.schedule = NoiseSchedule.make(self.diffusion, steps=steps, timesteps=timesteps, spacing=self.spacing,
                                           final=self.final)
        self.step_index = 0
        self.model_outputs: list[np.ndarray] = []  # x0 predictions, oldest first, at most ``order``
        self.lower_order_nums = 0

    @property
    def timesteps(self) -> np.ndarray:
        """The timesteps of this run, in sampling order."""
        if self.schedule is None:
            raise RuntimeError(f"{self.name}: call set_timesteps(steps) before sampling")
        return self.schedule.timesteps

    def convert_model_output(self, eps: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """x0 = (x − σ_s·ε) / α_s at the current step."""
        i = self.step_index
        return (sample - np.float32(self.schedule.sigmas[i]) * eps) / np.float32(self.schedule.alphas[i])

    def step(self, model_output: np.ndarray, t: int, sample: np.ndarray) -> np.ndarray:
        """The sample at the next timestep (or the end point after the last one), float32."""
        timesteps = self.timesteps
        i = self.step_index
        if i >= len(timesteps) or int(t) != timesteps[i]:
            expected = f"timestep {timesteps[i]} (step {i + 1} of {len(timesteps)})" if i < len(timesteps) \
                else f"no more steps ({len(timesteps)} done)"
            raise ValueError(f"{self.name}: expected {expected}, got timestep {t}; call set_timesteps to restart")
        x0 = self.convert_model_output(np.asarray(model_output, np.float32), np.asarray(sample, np.float32))
        prev = self._update(x0, np.asarray(sample, np.float32))
        self.lower_order_nums = min(self.lower_order_nums + 1, self.order)
        self.step_index += 1
        return prev

    def _remember(self, x0: np.ndarray) -> None:
        self.model_outputs = (self.model_outputs + [x0])[-self.order:]

    def _update(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        raise NotImplementedError
