"""INT8 (Q/DQ) vs FP32 accuracy, measured on the CPU with ONNX Runtime (the figures name the CPU and its class).

Per component: both graphs run on the held-out recorded inputs and their
outputs are compared (cosine similarity, max and mean absolute error, SNR in
dB). End to end (VideoCrafter1): the same prompt and seed generate a video with
the FP32 graphs and with the INT8 UNet (then with every INT8 graph); PSNR in dB
against the FP32 video. AiT: depth maps (``estimate_depth``, official TTA) of the
held-out images with the INT8 graphs against FP32 (abs rel, RMSE). ImageBind:
cosine of each modality's INT8 and FP32 embeddings of the held-out items, and
retrieval agreement: the share of text queries (the calibration prompts) whose
top-1 image (among the calibration images) is the same under INT8 and FP32.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from calibration.store import CalibrationData, CalibrationDataError
from runtime.bundle import Bundle, BundleError
from runtime.arrays import agreement, psnr
from runtime.backends import OrtSession
from runtime.cpu import this_cpu


def compare_graphs(fp32: OrtSession, int8: OrtSession, records: Iterable[Mapping[str, np.ndarray]]) -> dict:
    """Figures over all records (every output, flattened and concatenated) and the record count."""
    ref, test = [], []
    for feeds in records:
        a, b = fp32.run(feeds), int8.run(feeds)
        ref += [a[k].ravel() for k in sorted(a)]
        test += [b[k].ravel() for k in sorted(a)]
    if not ref:
        raise CalibrationDataError(f"{fp32.component.name}: no records to compare")
    return {**agreement(np.concatenate(ref), np.concatenate(test)).as_dict(), "records": len(ref) // len(a)}


def video_end_to_end(bundle: Bundle, data: CalibrationData, int8: Mapping[str, OrtSession]) -> dict:
    """PSNR of videos made with the INT8 UNet, then with every INT8 graph, against the FP32 video."""
    from runtime.videocrafter1 import VideoPipeline

    heldout = data.index.get("heldout_samples") or [0]
    sample = heldout[0]
    chosen = data.index["inputs"][sample]
    steps, frames = data.index.get("steps"), data.index.get("frames")

    def generate(pipeline):
        return pipeline.generate(chosen["prompt"], image=chosen.get("image"), steps=steps, frames=frames,
                                 seed=sample, progress=False)

    pipeline = VideoPipeline(bundle, backend="onnxruntime")  # the INT8 sessions compared are ONNX Runtime ones
    reference = generate(pipeline)
    figures: dict[str, Any] = {"prompt": chosen["prompt"], "seed": sample, "steps": steps, "frames": frames}
    if "unet" in int8:
        pipeline.unet = int8["unet"]
        figures["psnr_db_int8_unet"] = psnr(reference, generate(pipeline))
    for name, session in int8.items():
        setattr(pipeline, name, session)
    figures["psnr_db_all_int8"] = psnr(reference, generate(pipeline))
    figures["int8_components"] = sorted(int8)
    return figures


def depth_errors(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Abs rel (mean |test - ref| / ref) and RMSE (metres) of a depth map against the FP32 one."""
    ref, out = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    return {"abs_rel": float(np.mean(np.abs(out - ref) / ref)), "rmse": float(np.sqrt(np.mean((out - ref) ** 2)))}


def _heldout_inputs(data: CalibrationData) -> list[tuple[int, Mapping[str, Any]]]:
    samples = data.index.get("heldout_samples") or [0]
    return [(s, data.index["inputs"][s]) for s in samples]


def depth_end_to_end(bundle: Bundle, data: CalibrationData, int8: Mapping[str, OrtSession]) -> dict:
    """Depth error of the INT8 graphs (each alone, then all) against FP32 on the held-out images."""
    from calibration.collect import RECIPES, swap_sessions
    from runtime.ait.depth import DepthPipeline

    images = [chosen["image"] for _, chosen in _heldout_inputs(data)]
    fp32 = DepthPipeline(bundle, backend="onnxruntime")
    reference = [fp32.estimate(image, progress=False) for image in images]
    figures: dict[str, Any] = {"images": images}
    variants = {f"int8_{name}": {name} for name in int8} if len(int8) > 1 else {}
    variants["all_int8"] = set(int8)
    for label, names in variants.items():
        pipeline = DepthPipeline(bundle, backend="onnxruntime")
        swap_sessions(pipeline, RECIPES["ait"], lambda s, _f: int8[s.component.name] if s.component.name in names else s)
        errors = [depth_errors(r, pipeline.estimate(image, progress=False)) for r, image in zip(reference, images)]
        figures[f"{label}"] = {k: float(np.mean([e[k] for e in errors])) for k in ("abs_rel", "rmse")}
    figures["int8_components"] = sorted(int8)
    return figures


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def embedding_end_to_end(bundle: Bundle, data: CalibrationData, int8: Mapping[str, OrtSession]) -> dict:
    """Per-modality embedding cosine (held-out items) and text -> vision top-1 agreement, INT8 vs FP32."""
    from calibration.collect import RECIPES, embedding_items, find_images, read_prompts, swap_sessions
    from runtime.images import load_rgb
    from runtime.imagebind.pipeline import EmbeddingPipeline, top_k

    fp32 = EmbeddingPipeline(bundle, backend="onnxruntime")
    quant = EmbeddingPipeline(bundle, backend="onnxruntime")
    swap_sessions(quant, RECIPES["imagebind"], lambda s, _f: int8.get(s.component.name, s))
    heldout = _heldout_inputs(data)
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
        best = {}
        for label, pipeline in (("fp32", fp32), ("int8", quant)):
            texts = np.concatenate([pipeline.embed_modality("text", prompts[i:i + 8]) for i in range(0, len(prompts), 8)])
            vision = np.concatenate([pipeline.embed_modality("vision", gallery[i:i + 8])
                                     for i in range(0, len(gallery), 8)])
            best[label] = top_k(texts, vision, 1)[0][:, 0]
        figures["retrieval"] = {"queries": len(prompts), "gallery": len(gallery),
                                "top1_agreement": float(np.mean(best["fp32"] == best["int8"]))}
    return figures


END_TO_END: dict[str, Callable[[Bundle, CalibrationData, Mapping[str, OrtSession]], dict]] = {
    "videocrafter1": video_end_to_end,
    "ait": depth_end_to_end,
    "imagebind": embedding_end_to_end,
}


def report(bundle_root: str | Path, data_root: str | Path | None = None, *, end_to_end: bool = True) -> dict:
    """Per-component and end-to-end figures of every component with a registered INT8 graph."""
    bundle = Bundle(bundle_root)
    quantized = {n: c for n, c in bundle.manifest.components.items() if c.int8}
    if not quantized:
        raise BundleError(f"{bundle.root} has no INT8 graphs registered; run `python -m calibration quantize` first")
    if data_root is None:
        data_root = next(iter(quantized.values())).int8["calibration_data"]
    data = CalibrationData.open(data_root)
    data.check_bundle(bundle.manifest.family, bundle.manifest.variant)
    split = "heldout" if data.index.get("heldout_samples") else "all"
    int8 = {n: OrtSession(bundle, n, graph=bundle.verify(c.int8["graph"])) for n, c in quantized.items()}
    components = {}
    for name, session in int8.items():
        fp32 = OrtSession(bundle, name)
        components[name] = {**compare_graphs(fp32, session, data.records(name, split)), "split": split,
                            "method": quantized[name].int8["method"]}
    cpu = this_cpu()  # INT8 kernels differ by CPU class (VNNI or not): every report says which it ran on
    figures = {"bundle": str(bundle.root), "family": bundle.manifest.family, "variant": bundle.manifest.variant,
               "cpu": cpu.describe(), "cpu_class": cpu.isa, "components": components}
    if end_to_end and bundle.manifest.family in END_TO_END:
        figures["end_to_end"] = END_TO_END[bundle.manifest.family](bundle, data, int8)
    return figures


def format_table(figures: Mapping[str, Any]) -> str:
    lines = [f"{figures['family']} {figures['variant']}: INT8 (Q/DQ) vs FP32, ONNX Runtime on {figures['cpu']}",
             f"{'component':<16}{'records':>8}{'cosine':>10}{'max abs':>11}{'mean abs':>11}{'SNR dB':>9}"]
    for name, f in figures["components"].items():
        lines.append(f"{name:<16}{f['records']:>8}{f['cosine']:>10.5f}{f['max_abs']:>11.4g}{f['mean_abs']:>11.4g}"
                     f"{f['snr_db']:>9.2f}")
    e2e = figures.get("end_to_end")
    if e2e and figures["family"] == "ait":
        lines.append(f"end to end (estimate_depth on {len(e2e['images'])} held-out image(s)): " + ", ".join(
            f"{k} abs rel {v['abs_rel']:.4g}, RMSE {v['rmse']:.4g} m" for k, v in e2e.items()
            if isinstance(v, Mapping)))
    elif e2e and figures["family"] == "imagebind":
        lines.append("end to end embedding cosine: " + ", ".join(
            f"{m} {v:.5f}" for m, v in e2e["embedding_cosine"].items()))
        if "retrieval" in e2e:
            r = e2e["retrieval"]
            lines.append(f"retrieval text->vision top-1 agreement: {r['top1_agreement']:.3f} "
                         f"({r['queries']} queries, {r['gallery']} images)")
    elif e2e:
        lines.append(f"end to end (prompt {e2e['prompt']!r}, seed {e2e['seed']}): " + ", ".join(
            f"{k.removeprefix('psnr_db_')} PSNR {v:.2f} dB" for k, v in e2e.items() if k.startswith("psnr_db_")))
    return "\n".join(lines)


def write_json(path: Path, figures: Mapping[str, Any]) -> None:
    """JSON with non-finite figures (identical outputs give infinite SNR/PSNR) written as null."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(dict(figures)), indent=1), encoding="utf-8")
