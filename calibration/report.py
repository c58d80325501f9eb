"""INT8 (Q/DQ) vs FP32 accuracy, measured on the CPU with ONNX Runtime (the figures name the CPU and its class).

Per component: both graphs run on the held-out recorded inputs and their
outputs are compared (cosine similarity, max and mean absolute error, SNR in
dB). End to end: the family's recipe (``calibration.<family>``) runs its pipeline
with the INT8 graphs against FP32 (VideoCrafter1: video PSNR; AiT: depth abs rel
and RMSE; ImageBind: embedding cosine and retrieval agreement).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from calibration.recipe import recipe_of
from calibration.store import CalibrationData, CalibrationDataError
from runtime.bundle import Bundle, BundleError
from runtime.arrays import agreement
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
    int8 = {n: OrtSession(bundle, n, graph=bundle.int8_path(n)) for n in quantized}
    components = {}
    for name, session in int8.items():
        fp32 = OrtSession(bundle, name)
        components[name] = {**compare_graphs(fp32, session, data.records(name, split)), "split": split,
                            "method": quantized[name].int8["method"]}
    cpu = this_cpu()  # INT8 kernels differ by CPU class (VNNI or not): every report says which it ran on
    figures = {"bundle": str(bundle.root), "family": bundle.manifest.family, "variant": bundle.manifest.variant,
               "cpu": cpu.describe(), "cpu_class": cpu.isa, "components": components}
    if end_to_end:
        figures["end_to_end"] = recipe_of(bundle.manifest.family).end_to_end(bundle, data, int8)
    return figures


def format_table(figures: Mapping[str, Any]) -> str:
    lines = [f"{figures['family']} {figures['variant']}: INT8 (Q/DQ) vs FP32, ONNX Runtime on {figures['cpu']}",
             f"{'component':<16}{'records':>8}{'cosine':>10}{'max abs':>11}{'mean abs':>11}{'SNR dB':>9}"]
    for name, f in figures["components"].items():
        lines.append(f"{name:<16}{f['records']:>8}{f['cosine']:>10.5f}{f['max_abs']:>11.4g}{f['mean_abs']:>11.4g}"
                     f"{f['snr_db']:>9.2f}")
    if figures.get("end_to_end"):
        lines += recipe_of(figures["family"]).summary(figures["end_to_end"])
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
