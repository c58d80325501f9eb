"""Measuring for ``python -m benchmarks``: medians of repeated runs, peak host memory, graph FLOPs.

Peak memory is the resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``) above the resident set before the call, so native
allocations of ONNX Runtime and torch count, not only Python's.
FLOPs are counted from the ONNX graph (Conv, ConvTranspose, MatMul, Gemm; one
multiply-add = 2 FLOPs) after shape inference with the concrete input shapes.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from runtime.pipeline import Pipeline

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def write_json(path: Path, data: Any) -> None:
    """Write a benchmark result as indented JSON (folders made) and say where."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    print(f"wrote {path}")


@dataclass
class Timing:
    median_s: float
    runs_s: list[float]
    peak_mb: float | None


def _status_kb(key: str) -> int | None:
    if not _STATUS.is_file():
        return None
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:  # not Linux, or not permitted: peak memory is then not reported
        return False


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Median wall time of ``repeats`` calls after ``warmup`` calls, and the peak RSS rise over all of them."""
    can_reset = _reset_peak()
    before = _status_kb("VmRSS")
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    peak = _status_kb("VmHWM")
    peak_mb = (peak - before) / 1024 if can_reset and peak is not None and before is not None else None
    return Timing(statistics.median(runs), runs, peak_mb)


class TimedSession:
    """A session proxy that adds the time spent in ``run`` to ``clock[name]`` (and appends it to ``calls[name]``).

    A low-memory pipeline's session opens its component inside ``run`` (and frees the one before):
    that part (its ``switch_s``) goes to ``switching[name]`` instead, so ``clock`` holds graph time only.
    """

    def __init__(self, session, clock: dict[str, float], switching: dict[str, float] | None = None,
                 calls: dict[str, list[float]] | None = None):
        self.session = session
        self.component = session.component
        self.clock = clock
        self.switching = {} if switching is None else switching
        self.calls = {} if calls is None else calls

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        switched = getattr(self.session, "switch_s", 0.0)
        start = time.perf_counter()
        try:
            return self.session.run(feeds)
        finally:
            elapsed = time.perf_counter() - start
            name = self.component.name
            switch = getattr(self.session, "switch_s", 0.0) - switched
            self.clock[name] = self.clock.get(name, 0.0) + elapsed - switch
            self.calls.setdefault(name, []).append(elapsed - switch)
            if switch:
                self.switching[name] = self.switching.get(name, 0.0) + switch


def time_graphs(pipeline: Pipeline, call: Callable[[], Any]) -> dict[str, Any]:
    """Run ``call()`` once with every session of the pipeline timed; where the time went.

    ``end_to_end_s`` = ``graph_s`` (per component, inside the graphs) + ``switch_s`` (a low-memory
    pipeline opening and freeing components) + ``outside_graphs_s`` (numpy: tokenizer, sampler,
    guidance, decode post-processing); ``outside_graphs_share`` is the last over the whole;
    ``graph_calls_s`` each component's calls, in order (``graph_s`` is their sum).
    The pipeline's own sessions are put back afterwards.
    """
    clock: dict[str, float] = {}
    switching: dict[str, float] = {}
    calls: dict[str, list[float]] = {}
    with pipeline.substituted(lambda _name, session: TimedSession(session, clock, switching, calls)):
        start = time.perf_counter()
        call()
        total = time.perf_counter() - start
    outside = total - sum(clock.values()) - sum(switching.values())
    return {"end_to_end_s": total, "graph_s": clock, "switch_s": switching, "outside_graphs_s": outside,
            "outside_graphs_share": outside / total, "graph_calls_s": calls}


@dataclass
class FlopCount:
    flops: int
    nodes: int
    unresolved: list[str] = field(default_factory=list)


def _known_shapes(model) -> dict[str, list[int | None]]:
    shapes = {}
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _node_flops(node, shapes: Mapping[str, list[int | None]]) -> int | None:
    out = shapes.get(node.output[0])
    a, b = (shapes.get(name) for name in node.input[:2])
    if out is None or a is None or b is None or None in out or None in a or None in b:
        return None
    if node.op_type == "Conv":
        group = next((att.i for att in node.attribute if att.name == "group"), 1) or 1
        return 2 * int(np.prod(out)) * (a[1] // group) * int(np.prod(b[2:]))
    if node.op_type == "ConvTranspose":
        return 2 * int(np.prod(a)) * int(np.prod(b[1:]))
    if node.op_type == "MatMul":
        return 2 * int(np.prod(out)) * a[-1]
    trans_a = next((att.i for att in node.attribute if att.name == "transA"), 0)
    return 2 * int(np.prod(out)) * (a[0] if trans_a else a[1])


def _weights_as_inputs(model):
    """``model`` with each initializer whose values live in an external file made a graph input of the same type
    and shape: shape inference needs only their shapes, and would otherwise read every weight file (a released
    UNet's 5.6 GB) from the current folder."""
    from onnx import external_data_helper, helper

    external = [t for t in model.graph.initializer if external_data_helper.uses_external_data(t)]
    for tensor in external:
        model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        model.graph.initializer.remove(tensor)
    return model


def graph_flops(graph: str | Path | bytes, input_shapes: Mapping[str, tuple[int, ...]]) -> FlopCount:
    """FLOPs of one run of ``graph`` (a file, or a serialized graph) with the given concrete input shapes."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = (onnx.load_from_string(graph) if isinstance(graph, bytes)
             else onnx.load(str(graph), load_external_data=False))
    model = _weights_as_inputs(model)
    for value in model.graph.input:
        if value.name not in input_shapes:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, input_shapes[value.name]):
            dim.Clear()
            dim.dim_value = int(size)
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = _known_shapes(inferred)
    count = FlopCount(0, 0)
    for node in inferred.graph.node:
        if node.op_type not in _COUNTED_OPS:
            continue
        flops = _node_flops(node, shapes)
        count.nodes += 1
        if flops is None:
            count.unresolved.append(node.name or node.op_type)
        else:
            count.flops += flops
    return count


@dataclass
class Row:
    """One line of the benchmark table; ``curve``/``x`` place it on a plot."""

    family: str
    bundle: str
    item: str
    shape: str
    backend: str
    runtime_ms: float
    torch_ms: float | None = None
    gflop: float | None = None
    runtime_peak_mb: float | None = None
    torch_peak_mb: float | None = None
    curve: str | None = None
    x: float | None = None
    precision: str | None = None  # what the backend ran in (fp32, bf16, int8); None where not recorded
    cosine: float | None = None  # the output's agreement with torch's (worst float output)
    snr_db: float | None = None
    backend_fp32_ms: float | None = None  # for a bf16/int8 row: the same backend's fp32 time on the same feeds

    @property
    def speedup(self) -> float | None:
        """torch time / runtime time: above 1 the runtime is faster."""
        return None if self.torch_ms is None else self.torch_ms / self.runtime_ms

    @property
    def over_fp32(self) -> float | None:
        """The same backend's fp32 time / this row's time: above 1 this precision is faster."""
        return None if self.backend_fp32_ms is None else self.backend_fp32_ms / self.runtime_ms

    @property
    def gflops_per_s(self) -> float | None:
        return None if self.gflop is None else self.gflop / (self.runtime_ms / 1000.0)


@dataclass
class FamilyReport:
    """What one family's benchmark found: table rows, plots, and figures that are not rows (e.g. overheads)."""

    rows: list[Row] = field(default_factory=list)
    plots: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
