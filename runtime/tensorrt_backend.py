"""The TensorRT backend: a component's engine run behind the ``Session`` interface.

TensorRT is optional and imported only when a session is opened. Device memory
and streams come from a small ctypes helper over ``libcudart`` (no torch, no
pycuda). Written for the TensorRT 10 tensor API (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), which TensorRT 8.6 also has.

An engine runs only on the TensorRT version and GPU compute capability it was
built for; the manifest records both, and a mismatch is refused with the
commands that rebuild it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from runtime.bundle import Bundle, BundleError, Component
from runtime.session import check_finite, prepare_feeds

PRECISION_PREFERENCE = ("fp16", "fp32", "int8")  # when none is asked for: fastest that keeps FP accuracy
_H2D, _D2H = 1, 2  # cudaMemcpyKind
_CC_MAJOR, _CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor / Minor
_PROPS_BYTES = 4096  # larger than cudaDeviceProp in any CUDA 11/12; its first field is char name[256]


class Cuda:
    """The few CUDA runtime calls the backend needs, through ctypes."""

    def __init__(self, library: str | None = None):
        self._lib = _load_cudart(library)
        self._lib.cudaGetErrorString.restype = ctypes.c_char_p

    def _check(self, code: int, call: str) -> None:
        if code != 0:
            message = self._lib.cudaGetErrorString(code).decode()
            raise RuntimeError(f"CUDA {call} failed with error {code}: {message}")

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        return count.value if self._lib.cudaGetDeviceCount(ctypes.byref(count)) == 0 else 0

    def compute_capability(self, device: int = 0) -> str:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device), "cudaDeviceGetAttribute")
        self._check(self._lib.cudaDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device), "cudaDeviceGetAttribute")
        return f"{major.value}.{minor.value}"

    def device_name(self, device: int = 0) -> str:
        props = ctypes.create_string_buffer(_PROPS_BYTES)
        call = getattr(self._lib, "cudaGetDeviceProperties_v2", None) or self._lib.cudaGetDeviceProperties
        self._check(call(props, device), "cudaGetDeviceProperties")
        return props.raw[:256].split(b"\0", 1)[0].decode(errors="replace")

    def malloc(self, nbytes: int) -> int:
        pointer = ctypes.c_void_p()
        self._check(self._lib.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(nbytes)), f"cudaMalloc({nbytes})")
        return int(pointer.value)

    def free(self, pointer: int) -> None:
        self._check(self._lib.cudaFree(ctypes.c_void_p(pointer)), "cudaFree")

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self._check(self._lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return int(stream.value or 0)

    def stream_destroy(self, stream: int) -> None:
        self._check(self._lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def stream_synchronize(self, stream: int) -> None:
        self._check(self._lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def copy_to_device(self, pointer: int, array: np.ndarray, stream: int) -> None:
        self._check(self._lib.cudaMemcpyAsync(ctypes.c_void_p(pointer), ctypes.c_void_p(array.ctypes.data),
                                              ctypes.c_size_t(array.nbytes), _H2D, ctypes.c_void_p(stream)),
                    "cudaMemcpyAsync host->device")

    def copy_to_host(self, array: np.ndarray, pointer: int, stream: int) -> None:
        self._check(self._lib.cudaMemcpyAsync(ctypes.c_void_p(array.ctypes.data), ctypes.c_void_p(pointer),
                                              ctypes.c_size_t(array.nbytes), _D2H, ctypes.c_void_p(stream)),
                    "cudaMemcpyAsync device->host")


def _load_cudart(library: str | None) -> ctypes.CDLL:
    candidates = [library] if library else []
    try:  # the CUDA runtime wheel that the tensorrt wheel depends on
        import nvidia.cuda_runtime as wheel

        candidates += sorted(str(p) for p in Path(list(wheel.__path__)[0], "lib").glob("libcudart.so*"))
    except ImportError:
        pass
    candidates += [ctypes.util.find_library("cudart"), "libcudart.so", "libcudart.so.12", "libcudart.so.11.0"]
    for name in filter(None, candidates):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("the CUDA runtime library (libcudart) was not found; install the CUDA runtime (JetPack on "
                  "Jetson, `pip install nvidia-cuda-runtime-cu12` elsewhere) or use backend='onnxruntime'")


@dataclass(frozen=True)
class LocalTarget:
    """This machine as an engine sees it."""

    tensorrt: str
    gpu: str
    compute_capability: str


def local_target(cuda: Cuda | None = None) -> LocalTarget | None:
    """The local TensorRT version and GPU, or None when TensorRT, CUDA or a GPU is missing."""
    try:
        import tensorrt as trt

        cuda = cuda or Cuda()
    except (ImportError, OSError):
        return None
    if cuda.device_count() == 0:
        return None
    return LocalTarget(trt.__version__, cuda.device_name(), cuda.compute_capability())


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


class TensorRTSession:
    """A component run by its TensorRT engine (one optimization profile, shapes set per call)."""

    def __init__(self, bundle: Bundle, name: str, *, precision: str | None = None, cuda: Cuda | None = None):
        import tensorrt as trt

        self.component = bundle.component(name)
        self._cuda = cuda or Cuda()
        local = LocalTarget(trt.__version__, self._cuda.device_name(), self._cuda.compute_capability())
        self.engine_record = select_engine(self.component, local, precision)
        path = bundle.verify(str(self.engine_record["file"]))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise BundleError(f"{path}: TensorRT could not load this engine (see the log above); "
                              f"{_rebuild_hint(name, str(self.engine_record['precision']))}")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._declared = {t.name: t.dtype for t in self.component.outputs}
        self._stream = self._cuda.stream_create()
        self._buffers: dict[str, tuple[int, int]] = {}

    def _device(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                self._cuda.free(pointer)
            pointer, size = self._cuda.malloc(max(nbytes, 1)), max(nbytes, 1)
            self._buffers[name] = (pointer, size)
        return pointer

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        prepared = prepare_feeds(self.component, feeds)  # names, dtypes and the profile's ranges
        staged = {n: np.ascontiguousarray(prepared[n], dtype=self._dtypes[n]) for n in self._inputs}
        for name, array in staged.items():
            if not self._context.set_input_shape(name, array.shape):
                raise BundleError(f"{self.component.name}: TensorRT refused shape {list(array.shape)} for input "
                                  f"'{name}'; the engine profile is {self.engine_record.get('profile', {}).get(name)}")
            pointer = self._device(name, array.nbytes)
            self._cuda.copy_to_device(pointer, array, self._stream)
            self._context.set_tensor_address(name, pointer)
        results = {}
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BundleError(f"{self.component.name}: output '{name}' has a data-dependent shape {list(shape)}; "
                                  "this backend needs shapes that follow from the inputs (`python -m engines lint`)")
            results[name] = np.empty(shape, dtype=self._dtypes[name])
            self._context.set_tensor_address(name, self._device(name, results[name].nbytes))
        if not self._context.execute_async_v3(self._stream):
            raise RuntimeError(f"{self.component.name}: TensorRT execution failed (see the TensorRT log above)")
        for name, host in results.items():
            self._cuda.copy_to_host(host, self._buffers[name][0], self._stream)
        self._cuda.stream_synchronize(self._stream)
        outputs = {n: a.astype(self._declared.get(n, a.dtype), copy=False) for n, a in results.items()}
        check_finite(self.component, outputs)
        return outputs

    def close(self) -> None:
        """Free the device buffers and the stream (also done when the session is garbage collected)."""
        for pointer, _ in self._buffers.values():
            self._cuda.free(pointer)
        self._buffers.clear()
        if self._stream:
            self._cuda.stream_destroy(self._stream)
            self._stream = 0

    def __del__(self) -> None:
        if getattr(self, "_buffers", None) is not None and getattr(self, "_cuda", None) is not None:
            self.close()
