"""Calibrating ImageBind: each modality encoder's input (vision, depth and thermal from the images folder, audio
from the ``.wav`` files in it, text from the prompts, IMU from seeded synthetic ``(6, 2000)`` arrays: no IMU
recording ships); end to end, the cosine of each modality's INT8 and FP32 embeddings of the held-out items, and
retrieval agreement: the share of text queries (the calibration prompts) whose top-1 image (among the calibration
images) is the same under INT8 and FP32."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from calibration.collect import find_images, read_prompts
from calibration.recipe import FamilyRecipe, Inputs, heldout_inputs
from calibration.store import CalibrationData
from runtime.backends import OrtSession
from runtime.bundle import Bundle

IMU_SHAPE = (6, 2000)
MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")


def synthetic_imu(seed: int) -> np.ndarray:
    """A seeded synthetic IMU window (accelerometer xyz around gravity, gyroscope xyz), float32 (6, 2000)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, IMU_SHAPE[1], dtype=np.float32)
    freq = rng.uniform(0.2, 3.0, (6, 1)).astype(np.float32)
    wave_ = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (6, 1)))
    signal = rng.uniform(0.1, 1.0, (6, 1)) * wave_ + 0.05 * rng.standard_normal(IMU_SHAPE)
    signal[2] += 9.81  # gravity on the accelerometer's z axis
    return signal.astype(np.float32)


def _describe(inputs: Inputs, sample: int) -> dict[str, Any]:
    """One item per modality: vision cycles through the images; depth and thermal through the images named
    after them (``depth.png``, ``thermal.png``), mirrored on every other pass; IMU is a seeded synthetic array."""
    chosen: dict[str, Any] = {"text": inputs.prompts[sample % len(inputs.prompts)],
                              "vision": str(inputs.images[sample % len(inputs.images)]), "imu_seed": sample}
    for modality in ("depth", "thermal"):
        named = [p for p in inputs.images if modality in p.stem.lower()]
        if named:
            chosen[modality] = str(named[sample % len(named)])
            chosen[f"{modality}_mirrored"] = bool((sample // len(named)) % 2)
    if inputs.audio:
        chosen["audio"] = str(inputs.audio[sample % len(inputs.audio)])
    return chosen


def embedding_items(chosen: Mapping[str, Any], modalities) -> dict[str, list]:
    """The ``{modality: [item]}`` of one described sample, for the opened modalities."""
    from runtime.imagebind.inputs import read_single_channel

    items = {m: [chosen[m]] for m in ("text", "vision", "depth", "thermal", "audio") if m in chosen}
    for m in ("depth", "thermal"):
        if chosen.get(f"{m}_mirrored"):
            items[m] = [np.ascontiguousarray(read_single_channel(chosen[m])[:, ::-1])]
    items["imu"] = [synthetic_imu(int(chosen["imu_seed"]))]
    return {m: v for m, v in items.items() if m in modalities}


def _open(bundle: Bundle):
    from runtime.imagebind.pipeline import EmbeddingPipeline

    return EmbeddingPipeline(bundle)


def _run(pipeline, inputs: Inputs, sample: int, settings: Mapping[str, int]) -> None:
    pipeline.embed(embedding_items(_describe(inputs, sample), pipeline.modalities))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def end_to_end(bundle: Bundle, data: CalibrationData, int8: Mapping[str, OrtSession]) -> dict:
    """Per-modality embedding cosine (held-out items) and text -> vision top-1 agreement, INT8 vs FP32."""
    from runtime.images import load_rgb
    from runtime.imagebind.pipeline import EmbeddingPipeline, top_k

    fp32 = EmbeddingPipeline(bundle, backend="onnxruntime")
    quant = EmbeddingPipeline(bundle, backend="onnxruntime")
    quant.substitute(lambda name, _session: int8.get(name))
    heldout = heldout_inputs(data)
    cosine: dict[str, float] = {}
    for modality in quant.modalities:
        if f"{modality}_encoder" not in int8:
            continue
        values = []
        for _, chosen in heldout:
            items = embedding_items(chosen, [modality]).get(modality)
            if items:
                values.append(_cosines(fp32.embed_modality(modality, items), quant.embed_modality(modality, items)))
        if values:
            cosine[modality] = float(np.mean(np.concatenate(values)))
    figures: dict[str, Any] = {"embedding_cosine": cosine, "heldout_samples": [s for s, _ in heldout]}
    if {"text", "vision"} <= set(quant.modalities):
        prompts_file = Path(data.index.get("prompts_file") or "")
        prompts = (list(read_prompts(prompts_file)) if prompts_file.is_file()
                   else sorted({chosen["text"] for chosen in data.index["inputs"]}))
        folder = Path(data.index.get("images_folder") or Path(data.index["inputs"][0]["vision"]).parent)
        gallery = [load_rgb(str(p)) for p in find_images(folder)]
        best = {label: top_k(pipeline.embed_modality("text", prompts), pipeline.embed_modality("vision", gallery),
                             1)[0][:, 0] for label, pipeline in (("fp32", fp32), ("int8", quant))}
        figures["retrieval"] = {"queries": len(prompts), "gallery": len(gallery),
                                "top1_agreement": float(np.mean(best["fp32"] == best["int8"]))}
    return figures


def summary(e2e: Mapping[str, Any]) -> list[str]:
    lines = ["end to end embedding cosine: " + ", ".join(f"{m} {v:.5f}" for m, v in e2e["embedding_cosine"].items())]
    if "retrieval" in e2e:
        r = e2e["retrieval"]
        lines.append(f"retrieval text->vision top-1 agreement: {r['top1_agreement']:.3f} "
                     f"({r['queries']} queries, {r['gallery']} images)")
    return lines


RECIPE = FamilyRecipe(
    open_pipeline=_open,
    sessions={f"{m}_encoder": None for m in MODALITIES},
    run_sample=_run,
    needs_images=lambda bundle: True,
    describe=_describe,
    end_to_end=end_to_end,
    summary=summary,
    needs_audio=True,
)
