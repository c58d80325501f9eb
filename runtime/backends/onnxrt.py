"""The ONNX Runtime backend: a component's ONNX graph behind the ``Session`` interface (CPU, or CUDA when asked)."""
from __future__ import annotations

from pathlib import Path


import numpy as np

from runtime.backends.base import BaseSession
from runtime.bundle import Bundle, BundleError
from runtime.cpu import int8_saturates


def _ort_load_errors() -> tuple[type[Exception], ...]:
    """The exceptions ONNX Runtime raises for a file it cannot load (they derive from Exception only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidProtobuf", "InvalidGraph", "InvalidArgument", "NoSuchFile", "NotImplemented",
             "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def inference_session(graph: str | Path | bytes, *, providers: list[str] | None = None, threads: int = 0,
                      low_memory: bool = False, weights_folder: str | Path | None = None,
                      in_node_order: bool = False):
    """An ``onnxruntime.InferenceSession`` with the project's settings: full graph optimisation, quiet log,
    ``threads`` intra-op threads (0: one per physical core), no intra-op spinning, the CPU memory
    arena, ONNX Runtime's memory pattern unless ``low_memory``, and on an x86 CPU without VNNI the INT8
    kernels that do not saturate (:func:`runtime.cpu.int8_saturates`).

    ``graph`` is a file, or a serialized graph whose external weight files lie in ``weights_folder``.
    ``in_node_order`` runs the nodes in the graph's own order where it can (``PRIORITY_BASED``): a graph
    with side branches placed right after what they read (the calibration's reductions) then frees each
    tensor as early as the original graph does, where the default order kept them all alive.

    A pipeline alternates between several sessions; idle threads of one spinning for work
    would steal the cores the next session needs (2.5x slower end to end on a 2-core CPU).
    The arena hands the blocks a run frees to its next allocations. The memory pattern, from
    a session's second run at a shape, allocates that run's activations as one planned block
    on top: the fastest, but a 16-frame released UNet call then peaks at 10.2 GB instead of
    8.6 GB. ``low_memory`` keeps the arena and drops the pattern; without the arena each large
    tensor of a run is fresh memory from the system (a session's first 16-frame UNet call:
    64 GB of page faults, 121 s instead of 93 s) and the peak is higher still (8.9 GB; the
    measurements: docs/benchmarks/released.md). Results are the same bit for bit.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = not low_memory
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if int8_saturates():  # exact INT8 sums without VNNI (U8U8 kernels); FP32 graphs are not affected
        options.add_session_config_entry("session.x64quantprecision", "1")
    if in_node_order:
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    if weights_folder is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(weights_folder))
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options, providers=chosen)


class OrtSession(BaseSession):
    """A component run by ONNX Runtime (CPU by default, CUDA when available and asked for).

    ``graph`` runs another ONNX file of the component (e.g. its INT8 Q/DQ graph) behind the
    same manifest entry; by default the component's ONNX Runtime graph where the bundle has one (the
    same graph with fused attention, ``export.ort_attention``), else its standard graph.
    ``memory="low"`` runs without ONNX Runtime's memory pattern (see :func:`inference_session`).
    """

    options = frozenset({"providers", "threads", "graph", "memory"})
    label = "ONNX Runtime"

    def __init__(self, bundle: Bundle, name: str, *, providers: list[str] | None = None, threads: int = 0,
                 graph: str | Path | None = None, memory: str = "normal"):
        super().__init__(bundle.component(name))
        path = Path(graph) if graph is not None else bundle.onnxruntime_path(name)
        try:
            self._session = inference_session(path, providers=providers, threads=threads,
                                              low_memory=memory == "low")
        except _ort_load_errors() as exc:
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            raise BundleError(
                f"{name}: ONNX Runtime could not load {path} ({type(exc).__name__}: {reason}); expected a valid "
                "ONNX graph. The file matches the manifest, so it was written that way: export the bundle again."
            ) from exc
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(self._outputs, feeds)))

    def _release(self) -> None:
        self._session = None
