"""The OpenVINO backend: a component's ONNX graph compiled by OpenVINO for the CPU, behind the ``Session`` interface.

OpenVINO (``.[openvino]``) is optional and imported only when a session is opened.
It reads the bundle's ONNX graph directly (external weight data included), bounds
each symbolic axis to the manifest profile's ``min..max``, and compiles it with an
inference precision chosen here, never left to the device: on a CPU with BF16
(AVX-512 BF16, AMX) OpenVINO's own default is BF16, which costs accuracy. The
precision the compiled model really runs in is read back into ``.precision``, and a
request the CPU cannot run as asked says so once (:class:`PrecisionFallbackWarning`):
without native BF16 (:mod:`runtime.cpu`) ``bf16`` runs in FP32; OpenVINO 2026.4 on a CPU
with BF16 but without FP16 arithmetic runs ``f16`` as BF16.

Compiled models are cached by OpenVINO (``CACHE_DIR``), one folder per setting that
changes what a compiled blob holds: OpenVINO version, device, CPU class, inference
precision, threads (:func:`cache_folder`). OpenVINO keys its blobs by the graph and its
shapes, but one folder shared by several precisions gave wrong BF16 results (NaN, or
cosine 0.25) on an AMX CPU after an FP32 compile of the same graph. The root is
``$XDG_CACHE_HOME/edge-deploy/openvino`` (``~/.cache/edge-deploy/openvino``) unless
``cache_dir`` says otherwise: the second opening of a component loads the compiled blob
instead of compiling again. A blob OpenVINO cannot load is compiled again (said once).
"""
from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from runtime.backends.base import BaseSession
from runtime.bundle import Bundle, BundleError, Component
from runtime import cpu as cpus

# our name -> OpenVINO's element type name for INFERENCE_PRECISION_HINT
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "f16": "f16"}
_REPORTED = {"f32": "fp32", "bf16": "bf16", "f16": "f16"}
DEVICE = "CPU"


def default_cache_dir() -> Path:
    """Where compiled models are cached unless ``cache_dir`` says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-deploy" / "openvino"


class PrecisionFallbackWarning(UserWarning):
    """A precision was asked that this CPU does not run natively; the session runs (and reports) another."""


class CacheReloadWarning(UserWarning):
    """A cached compiled model could not be loaded; the component was compiled again."""


class Int8SaturationWarning(UserWarning):
    """An INT8 graph opened where OpenVINO's INT8 sums saturate (x86 without VNNI): ONNX Runtime is exact there."""


def _check_int8_graph(bundle: Bundle, name: str, graph: str | Path | None) -> None:
    """Warn when ``graph`` is the component's INT8 graph and this CPU saturates OpenVINO's INT8 sums
    (:func:`runtime.cpu.int8_saturates`)."""
    entry = bundle.component(name).int8
    if graph is None or not entry or Path(graph).resolve() != (bundle.root / entry["graph"]).resolve():
        return
    cpu = cpus.this_cpu()
    if cpus.int8_saturates(cpu):
        warnings.warn(f"{name}: on this CPU, {cpu.describe()}, OpenVINO's INT8 kernels add pairs of u8 x s8 "
                      "products in int16, which saturates: expect a larger error against FP32 (released ImageBind "
                      "vision encoder 28.3 dB instead of 30.8 dB; tiny T2V text encoder 12.8 dB instead of 28 dB). "
                      "ONNX Runtime runs the same graph exactly here: backend='onnxruntime'.",
                      Int8SaturationWarning, stacklevel=4)


def cache_folder(root: Path, version: str, hint: str, threads: int) -> Path:
    """The folder of compiled models for one setting:
    ``root/<OpenVINO version>/<device>-<CPU class>/<precision>-t<threads>``. Nothing compiled under one
    setting is ever read under another, whatever OpenVINO's own keys."""
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")
    return root / safe(version) / f"{DEVICE}-{safe(cpus.this_cpu().isa)}" / f"{hint}-t{int(threads)}"


def _blob_stamps(folder: Path) -> dict[Path, tuple[int, int]]:
    """(modification time, size) of each compiled blob in ``folder``."""
    stats = {blob: blob.stat() for blob in folder.glob("*.blob")}
    return {blob: (stat.st_mtime_ns, stat.st_size) for blob, stat in stats.items()}


def partial_shapes(component: Component) -> dict[str, list[tuple[int, int] | int]]:
    """Each input's dimensions for OpenVINO: fixed sizes as they are, symbolic axes as the profile's (min, max).

    A symbolic axis without a profile entry is left unbounded (``(1, -1)``).
    """
    shapes = {}
    for spec in component.inputs:
        bounds = component.profile.get(spec.name)
        shapes[spec.name] = [
            dim if isinstance(dim, int) else
            ((bounds["min"][axis], bounds["max"][axis]) if bounds else (1, -1))
            for axis, dim in enumerate(spec.shape)
        ]
    return shapes


def _check_precision(name: str, precision: str) -> str:
    if precision not in PRECISIONS:
        raise BundleError(f"{name}: OpenVINO precision {precision!r} is not supported; expected one of "
                          f"{', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


class OpenVINOSession(BaseSession):
    """A component compiled by OpenVINO for the CPU.

    ``precision``: ``fp32`` (default), ``bf16`` or ``f16`` inference precision; the precision
    the compiled model runs in is ``.precision``. ``threads``: inference threads (0: OpenVINO's
    choice, one per physical core). ``graph`` runs another ONNX file of the component (e.g. its
    INT8 Q/DQ graph) behind the same manifest entry. ``cache_dir``: folder of compiled models
    (default :func:`default_cache_dir`).
    """

    options = frozenset({"precision", "threads", "graph", "cache_dir"})
    label = "OpenVINO"

    def __init__(self, bundle: Bundle, name: str, *, precision: str = "fp32", threads: int = 0,
                 graph: str | Path | None = None, cache_dir: str | Path | None = None):
        super().__init__(bundle.component(name))
        hint = _check_precision(name, precision)
        try:
            import openvino as ov
        except ImportError as exc:
            raise BundleError(f"{name}: backend 'openvino' needs the openvino package (`pip install "
                              "'.[openvino]'`); use backend='onnxruntime' or 'auto'") from exc

        _check_int8_graph(bundle, name, graph)
        path = Path(graph) if graph is not None else bundle.component_path(name)
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            raise BundleError(f"{name}: OpenVINO could not read {path} ({reason}); expected a valid ONNX graph. "
                              "Export the bundle again.") from exc
        model.reshape({spec: ov.PartialShape([ov.Dimension(*d) if isinstance(d, tuple) else ov.Dimension(d)
                                              for d in dims])
                       for spec, dims in partial_shapes(self.component).items()})
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_folder = cache_folder(root, ov.__version__, hint, threads)
        self._compiled = self._compile(core, model, {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_NUM_THREADS": int(threads)})
        ran = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = _REPORTED.get(ran, ran)
        if self.precision != precision:
            warnings.warn(f"{name}: OpenVINO runs {self.precision}, not the {precision} asked: this CPU, "
                          f"{cpus.this_cpu().describe()}, has no native {precision.upper()} arithmetic. "
                          "session.precision says what runs.", PrecisionFallbackWarning, stacklevel=3)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from several threads take turns
        self._declared = {t.name: np.dtype(t.dtype) for t in self.component.outputs}
        # a port may carry several tensor names (an output that is also an inner tensor): use the manifest's
        self._outputs = [(port, next((n for n in self._declared if n in port.get_names()), port.get_any_name()))
                         for port in self._compiled.outputs]

    def _compile(self, core, model, config: dict):
        """Compile with this setting's cache folder. OpenVINO compiles again, silently, when a cached blob of
        the graph is refused (damaged, or written by another build): a blob rewritten here says so."""
        self.cache_folder.mkdir(parents=True, exist_ok=True)
        before = _blob_stamps(self.cache_folder)
        compiled = core.compile_model(model, DEVICE, {**config, "CACHE_DIR": str(self.cache_folder)})
        after = _blob_stamps(self.cache_folder)
        rewritten = sorted(blob.name for blob, stamp in before.items() if after.get(blob, stamp) != stamp)
        if rewritten:
            warnings.warn(f"{self.component.name}: OpenVINO could not load the compiled model {rewritten[0]} in "
                          f"{self.cache_folder} and compiled the graph again (the blob is replaced)",
                          CacheReloadWarning, stacklevel=4)
        return compiled

    @classmethod
    def usable(cls, bundle: Bundle, name: str, options: Mapping[str, object]) -> bool:
        """OpenVINO is installed, the CPU device is there, and no precision it lacks (or a GPU provider) is asked."""
        if options.get("precision", "fp32") not in PRECISIONS or options.get("providers"):
            return False
        try:
            import openvino as ov
        except ImportError:
            return False
        return DEVICE in ov.Core().available_devices

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            results = self._request.infer(feeds)
            # the request reuses its output buffers: copy out, in the manifest's dtypes
            return {name: np.array(results[port], dtype=self._declared.get(name, results[port].dtype))
                    for port, name in self._outputs}

    def _release(self) -> None:
        """Free the infer request and the compiled model."""
        self._request = None
        self._compiled = None
