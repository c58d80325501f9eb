"""The sampler loop and the sampler names the pipeline takes: the official DDIM (default) and the ODE solvers.

Every sampler has the diffusers shape: ``timesteps`` (in sampling order) after
``set_timesteps``, then ``step(model_output, t, sample)``; ``denoise`` runs one over
an ε predictor with classifier-free guidance (both branches in one batch).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from runtime.videocrafter1.ddim import SCALE_KEYS, DDIMSchedule, ddim_step, guided_eps
from runtime.videocrafter1.dpm_solver import DPMSolverMultistep
from runtime.videocrafter1.unipc import UniPCMultistep

# predict_eps(x, t) -> (eps_cond, eps_uncond); eps_uncond may be None when guidance_scale is 1.
EpsPredictor = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray | None]]
# callback(step, t, latents) after each step (step counts from 0); returning False stops the run there.
StepCallback = Callable[[int, int, np.ndarray], object]


class DDIMSampler:
    """The official DDIM (``ddim.ddim_step`` on a ``DDIMSchedule``) in the diffusers shape.

    With eta > 0 each step draws ``rng.standard_normal(x.shape, dtype=float32)``.
    """

    name = "ddim"

    def __init__(self, sampler: Mapping, *, eta: float, rng: np.random.Generator | None = None):
        if eta > 0 and rng is None:
            raise ValueError(f"eta {eta} > 0 draws noise every step: pass rng=np.random.default_rng(seed)")
        self.constants, self.eta, self.rng = sampler, eta, rng
        self.schedule: DDIMSchedule | None = None

    def set_timesteps(self, steps: int) -> None:
        """The official uniform schedule (which may have more than ``steps`` steps, see ``ddim.uniform_timesteps``)."""
        s = self.constants
        self.schedule = DDIMSchedule.make(steps, eta=self.eta, linear_start=s["linear_start"],
                                          linear_end=s["linear_end"], num_timesteps=s["num_timesteps"],
                                          **{k: s[k] for k in SCALE_KEYS if k in s})
        self.step_index = 0

    @property
    def timesteps(self) -> np.ndarray:
        if self.schedule is None:
            raise RuntimeError("ddim: call set_timesteps(steps) before sampling")
        return self.schedule.timesteps[::-1]

    def step(self, model_output: np.ndarray, t: int, sample: np.ndarray) -> np.ndarray:
        index = self.schedule.num_steps - 1 - self.step_index
        if index < 0 or int(t) != self.schedule.timesteps[index]:
            raise ValueError(f"ddim: expected timestep {self.schedule.timesteps[index] if index >= 0 else 'none'}, "
                             f"got {t}; call set_timesteps to restart")
        noise = self.rng.standard_normal(sample.shape, dtype=np.float32) if self.eta > 0 else None
        self.step_index += 1
        return ddim_step(sample, model_output, self.schedule, index, noise)


def _ddim(sampler, eta, rng):
    return DDIMSampler(sampler, eta=eta, rng=rng)


def _no_eta(factory):
    def make(sampler, eta, rng):
        if eta:
            raise ValueError(f"eta {eta} applies to the ddim sampler only; the ODE solvers take no eta "
                             "(pass None or 0)")
        return factory(sampler)
    return make


# name -> make(sampler constants, eta, rng)
SAMPLERS = {
    "ddim": _ddim,
    "dpmpp-2m": _no_eta(lambda s: DPMSolverMultistep(s, order=2)),
    "unipc": _no_eta(lambda s: UniPCMultistep(s, order=2)),
}


def make_sampler(name: str, sampler: Mapping, steps: int, *, eta: float | None = None,
                 rng: np.random.Generator | None = None):
    """The sampler ``name`` on a bundle's sampler constants, its timesteps set for ``steps``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    made = SAMPLERS[name](sampler, eta, rng)
    made.set_timesteps(int(steps))
    return made


def denoise(predict_eps: EpsPredictor, x_T: np.ndarray, sampler, *, guidance_scale: float,
            callback: StepCallback | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Run ``sampler`` (timesteps already set) from ``x_T``; returns float32 latents.

    ``predict_eps(x, t)`` returns ``(eps_cond, eps_uncond)`` for the integer timestep ``t``;
    with ``guidance_scale`` 1 the second may be None. ``progress(done)`` is called after
    each step, then ``callback(step, t, latents)``; when the callback returns False the
    run stops and the latents of that step are returned.
    """
    x = np.asarray(x_T, dtype=np.float32)
    for done, t in enumerate(sampler.timesteps, start=1):
        t = int(t)
        eps_cond, eps_uncond = predict_eps(x, t)
        eps = guided_eps(np.asarray(eps_cond, dtype=np.float32),
                         None if eps_uncond is None else np.asarray(eps_uncond, dtype=np.float32), guidance_scale)
        x = sampler.step(eps, t, x)
        if progress is not None:
            progress(done)
        if callback is not None and callback(done - 1, t, x) is False:
            break
    return x
