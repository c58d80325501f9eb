"""verify-reference handlers for the VideoCrafter1 golden cases."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from export.checkpoint import load_checkpoint
from export.graphs import GraphSpec
from export.onnx_io import export_onnx
from runtime.backends.onnxrt import inference_session
from export.golden import Case, Row, score, verify_clip_tokenizer, verify_graphs
from export.videocrafter1 import components as vc
from runtime.videocrafter1.ddim import SCALE_KEYS, DDIMSchedule
from runtime.videocrafter1.sampling import denoise, make_sampler


def verify_unet(case: Case) -> list[Row]:
    unet = vc.build_unet(case.config)
    return verify_graphs(case, unet, [vc.unet_spec(unet, "fps" in case.inputs)])


def verify_vae(case: Case) -> list[Row]:
    vae = vc.build_vae(case.config)
    return verify_graphs(case, vae, [vc.vae_encoder_spec(vae), vc.vae_decoder_spec(vae)])


def verify_text_encoder(case: Case) -> list[Row]:
    encoder = vc.build_text_encoder(case.config)
    return verify_graphs(case, encoder, [vc.text_encoder_spec(encoder)])


def verify_image_encoder(case: Case) -> list[Row]:
    encoder = vc.build_image_encoder(case.config)
    return verify_graphs(case, encoder, [vc.image_encoder_spec(encoder)])


def verify_image_proj(case: Case) -> list[Row]:
    resampler = vc.build_image_proj(case.config)
    return verify_graphs(case, resampler, [vc.image_proj_spec(resampler)])


def _sampler_constants(config: dict) -> dict:
    """A case's model settings as a bundle's sampler constants."""
    return {"linear_start": config["linear_start"], "linear_end": config["linear_end"],
            "num_timesteps": config["timesteps"], **{k: config[k] for k in SCALE_KEYS if k in config}}


def _schedule(config: dict, steps: int, eta: float) -> DDIMSchedule:
    return DDIMSchedule.make(steps, eta=eta, **_sampler_constants(config))


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

    sampler = make_sampler("ddim", _sampler_constants(config), config["steps"], eta=config["eta"],
                           rng=np.random.default_rng(case.seed))
    latent = denoise(predict, case.io["x_T"], sampler, guidance_scale=config["guidance_scale"])
    return {"latent": latent}


def verify_sample(case: Case) -> list[Row]:
    unet = load_checkpoint(vc.build_unet(case.config["unet"]), case.weights, what=f"unet ({case.name})")
    spec: GraphSpec = vc.unet_spec(unet, "fps" in case.inputs)
    rows = [score(case, "torch", _sample_with(lambda feeds: spec.run_torch(feeds)["eps"], case))]
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        path = Path(tmp) / "unet.onnx"
        example = vc.example_unet_inputs(case.config["unet"], batch=2, frames=case.io["x_T"].shape[2],
                                         height=case.io["x_T"].shape[3], width=case.io["x_T"].shape[4],
                                         context_length=case.io["context"].shape[1])
        export_onnx(spec.module, [torch.from_numpy(example[n]) for n in spec.inputs], path, input_names=spec.inputs,
                    output_names=spec.outputs, dynamic_axes=spec.dynamic_axes)
        session = inference_session(path)
        rows.append(score(case, "onnx", _sample_with(lambda feeds: session.run(["eps"], feeds)[0], case)))
    return rows


HANDLERS = {
    "unet3d": verify_unet,
    "vae": verify_vae,
    "openclip.text.penultimate": verify_text_encoder,
    "openclip.vision.tokens": verify_image_encoder,
    "resampler": verify_image_proj,
    "openclip.tokenizer": verify_clip_tokenizer,
    "ddim.schedule": verify_schedule,
    "ddim.sample": verify_sample,
}
