"""Released-size benchmarks: torch eager, then every available backend and precision, on the same inputs.

``python -m benchmarks --preset released`` builds each family's released configuration
with seeded random weights (timings do not depend on the values), exports it once into
a cache folder (``$EDGE_BENCH_CACHE``, default ``~/.cache/edge-deploy/released-bundles``)
and reuses it afterwards. A family suite lists its :class:`Item` s (a component, the
feeds, the torch module's call on them); :func:`item_rows` times torch first, then each
backend of :func:`variants` on the same feeds, and scores each output against torch's.

torch runs eagerly in FP32 and, on a CPU with native BF16 (:mod:`runtime.cpu`), also under
``torch.autocast("cpu", dtype=torch.bfloat16)``, its fast CPU path: a BF16 row of a backend is
compared with torch BF16, every other row with torch FP32. Where BF16 is not native, OpenVINO
would run a ``bf16`` request in FP32, so there is no BF16 row.

INT8 rows run the component's calibrated Q/DQ graph (``python -m calibration
quantize`` writes ``<stem>.int8.onnx``) on the backend that runs its FP32 row, so the
row carries that backend's FP32 time beside its own and the output's agreement.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from benchmarks.measure import Row, measure
from runtime.arrays import agreement
from runtime.backends import open_session
from runtime.backends.base import backend_class
from runtime.bundle import MANIFEST, Bundle
from runtime.cpu import this_cpu

Feeds = Mapping[str, np.ndarray]
CALIBRATION_SAMPLES = 8  # the calibration stage holds out the last quarter (2) for the report


def cache_dir() -> Path:
    return Path(os.environ.get("EDGE_BENCH_CACHE") or Path.home() / ".cache" / "edge-deploy" / "released-bundles")


def cached_bundle(folder: str, export: Callable[[Path], Path], log=print) -> Bundle:
    """The bundle ``folder`` of the cache, exported by ``export(path)`` first when it is not there."""
    path = cache_dir() / folder
    if not (path / MANIFEST).is_file():
        log(f"{folder}: not in {cache_dir()}; exporting it (seeded random weights, released configuration)")
        export(path)
    return Bundle(path)


def calibrated(bundle: Bundle, components: list[str], log=print, **settings: int) -> Bundle:
    """``bundle`` with INT8 Q/DQ graphs of ``components``: recorded from the calibration stage's sample
    inputs (``python -m calibration collect``, with ``settings`` such as ``steps`` and ``frames``; minmax,
    sensitive layers kept) when missing."""
    from calibration.collect import collect
    from calibration.quantize import quantize

    missing = [c for c in components if not bundle.component(c).int8]
    if missing:
        data = bundle.root.parent / f"{bundle.root.name}.calibration"
        if not (data / "index.json").is_file():
            log(f"{bundle.root.name}: recording {CALIBRATION_SAMPLES} calibration samples into {data}")
            collect(bundle.root, data, samples=CALIBRATION_SAMPLES, log=log, **settings)
        quantize(bundle.root, data, components=missing, log=log)
    return Bundle(bundle.root)


def heldout_feeds(bundle: Bundle, component: str) -> Feeds:
    """The first held-out calibration record of ``component``: a real input the INT8 ranges did not see."""
    from calibration.store import CalibrationData

    data = CalibrationData.open(bundle.root.parent / f"{bundle.root.name}.calibration")
    return next(data.records(component, "heldout"))


@dataclass
class Item:
    """One benchmarked call: ``component`` of the bundle on ``feeds``, and torch's eager call on the same feeds."""

    component: str
    label: str
    feeds: Feeds
    torch_call: Callable[[Feeds], Mapping[str, np.ndarray]]
    shown: tuple[str, ...] | None = None  # inputs named in the shape column (default: all)

    @property
    def shape(self) -> str:
        return " ".join(f"{k}{list(v.shape)}" for k, v in self.feeds.items() if self.shown is None or k in self.shown)


def variants(bundle: Bundle, component: str) -> Iterator[tuple[str, str, dict]]:
    """(backend, precision asked, open_session options) of every backend here that runs ``component``."""
    int8 = bundle.component(component).int8
    graph = {"graph": bundle.int8_path(component)} if int8 else None
    yield "onnxruntime", "fp32", {}
    if graph:
        yield "onnxruntime", "int8", graph
    if backend_class("openvino").usable(bundle, component, {}):
        yield "openvino", "fp32", {"precision": "fp32"}
        if this_cpu().bf16:
            yield "openvino", "bf16", {"precision": "bf16"}
        if graph:
            yield "openvino", "int8", {"precision": "fp32", **graph}


def _score(reference: Mapping[str, np.ndarray], found: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """The worst cosine and SNR (dB) over the float outputs."""
    scores = [agreement(reference[n], found[n]) for n in reference if np.asarray(reference[n]).dtype.kind == "f"]
    return min(s.cosine for s in scores), min(s.snr_db for s in scores)


def torch_variants(call: Callable[[Feeds], Mapping[str, np.ndarray]]) -> Iterator[tuple[str, Callable]]:
    """(precision, call) of torch's baselines: eager FP32, and BF16 autocast where the CPU has native BF16."""
    yield "fp32", call
    if this_cpu().bf16:
        import torch

        def bf16(feeds: Feeds) -> Mapping[str, np.ndarray]:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return call(feeds)
        yield "bf16", bf16


def item_rows(family: str, bundle: Bundle, item: Item, repeats: int, log=print) -> list[Row]:
    """torch (:func:`torch_variants`), then each backend and precision of :func:`variants`, on ``item.feeds``;
    one row each, a row's ``torch_ms`` being torch's at the same precision (FP32 for INT8)."""
    variant = bundle.manifest.variant
    rows, torch_ms, reference = [], {}, None
    for precision, call in torch_variants(item.torch_call):
        outputs = call(item.feeds)
        reference = outputs if reference is None else reference
        timing = measure(lambda: call(item.feeds), repeats)
        torch_ms[precision] = timing.median_s * 1e3
        cosine, snr = _score(reference, outputs)
        rows.append(Row(family, variant, item.label, item.shape, "torch", torch_ms[precision], torch_ms[precision],
                        None, timing.peak_mb, timing.peak_mb, precision=precision, cosine=cosine,
                        snr_db=None if precision == "fp32" else snr,
                        backend_fp32_ms=None if precision == "fp32" else torch_ms["fp32"]))
        log(f"  {item.label}: torch {precision} {torch_ms[precision]:.1f} ms")
    torch_peak = rows[0].torch_peak_mb
    fp32_ms: dict[str, float] = {}
    for backend, precision, options in variants(bundle, item.component):
        with open_session(bundle, item.component, backend=backend, **options) as session:
            outputs = session.run(item.feeds)
            timing = measure(lambda: session.run(item.feeds), repeats)
            ran = "int8" if precision == "int8" else getattr(session, "precision", precision)
        cosine, snr = _score(reference, outputs)
        ms, baseline = timing.median_s * 1e3, torch_ms.get(ran, torch_ms["fp32"])
        if precision == "fp32":
            fp32_ms[backend] = ms
        rows.append(Row(family, variant, item.label, item.shape, backend, ms, baseline, None, timing.peak_mb,
                        torch_peak, precision=ran, cosine=cosine, snr_db=snr,
                        backend_fp32_ms=fp32_ms.get(backend) if precision != "fp32" else None))
        log(f"  {item.label}: {backend} {ran} {ms:.1f} ms (torch {ran if ran in torch_ms else 'fp32'}/rt "
            f"{baseline / ms:.2f}x), cosine {cosine:.6f}, SNR {snr:.1f} dB")
    return rows
