"""Calibrating AiT depth: the image encoder's pixels and the decoder step's feeds at every step of the AR loop
(TTA windows and flips included); end to end, the depth maps of the held-out images (``estimate_depth``, official
TTA) with the INT8 graphs, each alone and all together, against FP32 (abs rel, RMSE)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from calibration.recipe import FamilyRecipe, Inputs, heldout_inputs
from calibration.store import CalibrationData
from runtime.backends import OrtSession
from runtime.bundle import Bundle


def _step(feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {"step": int(feeds["step_index"][0]), "batch": int(feeds["token_embedding"].shape[0])}


def _open(bundle: Bundle):
    from runtime.ait.depth import DepthPipeline

    return DepthPipeline(bundle)


def _run(pipeline, inputs: Inputs, sample: int, settings: Mapping[str, int]) -> None:
    pipeline.estimate(str(inputs.images[sample % len(inputs.images)]), progress=False)


def _describe(inputs: Inputs, sample: int) -> dict[str, Any]:
    return {"image": str(inputs.images[sample % len(inputs.images)])}


def depth_errors(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Abs rel (mean |test - ref| / ref) and RMSE (metres) of a depth map against the FP32 one."""
    ref, out = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    return {"abs_rel": float(np.mean(np.abs(out - ref) / ref)), "rmse": float(np.sqrt(np.mean((out - ref) ** 2)))}


def end_to_end(bundle: Bundle, data: CalibrationData, int8: Mapping[str, OrtSession]) -> dict:
    """Depth error of the INT8 graphs (each alone, then all) against FP32 on the held-out images."""
    from runtime.ait.depth import DepthPipeline

    images = [chosen["image"] for _, chosen in heldout_inputs(data)]
    fp32 = DepthPipeline(bundle, backend="onnxruntime")
    reference = [fp32.estimate(image, progress=False) for image in images]
    figures: dict[str, Any] = {"images": images}
    variants = {f"int8_{name}": {name} for name in int8} if len(int8) > 1 else {}
    variants["all_int8"] = set(int8)
    for label, names in variants.items():
        pipeline = DepthPipeline(bundle, backend="onnxruntime")
        pipeline.substitute(lambda name, _session: int8[name] if name in names else None)
        errors = [depth_errors(r, pipeline.estimate(image, progress=False)) for r, image in zip(reference, images)]
        figures[label] = {k: float(np.mean([e[k] for e in errors])) for k in ("abs_rel", "rmse")}
    figures["int8_components"] = sorted(int8)
    return figures


def summary(e2e: Mapping[str, Any]) -> list[str]:
    return [f"end to end (estimate_depth on {len(e2e['images'])} held-out image(s)): " + ", ".join(
        f"{k} abs rel {v['abs_rel']:.4g}, RMSE {v['rmse']:.4g} m" for k, v in e2e.items() if isinstance(v, Mapping))]


RECIPE = FamilyRecipe(
    open_pipeline=_open,
    sessions={"image_encoder": None, "decoder_step": _step},
    run_sample=_run,
    needs_images=lambda bundle: True,
    describe=_describe,
    end_to_end=end_to_end,
    summary=summary,
)
