"""The VideoCrafter1 pipeline written in torch: the parity reference and the torch baseline.

It mirrors the official inference (``DDIMSampler`` with classifier-free guidance
on the empty prompt, the I2V image embedding and scale schedule, per-frame VAE
decode) with the official maths in torch, independently of the runtime's numpy
code. Noise comes from the same numpy generator convention as the runtime
(``x_T`` first, then one draw per step when ``eta > 0``) so both see identical noise.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from runtime.tokenizer import ClipTokenizer
from runtime.videocrafter1.constants import DiffusionSchedule, VideoConstants


def ddim_tables(steps: int, eta: float, diffusion: DiffusionSchedule) -> dict[str, torch.Tensor]:
    """alphas, alphas_prev, sigmas, UNet timesteps and (I2V) scales of the uniform DDIM schedule."""
    d, num = diffusion, diffusion.num_timesteps
    betas = torch.linspace(d.linear_start ** 0.5, d.linear_end ** 0.5, num, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    timesteps = torch.arange(0, num, num // steps) + 1
    alphas = alphas_cumprod[timesteps]
    alphas_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[timesteps[:-1]]])
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    tables = {"timesteps": timesteps, "alphas": alphas.float(), "alphas_prev": alphas_prev.float(),
              "sigmas": sigmas.float()}
    if d.use_scale:
        tail = num - d.mid_step if d.fix_scale_bug else num
        scale_arr = torch.cat([torch.linspace(d.scale_a, d.scale_b, d.mid_step), torch.full((tail,), float(d.scale_b))])
        tables["scale"] = scale_arr[timesteps]
        tables["scale_prev"] = torch.cat([scale_arr[:1], scale_arr[timesteps[:-1]]])
    return tables


@torch.no_grad()
def sample_latents(unet, context: torch.Tensor, uncond: torch.Tensor, x_T: torch.Tensor, *, steps: int, eta: float,
                   guidance_scale: float, diffusion: DiffusionSchedule, rng: np.random.Generator,
                   fps: torch.Tensor | None = None) -> torch.Tensor:
    tables = ddim_tables(steps, eta, diffusion)
    extra = () if fps is None else (fps,)
    x = x_T
    for index in reversed(range(len(tables["timesteps"]))):
        t = torch.full((x.shape[0],), int(tables["timesteps"][index]), dtype=torch.int64)
        e_cond = unet(x, t, context, *extra)
        e_t = e_cond if guidance_scale == 1.0 else (
            (e_uncond := unet(x, t, uncond, *extra)) + guidance_scale * (e_cond - e_uncond))
        a_t, a_prev, sigma = (tables[k][index] for k in ("alphas", "alphas_prev", "sigmas"))
        pred_x0 = (x - torch.sqrt(1 - a_t) * e_t) / torch.sqrt(a_t)
        direction = torch.sqrt(1.0 - a_prev - sigma**2) * e_t
        if "scale" in tables:
            pred_x0 = pred_x0 / tables["scale"][index]
            x = torch.sqrt(a_prev) * tables["scale_prev"][index] * pred_x0 + direction
        else:
            x = torch.sqrt(a_prev) * pred_x0 + direction
        if eta > 0:
            x = x + sigma * torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32))
    return x


def clip_preprocess(frames: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """kornia's resize(bicubic, align_corners=True, antialias=True), then [0, 1] and CLIP normalisation."""
    height, width = frames.shape[-2:]
    if (height, width) != (size, size):
        factors = (height / size, width / size)
        if max(factors) > 1:
            sigmas = [max((f - 1.0) / 2.0, 0.001) for f in factors]
            sizes = [int(max(4.0 * s, 3)) for s in sigmas]
            sizes = [k + 1 - k % 2 for k in sizes]
            kernels = []
            for k, s in zip(sizes, sigmas):
                x = torch.arange(k, dtype=torch.float32) - k // 2
                g = torch.exp(-x**2 / (2 * s**2))
                kernels.append(g / g.sum())
            channels = frames.shape[1]
            frames = F.pad(frames, (sizes[1] // 2, sizes[1] // 2, sizes[0] // 2, sizes[0] // 2), mode="reflect")
            kernel_2d = (kernels[0][:, None] * kernels[1][None, :]).expand(channels, 1, -1, -1)
            frames = F.conv2d(frames, kernel_2d, groups=channels)
        frames = F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=True)
    unit = (frames + 1.0) / 2.0
    return (unit - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def image_context(modules: dict, image_rgb: np.ndarray | None, constants: VideoConstants) -> torch.Tensor:
    """Image context tokens of an HxWx3 uint8 image (official loader), or of the zeros image when None."""
    spec = constants.image
    if image_rgb is None:
        frames = torch.zeros(1, 3, spec.size, spec.size)
    else:
        resized = cv2.resize(image_rgb.astype(np.float32), (constants.width, constants.height),
                             interpolation=cv2.INTER_LINEAR)
        frames = (torch.from_numpy(resized).permute(2, 0, 1)[None] / 255.0 - 0.5) * 2
    pixels = clip_preprocess(frames, spec.size, spec.mean, spec.std)
    return modules["image_proj"](modules["image_encoder"](pixels))


@torch.no_grad()
def generate_video_torch(modules: dict, constants: VideoConstants, prompt: str, *, steps: int, guidance_scale: float,
                         eta: float, seed: int, frames: int, height: int, width: int, fps: int | None = None,
                         image_rgb: np.ndarray | None = None) -> np.ndarray:
    """(T, H, W, 3) uint8 frames from the torch modules ``unet``, ``vae``, ``text_encoder`` (+ I2V parts)."""
    tokenizer = ClipTokenizer()
    c = constants
    tokens = torch.from_numpy(tokenizer([prompt, c.uncond_prompt], context_length=c.context_length))
    embedded = modules["text_encoder"](tokens)
    context, uncond = embedded[:1], embedded[1:]
    if c.mode == "i2v":
        context = torch.cat([context, image_context(modules, image_rgb, c)], dim=1)
        uncond = torch.cat([uncond, image_context(modules, None, c)], dim=1)
    fps_tensor = torch.tensor([fps or c.fps]) if c.fps_cond else None
    rng = np.random.default_rng(seed)
    f = c.vae_factor
    shape = (1, c.latent_channels, frames, height // f, width // f)
    x_T = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    latents = sample_latents(modules["unet"], context, uncond, x_T, steps=steps, eta=eta,
                             guidance_scale=guidance_scale, diffusion=c.sampling.diffusion, rng=rng, fps=fps_tensor)
    z = latents[0].permute(1, 0, 2, 3) / c.scale_factor
    decoded = torch.cat([modules["vae"].decode(z[t:t + 1]) for t in range(frames)])
    pixels = (decoded.clamp(-1, 1) + 1) / 2 * 255
    return pixels.permute(0, 2, 3, 1).to(torch.uint8).numpy()
