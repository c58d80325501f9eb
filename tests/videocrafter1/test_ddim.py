"""The numpy DDIM sampler: golden schedules of the official make_schedule, schedule properties, and the step
against an independent float64 reference of the SPEC formulas."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.ddim import DDIMSampler, DDIMSchedule
from runtime.videocrafter1.sampling import denoise
from tests.paths import REPO

NUM_TIMESTEPS = 1000
I2V_SCALE = dict(use_scale=True, scale_a=1.0, scale_b=0.7, mid_step=400, fix_scale_bug=False)
LINEAR = DiffusionSchedule(linear_start=0.00085, linear_end=0.012, num_timesteps=NUM_TIMESTEPS)


def ddim_sampler(steps, eta, scale=None, rng=None) -> DDIMSampler:
    sampler = DDIMSampler(replace(LINEAR, **(scale or {})), eta=eta, rng=rng)
    sampler.set_timesteps(steps)
    return sampler


def official_stride_overflows(steps: int) -> bool:
    """Whether range(0, 1000, 1000 // steps) + 1 reaches index 1000 (the official code fails to index ᾱ)."""
    stride = NUM_TIMESTEPS // steps
    return (NUM_TIMESTEPS - 1) % stride == 0


# ---------------------------------------------------------------- golden schedules


@pytest.mark.parametrize("case", ["ddim_schedule_t2v", "ddim_schedule_i2v"])
def test_golden_schedule(reference, case):
    folder = reference / "videocrafter1" / "golden" / case
    meta = json.loads((folder / "case.json").read_text())
    io = np.load(folder / "io.npz")
    config = meta["config"]
    scale = {k: config[k] for k in ("use_scale", "scale_a", "scale_b", "mid_step", "fix_scale_bug") if k in config}
    checked = set()
    for steps in (50, 25):
        for eta in (0.0, 1.0):
            schedule = DDIMSchedule.make(steps, eta=eta, linear_start=config["linear_start"],
                                         linear_end=config["linear_end"], num_timesteps=config["timesteps"], **scale)
            found = {"alphas_cumprod": schedule.alphas_cumprod, f"timesteps_S{steps}": schedule.timesteps,
                     f"alphas_S{steps}": schedule.alphas, f"alphas_prev_S{steps}": schedule.alphas_prev,
                     f"sigmas_S{steps}_eta{eta:g}": schedule.sigmas}
            if schedule.use_scale:
                found |= {"scale_arr": schedule.scale_arr, f"scale_S{steps}": schedule.scale,
                          f"scale_prev_S{steps}": schedule.scale_prev}
            for name, value in found.items():
                assert value.dtype == io[name].dtype, name
                np.testing.assert_allclose(value, io[name], atol=meta["atol"], rtol=meta["rtol"], err_msg=name)
                checked.add(name)
    assert checked == set(meta["outputs"])


def test_timesteps_of_released_settings():
    assert list(DDIMSchedule.make(50, eta=1.0).timesteps[[0, 1, -1]]) == [1, 21, 981]


def test_scale_array_length_with_and_without_the_bug():
    buggy = DDIMSchedule.make(50, eta=0.0, **I2V_SCALE)
    fixed = DDIMSchedule.make(50, eta=0.0, **{**I2V_SCALE, "fix_scale_bug": True})
    assert buggy.scale_arr.shape == (1400,) and fixed.scale_arr.shape == (1000,)
    np.testing.assert_array_equal(buggy.scale_arr[:1000], fixed.scale_arr)
    assert buggy.scale_arr[0] == np.float32(1.0) and buggy.scale_arr[399] == np.float32(0.7)
    assert DDIMSchedule.make(50, eta=0.0).scale is None


# ---------------------------------------------------------------- schedule properties


@settings(max_examples=200, deadline=None)
@given(steps=st.integers(1, NUM_TIMESTEPS), eta=st.sampled_from([0.0, 0.5, 1.0]), use_scale=st.booleans())
def test_schedule_properties(steps, eta, use_scale):
    scale = I2V_SCALE if use_scale else {}
    if official_stride_overflows(steps):
        with pytest.raises(ValueError, match="past the last one"):
            DDIMSchedule.make(steps, eta=eta, **scale)
        return
    s = DDIMSchedule.make(steps, eta=eta, **scale)
    stride = NUM_TIMESTEPS // steps
    assert s.num_steps == math.ceil(NUM_TIMESTEPS / stride) >= steps
    assert s.num_steps == steps or NUM_TIMESTEPS % steps
    assert (np.diff(s.timesteps) == stride).all() and s.timesteps[0] == 1 and s.timesteps[-1] <= NUM_TIMESTEPS - 1
    np.testing.assert_array_equal(s.alphas, s.alphas_cumprod[s.timesteps])
    assert s.alphas_prev[0] == s.alphas_cumprod[0]
    np.testing.assert_array_equal(s.alphas_prev[1:], s.alphas[:-1])
    assert (s.alphas < s.alphas_prev).all()
    assert np.isfinite(s.sigmas).all() and (s.sigmas >= 0).all()
    assert (s.sigmas == 0).all() if eta == 0 else (s.sigmas > 0).all()
    if use_scale:
        np.testing.assert_array_equal(s.scale, s.scale_arr[s.timesteps])
        np.testing.assert_array_equal(s.scale_prev[1:], s.scale[:-1])


def test_schedule_is_read_only():
    s = DDIMSchedule.make(10, eta=1.0)
    with pytest.raises(ValueError):
        s.alphas[0] = 0.5


@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_steps_out_of_range(steps):
    with pytest.raises(ValueError, match=rf"\[1, 1000\], got {steps}"):
        DDIMSchedule.make(steps, eta=0.0)


def test_overflowing_step_count_names_a_working_one():
    with pytest.raises(ValueError, match="that works is 26"):
        DDIMSchedule.make(27, eta=0.0)  # stride 37 divides 999: the last timestep would be 1000


# ---------------------------------------------------------------- the sampler loop


def reference_sample(eps_fn, x_T, steps, eta, guidance, noises, scale=None):
    """The SPEC formulas in float64, written from the SPEC alone (not from runtime.videocrafter1.ddim)."""
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), NUM_TIMESTEPS) ** 2
    abar = np.cumprod(1.0 - betas)
    ts = np.arange(0, NUM_TIMESTEPS, NUM_TIMESTEPS // steps) + 1
    if scale is not None:
        arr = np.concatenate([np.linspace(scale["scale_a"], scale["scale_b"], scale["mid_step"]),
                              np.full(NUM_TIMESTEPS, scale["scale_b"])])
    x = x_T.astype(np.float64)
    for k, i in enumerate(range(len(ts) - 1, -1, -1)):
        a, a_prev = abar[ts[i]], abar[ts[i - 1]] if i > 0 else abar[0]
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        e_c, e_u = eps_fn(x, ts[i])
        e = e_u + guidance * (e_c - e_u)
        x0 = (x - math.sqrt(1 - a) * e) / math.sqrt(a)
        keep = math.sqrt(a_prev)
        if scale is not None:
            x0 = x0 / arr[ts[i]]
            keep *= arr[ts[i - 1]] if i > 0 else arr[0]
        x = keep * x0 + math.sqrt(1 - a_prev - sigma ** 2) * e + sigma * noises[k]
    return x


def fake_eps(x, t):
    """A simple deterministic 'UNet': both branches linear in x, depending on t."""
    return 0.1 * x + 1e-4 * t, 0.05 * x - 0.02


@pytest.mark.parametrize("scale", [None, I2V_SCALE], ids=["no-scale", "i2v-scale"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_sampler_matches_float64_reference(scale, eta, guidance):
    steps = 20
    x_T = np.random.default_rng(3).standard_normal((2, 4, 3, 4, 4), dtype=np.float32)
    sampler = ddim_sampler(steps, eta, scale, rng=np.random.default_rng(7))
    calls, done = [], []

    def predict(x, t):
        assert x.dtype == np.float32 and isinstance(t, int)
        calls.append(t)
        e_c, e_u = fake_eps(x, t)
        return e_c.astype(np.float32), (None if guidance == 1.0 else e_u.astype(np.float32))

    got = denoise(predict, x_T, sampler, guidance_scale=guidance, progress=done.append)
    noise_rng = np.random.default_rng(7)
    noises = [noise_rng.standard_normal(x_T.shape, dtype=np.float32) if eta else 0.0 for _ in range(steps)]
    expected = reference_sample(fake_eps, x_T, steps, eta, guidance, noises, scale)
    assert got.dtype == np.float32 and got.shape == x_T.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=5e-4)
    assert calls == list(sampler.schedule.timesteps[::-1]) and done == list(range(1, steps + 1))


def test_guidance_needs_the_unconditional_branch():
    x_T = np.ones((1, 4, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="unconditional eps"):
        denoise(lambda x, t: (x, None), x_T, ddim_sampler(5, 0.0), guidance_scale=12.0)


def test_eta_needs_a_generator():
    with pytest.raises(ValueError, match="rng"):
        ddim_sampler(5, 1.0)


def test_eta_zero_is_deterministic_and_draws_no_noise():
    x_T = np.random.default_rng(0).standard_normal((1, 4, 2, 3, 3), dtype=np.float32)
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    first = denoise(lambda x, t: (0.1 * x, 0.2 * x), x_T, ddim_sampler(10, 0.0, I2V_SCALE, rng), guidance_scale=3.0)
    assert rng.bit_generator.state == state
    np.testing.assert_array_equal(first, denoise(lambda x, t: (0.1 * x, 0.2 * x), x_T, ddim_sampler(10, 0.0, I2V_SCALE),
                                                 guidance_scale=3.0))


def test_runtime_ddim_does_not_import_torch():
    code = "import sys, runtime.videocrafter1.ddim; assert 'torch' not in sys.modules, 'runtime.videocrafter1.ddim imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
