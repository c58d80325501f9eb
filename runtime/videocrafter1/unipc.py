"""UniPC in numpy: diffusers' ``UniPCMultistepScheduler`` with ``predict_x0=True``, ``solver_type="bh2"``.

Each step first corrects the sample it is given (UniC, using the new model output;
not at the first step), then predicts the next one (UniP) from the x0 predictions
of the last ``order`` steps. With ``lower_order_final`` the order drops towards the
end so that the last step is first order (there the predictor is DDIM with eta 0).
Notation as in the paper (arXiv 2302.04867) and diffusers: h = λ_t − λ_s0,
r_k = (λ_sk − λ_s0)/h, B(h) = e^−h − 1, and the ρ coefficients solve R·ρ = b with
R = [r_k^(i−1)] and b_i = i!·φ_(i+1)(−h)/B(h).
"""
from __future__ import annotations

import numpy as np

from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.multistep import MultistepSolver


class UniPCMultistep(MultistepSolver):
    """UniPC (bh2, data prediction) of order 1 to 3 on a bundle's diffusion schedule."""

    name = "unipc"
    max_order = 3

    def __init__(self, diffusion: DiffusionSchedule, *, order: int = 2, lower_order_final: bool = True,
                 disable_corrector: tuple[int, ...] = (), spacing: str = "linspace", final: str = "sigma_min"):
        super().__init__(diffusion, order=order, lower_order_final=lower_order_final, spacing=spacing, final=final)
        self.disable_corrector = tuple(disable_corrector)

    def set_timesteps(self, steps: int | None = None, *, timesteps=None) -> None:
        super().set_timesteps(steps, timesteps=timesteps)
        self.last_sample: np.ndarray | None = None
        self.this_order = 0

    def _coefficients(self, target: int, source: int, order: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """B(h), the r_k of the older x0 predictions, and (R, b) for a step from index ``source`` to ``target``."""
        lambdas = self.schedule.lambdas
        h = lambdas[target] - lambdas[source]
        rks = np.array([(lambdas[source - k] - lambdas[source]) / h for k in range(1, order)] + [1.0])
        hh = -h
        b_h = np.expm1(hh)
        h_phi_k = b_h / hh - 1.0
        factorial, b = 1, []
        for i in range(1, order + 1):
            b.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        R = np.stack([rks ** (i - 1) for i in range(1, order + 1)])
        return b_h, rks, R, np.array(b)

    def _first_order_part(self, sample: np.ndarray, target: int, source: int, b_h: float) -> np.ndarray:
        s = self.schedule
        return np.float32(s.sigmas[target] / s.sigmas[source]) * sample \
            - np.float32(s.alphas[target] * b_h) * self.model_outputs[-1]

    def _differences(self, rks: np.ndarray) -> list[np.ndarray]:
        """D1_k = (x0 of k steps back − newest x0) / r_k, k = 1 … order−1."""
        m0 = self.model_outputs[-1]
        return [(self.model_outputs[-(k + 1)] - m0) / np.float32(r) for k, r in enumerate(rks[:-1], start=1)]

    def _correct(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """UniC: improve the sample at this step with its own x0 prediction, from the last sample."""
        i, order = self.step_index, self.this_order
        b_h, rks, R, b = self._coefficients(i, i - 1, order)
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
        result = np.zeros_like(sample)
        for rho, d in zip(rhos[:-1], self._differences(rks)):
            result = result + np.float32(rho) * d
        result = result + np.float32(rhos[-1]) * (x0 - self.model_outputs[-1])
        return self._first_order_part(self.last_sample, i, i - 1, b_h) \
            - np.float32(self.schedule.alphas[i] * b_h) * result

    def _predict(self, sample: np.ndarray) -> np.ndarray:
        """UniP: the sample at the next timestep."""
        i, order = self.step_index, self.this_order
        b_h, rks, R, b = self._coefficients(i + 1, i, order)
        prev = self._first_order_part(sample, i + 1, i, b_h)
        if order == 1:
            return prev
        rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        result = sum(np.float32(rho) * d for rho, d in zip(rhos, self._differences(rks)))
        return prev - np.float32(self.schedule.alphas[i + 1] * b_h) * result

    def _update(self, x0: np.ndarray, sample: np.ndarray) -> np.ndarray:
        i = self.step_index
        if i > 0 and i - 1 not in self.disable_corrector and self.last_sample is not None:
            sample = self._correct(x0, sample)
        self._remember(x0)
        steps_left = self.schedule.num_steps - i
        self.this_order = min(min(self.order, steps_left) if self.lower_order_final else self.order,
                              self.lower_order_nums + 1)
        self.last_sample = sample
        return self._predict(sample)
