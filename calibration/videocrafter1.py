"""Calibrating VideoCrafter1: the text encoder, the UNet along the sampler trajectory (both guidance branches)
and the VAE decoder (and the image encoder and projection of I2V); end to end, the PSNR of a video made with the
INT8 UNet, then with every INT8 graph, against the FP32 video."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from calibration.recipe import FamilyRecipe, Inputs, heldout_inputs
from calibration.store import CalibrationData
from runtime.arrays import psnr
from runtime.backends import OrtSession
from runtime.bundle import Bundle
from runtime.videocrafter1.constants import VideoConstants


def _timestep(feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    timesteps = feeds["timesteps"]
    return {"timestep": int(timesteps[0]), "batch": int(timesteps.shape[0])}


def _open(bundle: Bundle):
    from runtime.videocrafter1 import VideoPipeline

    return VideoPipeline(bundle)


def sample_inputs(inputs: Inputs, sample: int) -> dict[str, str]:
    """The prompt (and image, when there are images) of one sample, cycling through the set."""
    chosen = {"prompt": inputs.prompts[sample % len(inputs.prompts)]}
    if inputs.images:
        chosen["image"] = str(inputs.images[sample % len(inputs.images)])
    return chosen


def _run(pipeline, inputs: Inputs, sample: int, settings: Mapping[str, int]) -> None:
    chosen = sample_inputs(inputs, sample)
    pipeline.generate(chosen["prompt"], image=chosen.get("image"), seed=sample, progress=False, **settings)


def end_to_end(bundle: Bundle, data: CalibrationData, int8: Mapping[str, OrtSession]) -> dict:
    """PSNR of videos made with the INT8 UNet, then with every INT8 graph, against the FP32 video."""
    from runtime.videocrafter1 import VideoPipeline

    sample, chosen = heldout_inputs(data)[0]
    steps, frames = data.index.get("steps"), data.index.get("frames")

    def generate(pipeline):
        return pipeline.generate(chosen["prompt"], image=chosen.get("image"), steps=steps, frames=frames,
                                 seed=sample, progress=False)

    pipeline = VideoPipeline(bundle, backend="onnxruntime")  # the INT8 sessions compared are ONNX Runtime ones
    reference = generate(pipeline)
    figures: dict[str, Any] = {"prompt": chosen["prompt"], "seed": sample, "steps": steps, "frames": frames}
    if "unet" in int8:
        with pipeline.substituted(lambda name, _session: int8["unet"] if name == "unet" else None):
            figures["psnr_db_int8_unet"] = psnr(reference, generate(pipeline))
    pipeline.substitute(lambda name, _session: int8.get(name))
    figures["psnr_db_all_int8"] = psnr(reference, generate(pipeline))
    figures["int8_components"] = sorted(int8)
    return figures


def summary(e2e: Mapping[str, Any]) -> list[str]:
    return [f"end to end (prompt {e2e['prompt']!r}, seed {e2e['seed']}): " + ", ".join(
        f"{k.removeprefix('psnr_db_')} PSNR {v:.2f} dB" for k, v in e2e.items() if k.startswith("psnr_db_"))]


RECIPE = FamilyRecipe(
    open_pipeline=_open,
    sessions={"text_encoder": None, "unet": _timestep, "vae_decoder": None, "image_encoder": None, "image_proj": None},
    run_sample=_run,
    needs_images=lambda bundle: VideoConstants.of(bundle).mode == "i2v",
    describe=sample_inputs,
    end_to_end=end_to_end,
    summary=summary,
    settings=("steps", "frames"),
)
