"""The numpy ODE solvers against diffusers' schedulers step for step, DPM-Solver++ order 1 against the official DDIM
(with and without the latent scale schedule), and the sampler errors."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from runtime.arrays import max_relative_error
from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.dpm_solver import DPMSolverMultistep
from runtime.videocrafter1.multistep import spaced_timesteps
from runtime.videocrafter1.sampling import SAMPLERS, denoise, make_sampler
from runtime.videocrafter1.unipc import UniPCMultistep

LINEAR = DiffusionSchedule(linear_start=0.00085, linear_end=0.012, num_timesteps=1000)  # VideoCrafter's "linear" β
I2V_SCALE = dict(use_scale=True, scale_a=1.0, scale_b=0.7, mid_step=400, fix_scale_bug=False)
# VideoCrafter's schedule in diffusers' words
DIFFUSERS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 timestep_spacing="leading", steps_offset=1)
SHAPE = (2, 4, 3, 4, 5)


def fake_eps(x: np.ndarray, t: int) -> np.ndarray:
    """A deterministic nonlinear 'UNet' of the sample and the timestep, of eps-like magnitude."""
    field = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    return (np.tanh(0.7 * x + np.float32(np.sin(t / 97.0))) + 0.3 * field).astype(np.float32)



def step_for_step(ours, theirs, timesteps) -> None:
    """Run both on their own samples with the same 'UNet'; every step's sample agrees to 1e-5 relative."""
    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    x_theirs = torch.from_numpy(x.copy())
    assert list(ours.timesteps) == [int(t) for t in timesteps]
    for index, t in enumerate(ours.timesteps):
        x = ours.step(fake_eps(x, int(t)), int(t), x)
        eps = torch.from_numpy(fake_eps(x_theirs.numpy(), int(t)))
        x_theirs = theirs.step(eps, int(t), x_theirs).prev_sample
        assert x.dtype == np.float32
        error = max_relative_error(x_theirs.numpy(), x)
        assert error <= 1e-5, f"step {index} (t={t}): {error:.2e}"


@pytest.mark.parametrize("final", ["sigma_min", "zero"])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("steps", [10, 15, 20, 25, 50])
def test_dpmpp_equals_diffusers(steps, order, final):
    ours = DPMSolverMultistep(LINEAR, order=order, final=final)
    ours.set_timesteps(steps)
    theirs = DPMSolverMultistepScheduler(**{**DIFFUSERS, "timestep_spacing": "linspace"}, solver_order=order,
                                         final_sigmas_type=final)
    theirs.set_timesteps(steps)
    step_for_step(ours, theirs, theirs.timesteps)


@pytest.mark.parametrize("final", ["sigma_min", "zero"])
@pytest.mark.parametrize("steps", [10, 20, 25, 50])
def test_dpmpp_equals_diffusers_on_the_official_timesteps(steps, final):
    ours = DPMSolverMultistep(LINEAR, spacing="leading", final=final)
    ours.set_timesteps(steps)
    assert list(ours.timesteps) == list(range(1, 1000, 1000 // steps))[::-1]
    theirs = DPMSolverMultistepScheduler(**DIFFUSERS, final_sigmas_type=final)
    theirs.set_timesteps(timesteps=[int(t) for t in ours.timesteps])
    step_for_step(ours, theirs, theirs.timesteps)


@pytest.mark.parametrize("euler_at_final", [False, True])
@pytest.mark.parametrize("steps", [8, 15, 30])
def test_dpmpp_equals_diffusers_on_its_own_leading_timesteps(steps, euler_at_final):
    """diffusers' DPM-Solver "leading" spaces by N // (steps + 1): given to ours as timesteps=."""
    theirs = DPMSolverMultistepScheduler(**DIFFUSERS, final_sigmas_type="sigma_min", euler_at_final=euler_at_final)
    theirs.set_timesteps(steps)
    ours = DPMSolverMultistep(LINEAR, euler_at_final=euler_at_final)
    ours.set_timesteps(timesteps=theirs.timesteps.numpy())
    step_for_step(ours, theirs, theirs.timesteps)


@pytest.mark.parametrize("final", ["sigma_min", "zero"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [10, 15, 20, 25])
def test_unipc_equals_diffusers(steps, order, final):
    theirs = UniPCMultistepScheduler(**{**DIFFUSERS, "timestep_spacing": "linspace"}, solver_order=order,
                                     final_sigmas_type=final)
    theirs.set_timesteps(steps)
    ours = UniPCMultistep(LINEAR, order=order, final=final)
    ours.set_timesteps(steps)
    step_for_step(ours, theirs, theirs.timesteps)


def test_unipc_without_corrector_at_some_steps_equals_diffusers():
    theirs = UniPCMultistepScheduler(**DIFFUSERS, disable_corrector=[0, 3], final_sigmas_type="sigma_min")
    theirs.set_timesteps(12)
    ours = UniPCMultistep(LINEAR, disable_corrector=(0, 3))
    ours.set_timesteps(timesteps=theirs.timesteps.numpy())
    step_for_step(ours, theirs, theirs.timesteps)


@pytest.mark.parametrize("scale", [None, I2V_SCALE], ids=["no-scale", "i2v-scale"])
@pytest.mark.parametrize("steps", [10, 50])
def test_dpmpp_order_1_is_the_official_ddim_with_eta_0(steps, scale):
    diffusion = replace(LINEAR, **(scale or {}))
    x_T = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)

    def predict(x, t):
        return fake_eps(x, t), 0.5 * fake_eps(-x, t)

    ddim = denoise(predict, x_T, make_sampler("ddim", diffusion, steps, eta=0.0), guidance_scale=7.5)
    first_order = DPMSolverMultistep(diffusion, order=1, spacing="leading")
    first_order.set_timesteps(steps)
    dpm = denoise(predict, x_T, first_order, guidance_scale=7.5)
    assert max_relative_error(ddim, dpm) <= 1e-5
    # the scale schedule is not a no-op: ignoring it gives another result
    plain = DPMSolverMultistep(LINEAR, order=1, spacing="leading")
    plain.set_timesteps(steps)
    assert (max_relative_error(ddim, denoise(predict, x_T, plain, guidance_scale=7.5)) > 1e-3) == (scale is not None)


def test_sampler_names_and_their_solvers():
    assert list(SAMPLERS) == ["ddim", "dpmpp-2m", "unipc", "lcm"]
    dpm, unipc = make_sampler("dpmpp-2m", LINEAR, 20), make_sampler("unipc", LINEAR, 15)
    assert isinstance(dpm, DPMSolverMultistep) and dpm.order == 2 and len(dpm.timesteps) == 20
    assert isinstance(unipc, UniPCMultistep) and unipc.order == 2 and len(unipc.timesteps) == 15
    assert list(make_sampler("ddim", LINEAR, 30, eta=0.0).timesteps[:2]) == [991, 958]  # official: 31 steps


def test_bad_sampler_name():
    with pytest.raises(ValueError, match=r"unknown sampler 'dpm\+\+'; expected one of ddim, dpmpp-2m, unipc, lcm"):
        make_sampler("dpm++", LINEAR, 20)


@pytest.mark.parametrize("steps", [0, -1, 1000])
def test_bad_step_counts(steps):
    with pytest.raises(ValueError, match=rf"steps must be in \[1, 999\], got {steps}"):
        make_sampler("dpmpp-2m", LINEAR, steps)
    with pytest.raises(ValueError, match="steps must be an integer"):
        make_sampler("unipc", LINEAR, 2.5)


def test_eta_is_refused_by_the_ode_solvers():
    with pytest.raises(ValueError, match="eta 1.0 applies to the ddim sampler only"):
        make_sampler("dpmpp-2m", LINEAR, 20, eta=1.0)


@pytest.mark.parametrize("timesteps, message", [([10, 10, 1], "strictly decreasing"), ([1000, 1], r"\[0, 999\]"),
                                                ([], "non-empty"), ([5.5, 1.0], "integers")])
def test_bad_timesteps(timesteps, message):
    with pytest.raises(ValueError, match=message):
        DPMSolverMultistep(LINEAR).set_timesteps(timesteps=timesteps)


def test_bad_solver_settings():
    with pytest.raises(ValueError, match=r"order must be in \[1, 2\], got 3"):
        DPMSolverMultistep(LINEAR, order=3)
    with pytest.raises(ValueError, match="final must be one of sigma_min, zero, got 'last'"):
        UniPCMultistep(LINEAR, final="last").set_timesteps(10)
    with pytest.raises(ValueError, match="spacing must be one of linspace, leading, got 'trailing'"):
        DPMSolverMultistep(LINEAR, spacing="trailing").set_timesteps(10)


def test_steps_out_of_order_are_refused():
    solver = make_sampler("dpmpp-2m", LINEAR, 10)
    x = np.zeros(SHAPE, np.float32)
    with pytest.raises(ValueError, match=r"expected timestep 999 \(step 1 of 10\), got timestep 801"):
        solver.step(x, 801, x)
    with pytest.raises(RuntimeError, match="call set_timesteps"):
        UniPCMultistep(LINEAR).step(x, 999, x)


def test_spacings_are_diffusers_linspace_and_the_official_leading():
    for steps in (10, 15, 20, 25, 50):
        theirs = np.arange(0, steps) * (1000 // steps) + 1  # diffusers DDIMScheduler's "leading", steps_offset=1
        np.testing.assert_array_equal(spaced_timesteps(steps, 1000, "leading"), theirs[::-1])
        if 1000 % steps == 0:  # and the official DDIM's own
            np.testing.assert_array_equal(spaced_timesteps(steps, 1000, "leading"),
                                          make_sampler("ddim", LINEAR, steps, eta=0.0).timesteps)
        linspace = DPMSolverMultistepScheduler(**{**DIFFUSERS, "timestep_spacing": "linspace"})
        linspace.set_timesteps(steps)
        np.testing.assert_array_equal(spaced_timesteps(steps, 1000, "linspace"), linspace.timesteps.numpy())
        assert spaced_timesteps(steps, 1000, "linspace")[0] == 999
