"""The backend interface: one ``Session`` per component, ``run(feeds) -> outputs``, and the backend registry.

Every session checks its inputs against the component's manifest entry (names,
dtypes, shape ranges) before the backend sees them, and checks its outputs for
NaN/Inf so an FP16 overflow is reported with the component's name; that is
:class:`BaseSession`, which each backend module (``onnxrt``, ``trt``, ``ov``) subclasses
with its ``_infer``. Sessions are context managers; ``close()`` frees what the
backend holds. Backends are named in one table and imported only when used. Which
sessions a pipeline holds, when they open and close, is the pipeline layer's
(:mod:`runtime.pipeline`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol

import numpy as np

from runtime.backends.auto import auto_choice
from runtime.bundle import Bundle, BundleError, Component

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


class NonFiniteOutputError(RuntimeError):
    """A component produced NaN or Inf (e.g. an FP16 overflow)."""


class Session(Protocol):
    component: Component

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Session": ...

    def __exit__(self, *exc) -> None: ...


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


class BaseSession:
    """What every backend shares: feeds checked before ``_infer``, outputs checked after, context management."""

    options: ClassVar[frozenset[str]] = frozenset()  # the keyword options this backend's constructor takes
    label: ClassVar[str] = "backend"  # how errors name the backend
    auto_reason: str | None = None  # why ``backend="auto"`` chose this backend (None when asked by name)
    _closed = False

    def __init__(self, component: Component):
        self.component = component

    @classmethod
    def usable(cls, bundle: Bundle, name: str, options: Mapping[str, object]) -> bool:
        """Whether ``backend="auto"`` may pick this backend for the component on this machine."""
        return True

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the backend holds (called once, by ``close``)."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise BundleError(f"{self.component.name}: the {self.label} session is closed")
        outputs = self._infer(prepare_feeds(self.component, feeds))
        check_finite(self.component, outputs)
        return outputs

    def close(self) -> None:
        """Release what the backend holds; the session refuses to run afterwards."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# name -> "module:class"; a backend is imported only when a session of it is opened.
_REGISTRY = {
    "onnxruntime": "runtime.backends.onnxrt:OrtSession",
    "tensorrt": "runtime.backends.trt:TensorRTSession",
    "triton": "runtime.backends.triton:TritonSession",
    "triton-bls": "runtime.backends.triton:BlsSession",
    "openvino": "runtime.backends.ov:OpenVINOSession",
}
BACKENDS = (*_REGISTRY, "auto")


@dataclass(frozen=True)
class Backend:
    """A backend name with its options, accepted wherever a pipeline takes ``backend=``; e.g.
    ``Backend("triton", url="grpc://host:8001")`` or ``Backend("onnxruntime", threads=2)``."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, name: str, **options: Any):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", dict(options))


def backend_class(backend: str) -> type[BaseSession]:
    if backend not in _REGISTRY:
        raise BundleError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    module, _, attr = _REGISTRY[backend].partition(":")
    return getattr(importlib.import_module(module), attr)


MEMORY_MODES = ("normal", "low")


def check_memory(memory: str) -> str:
    """``memory`` when it is one of :data:`MEMORY_MODES`; a ValueError naming them otherwise."""
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, found {memory!r}")
    return memory


def _memory_option(cls: type[BaseSession], memory: str) -> dict[str, str]:
    """``memory`` for a backend that takes it; the others have no low-memory settings."""
    return {"memory": memory} if "memory" in cls.options else {}


def _auto(bundle: Bundle, name: str, options: Mapping[str, object]) -> tuple[str, str]:
    """(backend, reason) ``auto`` takes for one component here: the first of
    :func:`runtime.backends.auto.auto_choice`'s order that is usable with these options."""
    choice = auto_choice(bundle.component(name), bundle.manifest.family, bundle.manifest.variant)
    backend = next(candidate for candidate in choice.order if backend_class(candidate).usable(bundle, name, options))
    if backend == "tensorrt":
        return backend, f"{name}: the bundle has an engine for this GPU and TensorRT version"
    first = next(b for b in choice.order if b != "tensorrt")
    return backend, choice.why if backend == first else (f"{choice.why}; but {first} is not usable here (not "
                                                         "installed, or an option asked is not one of its)")


def auto_backend(bundle: Bundle, name: str, options: Mapping[str, object]) -> str:
    """The backend ``auto`` picks for one component here (:func:`runtime.backends.auto.auto_choice`)."""
    return _auto(bundle, name, options)[0]


def _int8_graph(bundle: Bundle, name: str, backend: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` without ``int8`` (component names), and with the component's INT8 graph as ``graph`` when it
    is one of them; an unknown name, another ``graph`` asked for the same component, or a backend that opens no
    other graph (TensorRT, Triton) is refused."""
    options = dict(options)
    int8 = options.pop("int8", None) or ()
    names = [int8] if isinstance(int8, str) else list(int8)
    unknown = [n for n in names if n not in bundle.manifest.components]
    if unknown:
        raise BundleError(f"int8 names {', '.join(map(repr, unknown))}, not a component of the bundle; expected "
                          f"some of {', '.join(sorted(bundle.manifest.components))}")
    if name in names:
        if options.get("graph") is not None:
            raise BundleError(f"{name}: both int8 and graph= ask which graph to run; give one of them")
        if backend != "auto" and "graph" not in backend_class(backend).options:
            raise BundleError(f"{name}: backend {backend!r} does not run another graph of a component, so int8= "
                              "cannot apply: TensorRT runs INT8 from its engines (backend=Backend('tensorrt', "
                              "precision='int8')), a Triton server the models of its repository")
        options["graph"] = bundle.int8_path(name)
    return options


def open_session(bundle: Bundle, name: str, *, backend: str | Backend = "onnxruntime", memory: str = "normal",
                 **options) -> BaseSession:
    """Open one component with the named backend (a name, or a :class:`Backend` that carries its options).

    ``auto`` (:func:`auto_backend`) takes TensorRT when ``tensorrt`` imports and the bundle has an
    engine of this component for the local GPU and TensorRT version. Otherwise, on the CPU: ONNX
    Runtime for a step that extends a cache (AiT's decoder step), and for every other component
    OpenVINO (FP32 unless ``precision`` says otherwise) when ``openvino`` is installed and no ONNX
    Runtime ``providers`` are asked for, else ONNX Runtime; except where this released component was
    measured faster on ONNX Runtime on this CPU's class (:data:`runtime.backends.auto.MEASURED`).
    Options meant for another backend (``precision`` for TensorRT/OpenVINO, ``providers`` for ONNX
    Runtime) are dropped; the opened session's ``label`` names the backend chosen and its
    ``auto_reason`` says why. A named backend is opened as asked.
    ``memory="low"`` asks for the backend's low-memory settings where it has any (a backend that
    takes a ``memory`` option). ``int8``: names of components to run from their INT8 Q/DQ graph
    (:meth:`runtime.bundle.Bundle.int8_path`) on ONNX Runtime or OpenVINO, e.g.
    ``Backend("openvino", precision="bf16", int8=["unet"])``; the others run as asked.
    """
    check_memory(memory)
    if isinstance(backend, Backend):
        backend, options = backend.name, {**backend.options, **options}
    options = _int8_graph(bundle, name, backend, options)
    if backend == "auto":
        chosen, why = _auto(bundle, name, options)
        cls = backend_class(chosen)
        session = cls(bundle, name, **{k: v for k, v in options.items() if k in cls.options},
                      **_memory_option(cls, memory))
        session.auto_reason = why
        return session
    cls = backend_class(backend)
    return cls(bundle, name, **options, **_memory_option(cls, memory))
