"""DPM-Solver++ (multistep, data prediction) in numpy: diffusers' ``DPMSolverMultistepScheduler`` with
``algorithm_type="dpmsolver++"``, ``solver_type="midpoint"``, orders 1 and 2 ("2M").

First order: x_t = (σ_t/σ_s)·x − α_t·(e^−h − 1)·x0_s with h = λ_t − λ_s (this is DDIM
with eta 0). Second order adds −½·α_t·(e^−h − 1)·D1 with D1 = (x0_s − x0_s')·h/h',
the x0 predictions of this step and the one before. As in diffusers, the last step
is first order when ``euler_at_final``, when ``lower_order_final`` and fewer than 15
steps, or when it lands on σ = 0; with ``lower_order_final`` and fewer than 15 steps
the one before it stays second order too (it is at most 2 here anyway).
"""
from __future__ import annotations

import numpy as np

from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.multistep import MultistepSolver

# diffusers' threshold below which lower_order_final changes the last step
LOWER_ORDER_FINAL_BELOW = 15


class DPMSolverMultistep(MultistepSolver):
    """DPM-Solver++ of order 1 or 2 on a bundle's diffusion schedule (see ``multistep.NoiseSchedule``)."""

    name = "dpmpp"
    max_order = 2

    def __init__(self, diffusion: DiffusionSchedule, *, order: int = 2, lower_order_final: bool = True,
                 euler_at_final: bool = False, spacing: str = "linspace", final: str = "sigma_min"):
        super().__init__(diffusion, order=order, lower_order_final=lower_order_final, spacing=spacing, final=final)
        self.euler_at_final = euler_at_final

    def _first_order_at_end(self) -> bool:
        s = self.schedule
        return self.step_index == s.num_steps - 1 and (
            self.euler_at_final or (self.lower_order_final and s.num_steps < LOWER_ORDER_FINAL_BELOW)
            or s.sigmas[-1] == 0.0)

    def _update(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        self._remember(x0)
        s, i = self.schedule, self.step_index
        h = s.lambdas[i + 1] - s.lambdas[i]
        keep = np.float32(s.sigmas[i + 1] / s.sigmas[i])
        gain = np.float32(-s.alphas[i + 1] * np.expm1(-h))  # −α_t·(e^−h − 1)
        prev = keep * sample + gain * x0
        if self.order == 1 or self.lower_order_nums < 1 or self._first_order_at_end():
            return prev
        ratio = h / (s.lambdas[i] - s.lambdas[i - 1])  # 1 / r0
        return prev + np.float32(0.5 * ratio) * gain * (x0 - self.model_outputs[-2])
