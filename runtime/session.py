"""The backend interface: one ``Session`` per component, ``run(feeds) -> outputs``.

Backends: ONNX Runtime here; TensorRT plugs in behind the same interface.
Every session checks its inputs against the component's manifest entry (names,
dtypes, shape ranges) before the backend sees them, and checks its outputs for
NaN/Inf so an FP16 overflow is reported with the component's name.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from runtime.bundle import Bundle, BundleError, Component

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


class NonFiniteOutputError(RuntimeError):
    """A component produced NaN or Inf (e.g. an FP16 overflow)."""


class Session(Protocol):
    component: Component

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def prepare_feeds(component: Component, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check names and shapes against the manifest and cast to the declared dtypes."""
    expected = [t.name for t in component.inputs]
    unknown, missing = sorted(set(feeds) - set(expected)), sorted(set(expected) - set(feeds))
    if unknown or missing:
        raise BundleError(f"{component.name}: expected inputs {expected}, found {sorted(feeds)} "
                          f"(unknown {unknown}, missing {missing})")
    arrays = {name: np.asarray(value) for name, value in feeds.items()}
    component.check_shapes({name: a.shape for name, a in arrays.items()})
    return {
        t.name: np.ascontiguousarray(arrays[t.name], dtype=_NUMPY_DTYPES[t.dtype]) for t in component.inputs
    }


def check_finite(component: Component, outputs: Mapping[str, np.ndarray]) -> None:
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise NonFiniteOutputError(
                f"{component.name}: output '{name}' has {bad} NaN/Inf values of {value.size} "
                "(an FP16 overflow? try the fp32 graph or keep this layer in fp32)"
            )


def _ort_load_errors() -> tuple[type[Exception], ...]:
    """The exceptions ONNX Runtime raises for a file it cannot load (they derive from Exception only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NoSuchFile", "NotImplemented",
             "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


class OrtSession:
    """A component run by ONNX Runtime (CPU by default, CUDA when available and asked for)."""

    def __init__(self, bundle: Bundle, name: str, *, providers: list[str] | None = None, threads: int = 0):
        import onnxruntime as ort

        self.component = bundle.component(name)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # A pipeline alternates between several sessions; idle threads of one spinning for work would steal
        # the cores the next session needs (2.5x slower end to end on a 2-core CPU).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        path = bundle.component_path(name)
        try:
            self._session = ort.InferenceSession(str(path), options, providers=chosen)
        except _ort_load_errors() as exc:
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            raise BundleError(
                f"{name}: ONNX Runtime could not load {path} ({type(exc).__name__}: {reason}); expected a valid "
                "ONNX graph. The file matches the manifest, so it was written that way: export the bundle again."
            ) from exc
        self._outputs = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = prepare_feeds(self.component, feeds)
        results = self._session.run(self._outputs, prepared)
        outputs = dict(zip(self._outputs, results))
        check_finite(self.component, outputs)
        return outputs


_TENSORRT_OPTIONS = frozenset({"precision"})
BACKENDS = ("onnxruntime", "tensorrt", "auto")


def open_session(bundle: Bundle, name: str, *, backend: str = "onnxruntime", **options) -> Session:
    """Open one component with the named backend.

    ``auto`` picks TensorRT when ``tensorrt`` imports and the bundle has an engine
    of this component for the local GPU and TensorRT version, else ONNX Runtime;
    options meant for the other backend (``precision`` for TensorRT, ``providers``
    and ``threads`` for ONNX Runtime) are dropped.
    """
    if backend == "auto":
        from runtime.tensorrt_backend import has_engine_for, local_target

        local = local_target()
        use_trt = local is not None and has_engine_for(bundle.component(name), local, options.get("precision"))
        backend = "tensorrt" if use_trt else "onnxruntime"
        options = {k: v for k, v in options.items() if (k in _TENSORRT_OPTIONS) == use_trt}
    if backend == "onnxruntime":
        return OrtSession(bundle, name, **options)
    if backend == "tensorrt":
        from runtime.tensorrt_backend import TensorRTSession

        return TensorRTSession(bundle, name, **options)
    raise BundleError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
