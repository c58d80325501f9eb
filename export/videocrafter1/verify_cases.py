"""verify-reference handlers for the VideoCrafter1 golden cases."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from export.checkpoint import meta_parameters, read_checkpoint
from export.golden import Case, Row, score, verify_clip_tokenizer, verify_graphs
from export.videocrafter1.graphs import (IMAGE_ENCODER, IMAGE_PROJ, TEXT_ENCODER, VAE_DECODER, VAE_ENCODER,
                                         UNET_CONDITIONS, ImageEncoderSpec, ImageProjSpec, TextEncoderSpec,
                                         UNetSpec, VAESpec, unet_graph)
from export.videocrafter1.lora import LORA_RANK, merge_lora_, read_lora
from export.videocrafter1.verify_lcm import HANDLERS as LCM_HANDLERS, unet_sample_rows
from runtime.videocrafter1.constants import SCALE_KEYS, DiffusionSchedule
from runtime.videocrafter1.ddim import DDIMSchedule
from runtime.videocrafter1.sampling import denoise, make_sampler


def _conditions(case: Case) -> tuple[str, ...]:
    """The UNet's optional inputs (fps, T2V-Turbo's conditions) that the case feeds."""
    return tuple(name for name in case.inputs if name in UNET_CONDITIONS)


def verify_unet(case: Case) -> list[Row]:
    unet = UNetSpec.construct(case.config)
    return verify_graphs(case, unet, [unet_graph(_conditions(case)).spec(unet)])


def verify_lora_merge(case: Case) -> list[Row]:
    """T2V-Turbo v1: the official LoRA list (the case's ``lora_file``) merged into the case's base UNet weights
    as the export merges it, then one UNet step in torch and under ONNX Runtime."""
    config = case.config["unet"]
    with meta_parameters():
        targets = UNetSpec.construct(config)
    state = read_checkpoint(case.weights)
    lora = read_lora(case.root / case.config.get("lora_file", "unet_lora.pt"))
    merge_lora_(state, targets, lora, what=f"{case.name} LoRA", rank=case.config.get("lora_rank", LORA_RANK))
    unet = UNetSpec.construct(config)
    return verify_graphs(case, unet, [unet_graph(_conditions(case)).spec(unet)], state=state)


def verify_vae(case: Case) -> list[Row]:
    vae = VAESpec.construct(case.config)
    return verify_graphs(case, vae, [VAE_ENCODER.spec(vae), VAE_DECODER.spec(vae)])


def verify_text_encoder(case: Case) -> list[Row]:
    encoder = TextEncoderSpec.construct(case.config)
    return verify_graphs(case, encoder, [TEXT_ENCODER.spec(encoder)])


def verify_image_encoder(case: Case) -> list[Row]:
    encoder = ImageEncoderSpec.construct(case.config)
    return verify_graphs(case, encoder, [IMAGE_ENCODER.spec(encoder)])


def verify_image_proj(case: Case) -> list[Row]:
    resampler = ImageProjSpec.construct(case.config)
    return verify_graphs(case, resampler, [IMAGE_PROJ.spec(resampler)])


def _diffusion(config: dict) -> DiffusionSchedule:
    """A case's model settings as a bundle's diffusion schedule."""
    return DiffusionSchedule(linear_start=config["linear_start"], linear_end=config["linear_end"],
                             num_timesteps=config["timesteps"], **{k: config[k] for k in SCALE_KEYS if k in config})


def _schedule(config: dict, steps: int, eta: float) -> DDIMSchedule:
    return DDIMSchedule.make(steps, eta=eta, **asdict(_diffusion(config)))


def verify_schedule(case: Case) -> list[Row]:
    found: dict[str, np.ndarray] = {}
    step_counts = sorted({int(n.split("_S")[1].split("_")[0]) for n in case.outputs if "_S" in n})
    for steps in step_counts:
        for eta in (0.0, 1.0):
            s = _schedule(case.config, steps, eta)
            found[f"sigmas_S{steps}_eta{eta:g}"] = s.sigmas
            found.update({f"timesteps_S{steps}": s.timesteps, f"alphas_S{steps}": s.alphas,
                          f"alphas_prev_S{steps}": s.alphas_prev, "alphas_cumprod": s.alphas_cumprod})
            if s.scale is not None:
                found.update({f"scale_S{steps}": s.scale, f"scale_prev_S{steps}": s.scale_prev,
                              "scale_arr": s.scale_arr})
    return [score(case, "runtime", found)]


def _sample_with(run_unet, case: Case) -> dict[str, np.ndarray]:
    """The runtime's numpy sampler driving ``run_unet(feeds) -> eps`` on the case's inputs."""
    config = case.config
    context, uncond = case.io["context"], case.io["uncond_context"]
    batch = context.shape[0]
    fps = case.io.get("fps")

    def predict(x, t):
        feeds = {"x": np.concatenate([x, x]), "timesteps": np.full((2 * batch,), t, dtype=np.int64),
                 "context": np.concatenate([context, uncond])}
        if fps is not None:
            feeds["fps"] = np.concatenate([fps, fps])
        eps = run_unet(feeds)
        return eps[:batch], eps[batch:]

    sampler = make_sampler("ddim", _diffusion(config), config["steps"], eta=config["eta"],
                           rng=np.random.default_rng(case.seed))
    latent = denoise(predict, case.io["x_T"], sampler, guidance_scale=config["guidance_scale"])
    return {"latent": latent}


def verify_sample(case: Case) -> list[Row]:
    return unet_sample_rows(case, _conditions(case), 2, _sample_with)


HANDLERS = {
    "unet3d": verify_unet,
    "lora.merge": verify_lora_merge,
    "vae": verify_vae,
    "openclip.text.penultimate": verify_text_encoder,
    "openclip.vision.tokens": verify_image_encoder,
    "resampler": verify_image_proj,
    "openclip.tokenizer": verify_clip_tokenizer,
    "ddim.schedule": verify_schedule,
    "ddim.sample": verify_sample,
    **LCM_HANDLERS,
}
