"""The TensorRT backend: a component's engine run behind the ``Session`` interface, on Polygraphy.

TensorRT and Polygraphy are optional (``.[trt]``) and imported only when a session
is opened. Polygraphy's ``TrtRunner`` owns the execution context, the CUDA stream
and the device buffers (``polygraphy.cuda``); the GPU's name and compute capability
come from cuda-python's runtime API; no torch, no pycuda, no hand-written CUDA calls.

An engine runs only on the TensorRT version and GPU compute capability it was
built for; the manifest records both, and a mismatch is refused with the
commands that rebuild it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from runtime.bundle import Bundle, BundleError, Component
from runtime.backends.base import BaseSession

PRECISION_PREFERENCE = ("fp16", "fp32", "int8")  # when none is asked for: fastest that keeps FP accuracy


def _cuda_runtime():
    """cuda-python's runtime API module (``cuda.bindings.runtime``; ``cuda.cudart`` before cuda-python 12.6),
    or None when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            return None
    return runtime


def _device_facts() -> tuple[str, str] | None:
    """(GPU name, compute capability) of device 0 through cuda-python, or None without cuda-python, a driver
    or a GPU."""
    cudart = _cuda_runtime()
    if cudart is None:
        return None
    ok = cudart.cudaError_t.cudaSuccess
    error, count = cudart.cudaGetDeviceCount()
    if error != ok or not count:
        return None
    error, props = cudart.cudaGetDeviceProperties(0)
    if error != ok:
        return None
    name = props.name if isinstance(props.name, str) else bytes(props.name).decode(errors="replace")
    return name.split("\0", 1)[0], f"{props.major}.{props.minor}"


@dataclass(frozen=True)
class LocalTarget:
    """This machine as an engine sees it."""

    tensorrt: str
    gpu: str
    compute_capability: str


def local_target() -> LocalTarget | None:
    """The local TensorRT version and GPU, or None when TensorRT, Polygraphy, CUDA or a GPU is missing."""
    try:
        import tensorrt as trt

        facts = _device_facts()
    except ImportError:
        return None
    return None if facts is None else LocalTarget(trt.__version__, *facts)


def same_tensorrt(built: str, local: str) -> bool:
    """Plans load only on the TensorRT release (major.minor.patch) that built them."""
    return built.split(".")[:3] == local.split(".")[:3]


def _rebuild_hint(component: str, precision: str) -> str:
    return (f"rebuild it on this machine with `python -m engines build BUNDLE --components {component} "
            f"--precision {precision}`, or run the script from `python -m engines trtexec BUNDLE --precision "
            f"{precision}` here and record the plans with `python -m engines register BUNDLE PLAN...`")


def select_engine(component: Component, local: LocalTarget, precision: str | None = None) -> Mapping[str, Any]:
    """The engine record of ``component`` that runs on ``local``, or a clear error saying how to get one."""
    wanted = [precision] if precision else list(PRECISION_PREFERENCE)
    candidates = [e for p in wanted for e in component.engines if e.get("precision") == p]
    if not candidates:
        have = sorted({str(e.get("precision")) for e in component.engines}) or ["none"]
        raise BundleError(f"{component.name}: no TensorRT engine of precision {' or '.join(wanted)} in the bundle "
                          f"(engines: {', '.join(have)}); {_rebuild_hint(component.name, precision or 'fp16')}")
    for engine in candidates:
        if (same_tensorrt(str(engine["tensorrt"]), local.tensorrt)
                and str(engine["compute_capability"]) == local.compute_capability):
            return engine
    found = "; ".join(f"{e['file']} built with TensorRT {e['tensorrt']} for compute capability "
                      f"{e['compute_capability']} ({e.get('gpu', '?')})" for e in candidates)
    raise BundleError(
        f"{component.name}: no engine matches this machine (TensorRT {local.tensorrt}, {local.gpu}, compute "
        f"capability {local.compute_capability}); the bundle has: {found}. Engines are tied to one TensorRT "
        f"version and GPU; {_rebuild_hint(component.name, str(candidates[0]['precision']))}"
    )


def has_engine_for(component: Component, local: LocalTarget, precision: str | None = None) -> bool:
    try:
        select_engine(component, local, precision)
    except BundleError:
        return False
    return True


class TensorRTSession(BaseSession):
    """A component run by its TensorRT engine through Polygraphy's ``TrtRunner``.

    The runner is activated once: its execution context and device buffers live as long
    as the session, and the buffers are reused from call to call (reallocated only when
    a larger shape comes), so the steps of a sampler allocate no device memory. Outputs
    are copied out of the runner's host buffers, which the next call overwrites.
    """

    options = frozenset({"precision"})
    label = "TensorRT"

    def __init__(self, bundle: Bundle, name: str, *, precision: str | None = None):
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        super().__init__(bundle.component(name))
        local = local_target()
        if local is None:
            raise BundleError(f"{name}: backend 'tensorrt' needs the tensorrt and polygraphy packages and an NVIDIA "
                              "GPU (`pip install '.[trt]'`; JetPack on Jetson); use backend='onnxruntime' or 'auto'")
        self.engine_record = select_engine(self.component, local, precision)
        path = bundle.verify(str(self.engine_record["file"]))
        engine = EngineFromBytes(path.read_bytes())()
        if engine is None:
            raise BundleError(f"{path}: TensorRT could not load this engine (see the log above); "
                              f"{_rebuild_hint(name, str(self.engine_record['precision']))}")
        self._declared = {t.name: np.dtype(t.dtype) for t in self.component.outputs}
        self._runner = TrtRunner(engine, name=name)
        self._runner.activate()

    @classmethod
    def usable(cls, bundle: Bundle, name: str, options: Mapping[str, object]) -> bool:
        local = local_target()
        return local is not None and has_engine_for(bundle.component(name), local, options.get("precision"))

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from polygraphy.exception import PolygraphyException

        try:
            outputs = self._runner.infer(feeds, check_inputs=True)
        except PolygraphyException as exc:
            raise BundleError(f"{self.component.name}: TensorRT refused the inputs ({exc}); the engine profile is "
                              f"{self.engine_record.get('profile')}") from exc
        return {n: np.array(a, dtype=self._declared.get(n, a.dtype)) for n, a in outputs.items()}

    def _release(self) -> None:
        """Free the execution context, device buffers and stream."""
        self._runner.deactivate()
        self._runner = None
