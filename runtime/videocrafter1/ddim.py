"""VideoCrafter1's DDIM sampler in numpy (``lvdm.models.samplers.ddim.DDIMSampler`` as the inference script runs it).

``DDIMSchedule.make`` builds the per-step constants exactly as ``make_schedule``
does (including its dtypes: the model keeps ᾱ as float32, ``alphas_prev`` and
``sigmas`` come out float64); ``ddim_step`` is one update of ``p_sample_ddim``
in float32 with every per-step constant rounded to float32, as the official
code's ``torch.full`` does. :class:`DDIMSampler` runs it in the diffusers shape
(``set_timesteps``, then ``step``) that ``sampling.denoise`` drives.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from runtime.videocrafter1.constants import DiffusionSchedule


def alphas_cumprod(linear_start: float, linear_end: float, num_timesteps: int) -> np.ndarray:
    """ᾱ of the "linear" schedule (linear in sqrt(β), float64), stored as the model's float32 buffer."""
    betas = np.linspace(linear_start ** 0.5, linear_end ** 0.5, num_timesteps, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas).astype(np.float32)


def uniform_timesteps(steps: int, num_timesteps: int) -> np.ndarray:
    """The "uniform" discretization: 0, c, 2c, … below ``num_timesteps`` with c = num_timesteps // steps, plus 1.

    When ``steps`` does not divide ``num_timesteps`` there can be more than ``steps`` of them
    (30 of 1000 gives 31), as in the official code.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in [1, {num_timesteps}], got {steps}")
    timesteps = np.arange(0, num_timesteps, num_timesteps // steps, dtype=np.int64) + 1
    if timesteps[-1] >= num_timesteps:
        usable = next(s for s in range(steps - 1, 0, -1) if (num_timesteps - 1) % (num_timesteps // s))
        raise ValueError(
            f"{steps} DDIM steps: the uniform discretization (stride {num_timesteps // steps}) reaches timestep "
            f"{timesteps[-1]}, past the last one ({num_timesteps - 1}); the official sampler fails there too. "
            f"The nearest smaller step count that works is {usable}")
    return timesteps


def previous(values: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
    """``[values[0]] + values[timesteps[:-1]]`` as float64 (the official code goes through a Python list)."""
    return np.concatenate([values[:1], values[timesteps[:-1]]]).astype(np.float64)


def ddim_sigmas(alphas: np.ndarray, alphas_prev: np.ndarray, eta: float) -> np.ndarray:
    """σ = η·sqrt((1−a_prev)/(1−a)·(1−a/a_prev)) in float64.

    The official code divides a float64 array by a float32 tensor, which torch computes as a
    float32 reciprocal of (1−a) times the float64 numerator; mirrored here.
    """
    reciprocal = (np.float32(1.0) / (np.float32(1.0) - alphas)).astype(np.float64)
    a = alphas.astype(np.float64)
    return eta * np.sqrt((1.0 - alphas_prev) * reciprocal * (1.0 - a / alphas_prev))


def scale_array(scale_a: float, scale_b: float, mid_step: int, num_timesteps: int, fix_scale_bug: bool) -> np.ndarray:
    """The I2V scale schedule: linspace(scale_a, scale_b, mid_step) then scale_b, as float32.

    Without ``fix_scale_bug`` the constant tail is ``num_timesteps`` long (array of
    num_timesteps + mid_step; only the first num_timesteps are reachable), with it the
    array is exactly ``num_timesteps`` long.
    """
    if not 1 <= mid_step <= num_timesteps:
        raise ValueError(f"mid_step must be in [1, {num_timesteps}], got {mid_step}")
    tail = num_timesteps - mid_step if fix_scale_bug else num_timesteps
    ramp = np.linspace(scale_a, scale_b, mid_step, dtype=np.float64)
    return np.concatenate([ramp, np.full(tail, scale_b, dtype=np.float64)]).astype(np.float32)


def _read_only(*arrays: np.ndarray | None) -> None:
    """Make the schedule's arrays immutable, like the dataclass holding them."""
    for array in arrays:
        if array is not None:
            array.setflags(write=False)


@dataclass(frozen=True, eq=False)
class DDIMSchedule:
    """Per-step DDIM constants, index i for ``timesteps[i]``; sampling runs from the last index to the first."""

    alphas_cumprod: np.ndarray  # (num_timesteps,) float32: the model's ᾱ buffer
    timesteps: np.ndarray  # (S,) int64: the values fed to the UNet
    alphas: np.ndarray  # (S,) float32: ᾱ[timesteps]
    alphas_prev: np.ndarray  # (S,) float64: ᾱ[0], then ᾱ[timesteps[:-1]]
    sigmas: np.ndarray  # (S,) float64
    eta: float
    scale_arr: np.ndarray | None = None  # float32, only with use_scale
    scale: np.ndarray | None = None  # (S,) float32: scale_arr[timesteps]
    scale_prev: np.ndarray | None = None  # (S,) float64: scale_arr[0], then scale_arr[timesteps[:-1]]

    @classmethod
    def make(cls, steps: int, *, eta: float, linear_start: float = 0.00085, linear_end: float = 0.012,
             num_timesteps: int = 1000, use_scale: bool = False, scale_a: float = 1.0, scale_b: float = 0.3,
             mid_step: int = 400, fix_scale_bug: bool = False) -> "DDIMSchedule":
        """The schedule ``make_schedule(steps, "uniform", eta)`` builds for the given model settings."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        cumprod = alphas_cumprod(linear_start, linear_end, num_timesteps)
        timesteps = uniform_timesteps(steps, num_timesteps)
        alphas = cumprod[timesteps]
        alphas_prev = previous(cumprod, timesteps)
        scales: dict[str, np.ndarray] = {}
        if use_scale:
            scale_arr = scale_array(scale_a, scale_b, mid_step, num_timesteps, fix_scale_bug)
            scales = {"scale_arr": scale_arr, "scale": scale_arr[timesteps],
                      "scale_prev": previous(scale_arr, timesteps)}
        schedule = cls(alphas_cumprod=cumprod, timesteps=timesteps, alphas=alphas, alphas_prev=alphas_prev,
                       sigmas=ddim_sigmas(alphas, alphas_prev, eta), eta=float(eta), **scales)
        _read_only(schedule.alphas_cumprod, schedule.timesteps, schedule.alphas, schedule.alphas_prev,
                   schedule.sigmas, schedule.scale_arr, schedule.scale, schedule.scale_prev)
        return schedule

    @property
    def num_steps(self) -> int:
        """How many denoising steps (may exceed the requested count, see ``uniform_timesteps``)."""
        return len(self.timesteps)

    @property
    def use_scale(self) -> bool:
        """Whether the I2V scale schedule applies (``scale`` and ``scale_prev`` are set)."""
        return self.scale is not None


def guided_eps(eps_cond: np.ndarray, eps_uncond: np.ndarray | None, guidance_scale: float) -> np.ndarray:
    """Classifier-free guidance ``e_uncond + s·(e_cond − e_uncond)``; the conditional eps alone when s is 1."""
    if guidance_scale == 1.0:
        return eps_cond
    if eps_uncond is None:
        raise ValueError(f"guidance_scale {guidance_scale} needs the unconditional eps, but predict_eps returned None")
    return eps_uncond + np.float32(guidance_scale) * (eps_cond - eps_uncond)


def ddim_step(x: np.ndarray, eps: np.ndarray, schedule: DDIMSchedule, index: int,
              noise: np.ndarray | None = None) -> np.ndarray:
    """One ``p_sample_ddim`` update at ``index`` (eps-parameterization), float32 throughout.

    x0 = (x − sqrt(1−a)·e)/sqrt(a) [÷ scale]; x_prev = sqrt(a_prev)[·scale_prev]·x0 + sqrt(1−a_prev−σ²)·e + σ·noise.
    """
    f32 = np.float32
    a_t, a_prev, sigma = f32(schedule.alphas[index]), f32(schedule.alphas_prev[index]), f32(schedule.sigmas[index])
    sqrt_one_minus_a = np.sqrt(f32(1.0) - a_t)
    pred_x0 = (x - sqrt_one_minus_a * eps) / np.sqrt(a_t)
    dir_xt = np.sqrt(f32(1.0) - a_prev - sigma ** 2) * eps
    if schedule.use_scale:
        pred_x0 = pred_x0 / f32(schedule.scale[index])
        x_prev = np.sqrt(a_prev) * f32(schedule.scale_prev[index]) * pred_x0 + dir_xt
    else:
        x_prev = np.sqrt(a_prev) * pred_x0 + dir_xt
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


class DDIMSampler:
    """The official DDIM (``ddim_step`` on a ``DDIMSchedule``) in the diffusers shape, on a bundle's diffusion schedule.

    With eta > 0 each step draws ``rng.standard_normal(x.shape, dtype=float32)``.
    """

    name = "ddim"

    def __init__(self, diffusion: DiffusionSchedule, *, eta: float, rng: np.random.Generator | None = None):
        if eta > 0 and rng is None:
            raise ValueError(f"eta {eta} > 0 draws noise every step: pass rng=np.random.default_rng(seed)")
        self.diffusion, self.eta, self.rng = diffusion, eta, rng
        self.schedule: DDIMSchedule | None = None

    def set_timesteps(self, steps: int) -> None:
        """The official uniform schedule (which may have more than ``steps`` steps, see ``uniform_timesteps``)."""
        self.schedule = DDIMSchedule.make(steps, eta=self.eta, **asdict(self.diffusion))
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
