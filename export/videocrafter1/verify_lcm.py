"""verify-reference handlers for T2V-Turbo's LCM golden cases: the scheduler (``lcm.schedule``), the guidance-scale
embedding (``lcm.guidance_embedding``), a whole sample (``lcm.sample``: x_T, context and the per-step noise
through our UNet graph and the runtime's LCM sampler, in torch and under ONNX Runtime) and a whole video
(``lcm.video``: a bundle exported from official-layout files, then the runtime pipeline from x_T and the noise,
latents and decoded video against the official pipeline's)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from export.checkpoint import load_checkpoint
from export.golden import Case, Row, score
from export.videocrafter1.graphs import UNetSpec, example_unet_inputs, unet_conditions, unet_graph
from runtime.backends.onnxrt import inference_session
from runtime.videocrafter1.constants import DiffusionSchedule
from runtime.videocrafter1.lcm import (LCMSampler, boundary_scalings, lcm_alphas_cumprod, lcm_step, lcm_timesteps,
                                       motion_scale, w_embedding)
from runtime.videocrafter1.sampling import denoise, make_sampler


def _diffusion(config: dict) -> DiffusionSchedule:
    return DiffusionSchedule(linear_start=config["linear_start"], linear_end=config["linear_end"],
                             num_timesteps=config["timesteps"])


def _stepped(case: Case, diffusion: DiffusionSchedule, steps: int, origin: int) -> dict[str, np.ndarray]:
    """The sampler's ``step`` on the case's samples and ε of each step (not chained): its noised output
    before the last step, and every step's consistency estimate ``denoised``."""
    key = f"S{steps}_O{origin}"
    xs, eps = case.io[f"x_{key}"], case.io[f"eps_{key}"]
    sampler = LCMSampler(diffusion, origin_steps=origin, noise=list(case.io[f"noise_{key}"]))
    sampler.set_timesteps(steps)
    denoised, prev = [], []
    for i, t in enumerate(sampler.timesteps):
        denoised.append(lcm_step(eps[i], xs[i], sampler.alphas_cumprod[int(t)], int(t)))
        result = sampler.step(eps[i], int(t), xs[i])
        if i < steps - 1:
            prev.append(result)
        else:
            denoised[-1] = result  # the sampler's last step returns the estimate itself
    empty = np.zeros((0, *xs.shape[1:]), dtype=np.float32)
    return {f"denoised_{key}": np.stack(denoised), f"prev_{key}": np.stack(prev) if prev else empty}


def verify_lcm_schedule(case: Case) -> list[Row]:
    config, diffusion = case.config, _diffusion(case.config)
    scalings = np.array([boundary_scalings(t) for t in range(config["timesteps"])], dtype=np.float32)
    found = {"alphas_cumprod": lcm_alphas_cumprod(config["linear_start"], config["linear_end"], config["timesteps"]),
             "c_skip": scalings[:, 0], "c_out": scalings[:, 1]}
    for steps, origin in config["grids"]:
        found[f"timesteps_S{steps}_O{origin}"] = lcm_timesteps(steps, origin, config["timesteps"])
    for steps, origin in config["stepped"]:
        found.update(_stepped(case, diffusion, steps, origin))
    return [score(case, "runtime", found)]


def verify_guidance_embedding(case: Case) -> list[Row]:
    return [score(case, "runtime", {"embedding": w_embedding(case.io["w"], case.config["embedding_dim"])})]


def _sample_with(run_unet: Callable[[dict], np.ndarray], case: Case) -> dict[str, np.ndarray]:
    """The runtime's LCM sampler driving ``run_unet(feeds) -> eps`` from the case's x_T with its noise."""
    config, x_T = case.config, case.io["x_T"]
    batch = x_T.shape[0]
    timestep_cond = w_embedding(np.full(batch, config["guidance_scale"], dtype=np.float32))

    def predict(x, t):
        feeds = {"x": x, "timesteps": np.full((batch,), t, dtype=np.int64), "context": case.io["context"],
                 "timestep_cond": timestep_cond}
        if "fps" in case.io:
            feeds["fps"] = case.io["fps"]
        if config.get("use_motion_cond"):
            scale = motion_scale(t, config["motion_gs"], config["motion_percentage"], config["timesteps"])
            feeds["motion_cond"] = w_embedding(np.full(batch, scale, dtype=np.float32))
        return run_unet(feeds), None

    sampler = make_sampler("lcm", _diffusion(config), config["steps"], lcm_origin_steps=config["lcm_origin_steps"],
                           noise=list(case.io["noise"]))
    return {"latent": denoise(predict, x_T, sampler, guidance_scale=1.0)}


def unet_sample_rows(case: Case, conditions, unet_batch: int,
                     sample_with: Callable[[Callable[[dict], np.ndarray], Case], dict[str, np.ndarray]]) -> list[Row]:
    """A whole-sample case scored twice: ``sample_with(run_unet, case)`` over the torch UNet of the case's
    weights, then over its ONNX graph (exported at the case's latent shape and UNet batch ``unet_batch``)."""
    unet_config, x_T = case.config["unet"], case.io["x_T"]
    unet = load_checkpoint(UNetSpec.construct(unet_config), case.weights, what=f"unet ({case.name})")
    spec = unet_graph(conditions).spec(unet)
    rows = [score(case, "torch", sample_with(lambda feeds: spec.run_torch(feeds)["eps"], case))]
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        example = example_unet_inputs(unet_config, batch=unet_batch, frames=x_T.shape[2], height=x_T.shape[3],
                                      width=x_T.shape[4], context_length=case.io["context"].shape[1])
        session = inference_session(spec.export(example, Path(tmp) / "unet.onnx"))
        rows.append(score(case, "onnx", sample_with(lambda feeds: session.run(["eps"], feeds)[0], case)))
    return rows


def verify_lcm_sample(case: Case) -> list[Row]:
    return unet_sample_rows(case, unet_conditions(case.config["unet"]), case.io["x_T"].shape[0], _sample_with)


def verify_lcm_video(case: Case) -> list[Row]:
    """The case's ``model.ckpt`` with ``unet_lora.pt`` and ``time_cond_proj.pt`` (v1) or ``unet_mg.pt`` (v2)
    exported as its variant, then
    ``generate`` of its prompt from its x_T and noise: the latents within the case's tolerances (and the text
    context within them, as recorded), the decoded uint8 video at least ``psnr_db_min`` dB from the official one."""
    from export.videocrafter1.bundle import export_bundle
    from export.videocrafter1.presets import released_variants, tiny_variants
    from export.videocrafter1.turbo_weights import TurboWeights
    from runtime.arrays import agreement, psnr
    from runtime.videocrafter1 import VideoPipeline

    config, root = case.config, case.root
    turbo = TurboWeights(**{k: root / config[k] for k in ("lora", "unet", "time_cond_proj") if k in config})
    variant = {**released_variants(), **tiny_variants()}[config["variant"]]
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        bundle = export_bundle(variant, Path(tmp) / "bundle", checkpoint=root / config["checkpoint"], turbo=turbo,
                               log=lambda _: None)
        with VideoPipeline(bundle, backend="onnxruntime", memory="low") as pipeline:
            context = pipeline.encode_text([config["prompt"]])
            latents = pipeline.generate(config["prompt"], frames=config["frames"], latents=case.io["x_T"],
                                        noise=list(case.io["noise"]), output_type="latent", progress=False)
            video = pipeline.decode(latents)[0]
    rows = [score(case, "runtime", {"context": context, "latents": latents}, names=["latents"]),
            score(Case(**{**vars(case), "outputs": ["context"]}), "runtime text", {"context": context})]
    found = psnr(case.io["video"], video)
    match = agreement(case.io["video"].astype(np.float32), video.astype(np.float32))
    rows.append(Row(case.name, case.component, "runtime video", match.max_abs, match.cosine,
                    found >= config["psnr_db_min"], f"PSNR {found:.1f} dB (at least {config['psnr_db_min']:g})"))
    return rows


HANDLERS = {
    "lcm.schedule": verify_lcm_schedule,
    "lcm.guidance_embedding": verify_guidance_embedding,
    "lcm.sample": verify_lcm_sample,
    "lcm.video": verify_lcm_video,
}
