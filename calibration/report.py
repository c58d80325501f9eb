"""INT8 (Q/DQ) vs FP32 accuracy, measured on the CPU with ONNX Runtime.

Per component: both graphs run on the held-out recorded inputs and their
outputs are compared (cosine similarity, max and mean absolute error, SNR in
dB). End to end (VideoCrafter1): the same prompt and seed generate a video with
the FP32 graphs and with the INT8 UNet (then with every INT8 graph); PSNR in dB
against the FP32 video.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from calibration.store import CalibrationData, CalibrationDataError
from runtime.bundle import Bundle, BundleError, Component
from runtime.session import check_finite, prepare_feeds


class GraphSession:
    """A Session over any ONNX file for a component (e.g. its Q/DQ graph), on the CPU."""

    def __init__(self, component: Component, graph: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.component = component
        self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = dict(zip(self._outputs, self._session.run(self._outputs, prepare_feeds(self.component, feeds))))
        check_finite(self.component, outputs)
        return outputs


def error_figures(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Cosine similarity, max/mean absolute error and SNR (dB) of ``test`` against ``reference``."""
    ref, out = np.asarray(reference, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    if ref.shape != out.shape:
        raise ValueError(f"cannot compare outputs of {ref.size} and {out.size} values")
    diff = out - ref
    norms = np.linalg.norm(ref) * np.linalg.norm(out)
    noise = float(np.sum(diff ** 2))
    return {"cosine": float(ref @ out / norms) if norms else float("nan"),
            "max_abs": float(np.abs(diff).max()), "mean_abs": float(np.abs(diff).mean()),
            "snr_db": 10.0 * math.log10(float(np.sum(ref ** 2)) / noise) if noise else float("inf")}


def compare_graphs(fp32: GraphSession, int8: GraphSession, records: Iterable[Mapping[str, np.ndarray]]) -> dict:
    """Figures over all records (every output, flattened and concatenated) and the record count."""
    ref, test = [], []
    for feeds in records:
        a, b = fp32.run(feeds), int8.run(feeds)
        ref += [a[k].ravel() for k in sorted(a)]
        test += [b[k].ravel() for k in sorted(a)]
    if not ref:
        raise CalibrationDataError(f"{fp32.component.name}: no records to compare")
    return {**error_figures(np.concatenate(ref), np.concatenate(test)), "records": len(ref) // len(a)}


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 images or videos."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return 10.0 * math.log10(255.0 ** 2 / mse) if mse else float("inf")


def video_end_to_end(bundle: Bundle, data: CalibrationData, int8: Mapping[str, GraphSession]) -> dict:
    """PSNR of videos made with the INT8 UNet, then with every INT8 graph, against the FP32 video."""
    from runtime.video import VideoPipeline

    heldout = data.index.get("heldout_samples") or [0]
    sample = heldout[0]
    chosen = data.index["inputs"][sample]
    steps = data.index.get("steps")

    def generate(pipeline):
        return pipeline.generate(chosen["prompt"], image=chosen.get("image"), steps=steps, seed=sample,
                                 progress=False)

    pipeline = VideoPipeline(bundle)
    reference = generate(pipeline)
    figures: dict[str, Any] = {"prompt": chosen["prompt"], "seed": sample, "steps": steps}
    if "unet" in int8:
        pipeline.unet = int8["unet"]
        figures["psnr_db_int8_unet"] = psnr(reference, generate(pipeline))
    for name, session in int8.items():
        setattr(pipeline, name, session)
    figures["psnr_db_all_int8"] = psnr(reference, generate(pipeline))
    figures["int8_components"] = sorted(int8)
    return figures


END_TO_END: dict[str, Callable[[Bundle, CalibrationData, Mapping[str, GraphSession]], dict]] = {
    "videocrafter1": video_end_to_end,
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
    int8 = {n: GraphSession(c, bundle.verify(c.int8["graph"])) for n, c in quantized.items()}
    components = {}
    for name, session in int8.items():
        fp32 = GraphSession(quantized[name], bundle.component_path(name))
        components[name] = {**compare_graphs(fp32, session, data.records(name, split)), "split": split,
                            "method": quantized[name].int8["method"]}
    figures = {"bundle": str(bundle.root), "family": bundle.manifest.family, "variant": bundle.manifest.variant,
               "components": components}
    if end_to_end and bundle.manifest.family in END_TO_END:
        figures["end_to_end"] = END_TO_END[bundle.manifest.family](bundle, data, int8)
    return figures


def format_table(figures: Mapping[str, Any]) -> str:
    lines = [f"{figures['family']} {figures['variant']}: INT8 (Q/DQ) vs FP32, ONNX Runtime CPU",
             f"{'component':<16}{'records':>8}{'cosine':>10}{'max abs':>11}{'mean abs':>11}{'SNR dB':>9}"]
    for name, f in figures["components"].items():
        lines.append(f"{name:<16}{f['records']:>8}{f['cosine']:>10.5f}{f['max_abs']:>11.4g}{f['mean_abs']:>11.4g}"
                     f"{f['snr_db']:>9.2f}")
    e2e = figures.get("end_to_end")
    if e2e:
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
