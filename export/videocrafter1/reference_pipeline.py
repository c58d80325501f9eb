"""The T2V pipeline written in torch: the parity reference and the torch baseline.

It mirrors the official inference (``DDIMSampler`` with classifier-free guidance
on the empty prompt, per-frame VAE decode) with the official schedule maths in
torch, independently of the runtime's numpy sampler. Noise comes from the same
numpy generator convention as the runtime (``x_T`` first, then one draw per
step when ``eta > 0``) so both see identical noise.
"""
from __future__ import annotations

import numpy as np
import torch

from runtime.tokenizer import ClipTokenizer


def ddim_tables(steps: int, eta: float, sampler: dict) -> dict[str, torch.Tensor]:
    """alphas, alphas_prev, sigmas and the UNet timesteps of the uniform DDIM schedule (float32)."""
    betas = torch.linspace(sampler["linear_start"] ** 0.5, sampler["linear_end"] ** 0.5, sampler["num_timesteps"],
                           dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    timesteps = torch.arange(0, sampler["num_timesteps"], sampler["num_timesteps"] // steps) + 1
    alphas = alphas_cumprod[timesteps]
    alphas_prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[timesteps[:-1]]])
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    return {"timesteps": timesteps, "alphas": alphas.float(), "alphas_prev": alphas_prev.float(),
            "sigmas": sigmas.float()}


@torch.no_grad()
def sample_latents(unet, context: torch.Tensor, uncond: torch.Tensor, x_T: torch.Tensor, *, steps: int, eta: float,
                   guidance_scale: float, sampler: dict, rng: np.random.Generator) -> torch.Tensor:
    tables = ddim_tables(steps, eta, sampler)
    x = x_T
    batch = x.shape[0]
    for index in reversed(range(len(tables["timesteps"]))):
        t = torch.full((batch,), int(tables["timesteps"][index]), dtype=torch.int64)
        e_cond = unet(x, t, context)
        e_t = e_cond if guidance_scale == 1.0 else (
            (e_uncond := unet(x, t, uncond)) + guidance_scale * (e_cond - e_uncond))
        a_t, a_prev, sigma = (tables[k][index] for k in ("alphas", "alphas_prev", "sigmas"))
        pred_x0 = (x - torch.sqrt(1 - a_t) * e_t) / torch.sqrt(a_t)
        direction = torch.sqrt(1.0 - a_prev - sigma**2) * e_t
        x = torch.sqrt(a_prev) * pred_x0 + direction
        if eta > 0:
            x = x + sigma * torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32))
    return x


@torch.no_grad()
def generate_video_torch(modules: dict, pipeline: dict, prompt: str, *, steps: int, guidance_scale: float, eta: float,
                         seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames from the torch modules ``unet``, ``vae``, ``text_encoder``."""
    tokenizer = ClipTokenizer()
    tokens = torch.from_numpy(tokenizer([prompt, pipeline["uncond_prompt"]], context_length=pipeline["context_length"]))
    embedded = modules["text_encoder"](tokens)
    context, uncond = embedded[:1], embedded[1:]
    rng = np.random.default_rng(seed)
    f = pipeline["vae_factor"]
    shape = (1, pipeline["latent_channels"], frames, height // f, width // f)
    x_T = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    latents = sample_latents(modules["unet"], context, uncond, x_T, steps=steps, eta=eta,
                             guidance_scale=guidance_scale, sampler=pipeline["sampler"], rng=rng)
    z = latents[0].permute(1, 0, 2, 3) / pipeline["scale_factor"]
    decoded = torch.cat([modules["vae"].decode(z[t:t + 1]) for t in range(frames)])
    pixels = (decoded.clamp(-1, 1) + 1) / 2 * 255
    return pixels.permute(0, 2, 3, 1).to(torch.uint8).numpy()
