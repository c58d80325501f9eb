"""The sampler loop and the samplers by name: the official DDIM (default), the ODE solvers and T2V-Turbo's LCM.

A sampler is an object with the diffusers shape: ``timesteps`` (in sampling order) after
``set_timesteps``, then ``step(model_output, t, sample)`` (:class:`~runtime.videocrafter1.ddim.DDIMSampler`,
:class:`~runtime.videocrafter1.dpm_solver.DPMSolverMultistep`,
:class:`~runtime.videocrafter1.unipc.UniPCMultistep`, :class:`~runtime.videocrafter1.lcm.LCMSampler`, whose
model takes the guidance scale as an input and is run without a guidance branch). :data:`SAMPLERS` makes one by
its name,
``make_sampler`` sets its timesteps, and ``denoise`` runs it over an ε predictor with
classifier-free guidance (both branches in one batch).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.ddim import DDIMSampler, guided_eps
from runtime.videocrafter1.dpm_solver import DPMSolverMultistep
from runtime.videocrafter1.lcm import LCMSampler, Noise
from runtime.videocrafter1.unipc import UniPCMultistep

# predict_eps(x, t) -> (eps_cond, eps_uncond); eps_uncond may be None when guidance_scale is 1.
EpsPredictor = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray | None]]
# callback(step, t, latents) after each step (step counts from 0); returning False stops the run there.
StepCallback = Callable[[int, int, np.ndarray], object]


def _ddim(diffusion, eta, rng):
    return DDIMSampler(diffusion, eta=eta, rng=rng)


def _no_eta(factory):
    def make(diffusion, eta, rng, **options):
        if eta:
            raise ValueError(f"eta {eta} applies to the ddim sampler only; the ODE solvers and lcm take no eta "
                             "(pass None or 0)")
        return factory(diffusion, rng, **options)
    return make


# sampler name -> make(diffusion schedule, eta, rng[, lcm's options]): a new sampler, its timesteps not set yet
SAMPLERS = {
    "ddim": _ddim,
    "dpmpp-2m": _no_eta(lambda diffusion, rng: DPMSolverMultistep(diffusion, order=2)),
    "unipc": _no_eta(lambda diffusion, rng: UniPCMultistep(diffusion, order=2)),
    "lcm": _no_eta(lambda diffusion, rng, origin_steps, noise: LCMSampler(diffusion, origin_steps=origin_steps,
                                                                          rng=rng, noise=noise)),
}
GUIDANCE_FREE = ("lcm",)  # samplers whose model takes the guidance scale as an input (no guidance branch)


def make_sampler(name: str, diffusion: DiffusionSchedule, steps: int, *, eta: float | None = None,
                 rng: np.random.Generator | None = None, lcm_origin_steps: int | None = None,
                 noise: Noise | None = None):
    """The sampler called ``name`` on a bundle's diffusion schedule, its timesteps set for ``steps``.

    ``lcm`` also takes ``lcm_origin_steps`` (its timestep grid; required) and ``noise`` (the noise between
    steps instead of draws from ``rng``, see :data:`~runtime.videocrafter1.lcm.Noise`); the others take neither.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise ValueError(f"steps must be an integer, got {steps!r}")
    if name == "lcm" and lcm_origin_steps is None:
        raise ValueError("the lcm sampler needs lcm_origin_steps (a T2V-Turbo bundle's sampler constants "
                         "carry it)")
    if name != "lcm" and (noise is not None or lcm_origin_steps is not None):
        raise ValueError(f"noise= and lcm_origin_steps apply to the lcm sampler only, not {name!r}")
    options = {"origin_steps": lcm_origin_steps, "noise": noise} if name == "lcm" else {}
    sampler = SAMPLERS[name](diffusion, eta, rng, **options)
    sampler.set_timesteps(int(steps))
    return sampler


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
