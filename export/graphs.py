"""Export specs: which wrapper module becomes which graph, with which tensor names.

A :class:`GraphSpec` is the single description of one exported graph. Export,
verify-reference and the parity tests all run the same spec, in torch through
:meth:`GraphSpec.run_torch` and under ONNX Runtime through :func:`trace_graph` and
:func:`check_graph` (``export.phases.export_component`` runs both for one component).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from export.onnx_io import export_onnx, run_onnx
from runtime.arrays import agreement
from runtime.bundle import Component, TensorSpec

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32"}


class MethodGraph(torch.nn.Module):
    """``module.<method>`` as a graph: the method's positional inputs in, its outputs out."""

    def __init__(self, module: torch.nn.Module, method: str = "forward"):
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *inputs):
        return getattr(self.module, self.method)(*inputs)


@dataclass
class GraphSpec:
    """One graph: a wrapper module, its input/output names and symbolic axes."""

    name: str
    module: torch.nn.Module
    inputs: Sequence[str]
    outputs: Sequence[str]
    dynamic_axes: Mapping[str, Mapping[int, str]]

    def run_torch(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.inputs]
        with torch.no_grad():
            result = self.module.eval()(*args)
        result = result if isinstance(result, (tuple, list)) else (result,)
        # under autocast an output may come out in BF16/FP16: numpy gets it as float32
        return {n: (r.float() if r.is_floating_point() else r).detach().cpu().numpy()
                for n, r in zip(self.outputs, result)}

    def profile(self, feeds: Mapping[str, np.ndarray], ranges: Mapping[str, Mapping[str, int]]) -> dict:
        """Per-input min/opt/max shapes: symbolic axes from ``ranges`` (by axis name), fixed axes as in ``feeds``."""
        profile = {}
        for name in self.inputs:
            axes = self.dynamic_axes.get(name, {})
            profile[name] = {level: tuple(ranges[axes[i]][level] if axes.get(i) in ranges else int(d)
                                          for i, d in enumerate(feeds[name].shape))
                             for level in ("min", "opt", "max")}
        return profile

    def tensor_specs(self, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> tuple:
        def spec(name: str, array: np.ndarray) -> TensorSpec:
            axes = self.dynamic_axes.get(name, {})
            shape = tuple(axes.get(i, int(d)) for i, d in enumerate(array.shape))
            return TensorSpec(name=name, dtype=str(array.dtype), shape=shape)

        return (
            tuple(spec(n, feeds[n]) for n in self.inputs),
            tuple(spec(n, outputs[n]) for n in self.outputs),
        )


@dataclass(frozen=True)
class GraphCheck:
    """ORT vs torch on the example inputs, per output."""

    name: str
    max_abs: float
    cosine: float
    seconds: float

    def line(self) -> str:
        return (f"  {self.name:<16} onnxruntime vs torch: max abs {self.max_abs:.2e}, cosine {self.cosine:.8f} "
                f"(export {self.seconds:.1f} s)")


def compare_outputs(reference: Mapping[str, np.ndarray], found: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """Worst max-abs error and lowest cosine over the outputs both dicts name."""
    scores = [agreement(reference[n], found[n]) for n in reference]
    return max(s.max_abs for s in scores), min(s.cosine for s in scores)


class FreedModule(torch.nn.Module):
    """Stands in for a traced graph's module once the trace no longer holds it."""

    def forward(self, *inputs):
        raise RuntimeError("this graph's torch module was released after tracing; run the exported graph instead")


@dataclass
class TracedGraph:
    """A graph written to ``path`` with the torch module's outputs on its example feeds; the module itself is
    not kept, so the caller can free it before :func:`check_graph` loads the graph into ONNX Runtime."""

    spec: GraphSpec
    path: Path
    feeds: Mapping[str, np.ndarray]
    reference: dict[str, np.ndarray]
    ranges: Mapping[str, Mapping[str, int]]
    seconds: float


def trace_graph(spec: GraphSpec, feeds: Mapping[str, np.ndarray], path: Path,
                ranges: Mapping[str, Mapping[str, int]]) -> TracedGraph:
    """Run ``spec`` in torch on ``feeds`` and export it to ``path``, traced at the shapes of ``feeds``."""
    start = time.perf_counter()
    reference = spec.run_torch(feeds)
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.inputs]
    export_onnx(spec.module, args, path, input_names=spec.inputs, output_names=spec.outputs,
                dynamic_axes=spec.dynamic_axes)
    detached = GraphSpec(spec.name, FreedModule(), spec.inputs, spec.outputs, spec.dynamic_axes)
    return TracedGraph(detached, path, feeds, reference, ranges, time.perf_counter() - start)


def check_graph(traced: TracedGraph) -> tuple[Component, GraphCheck, dict[str, np.ndarray]]:
    """Run the graph under ONNX Runtime on the example feeds, compare with torch and describe it as a
    component whose shape profile takes its symbolic axes' min/opt/max from the traced ranges."""
    start = time.perf_counter()
    spec, path, feeds = traced.spec, traced.path, traced.feeds
    found = run_onnx(path, {n: feeds[n] for n in spec.inputs})
    max_abs, cosine = compare_outputs(traced.reference, found)
    inputs, outputs = spec.tensor_specs(feeds, traced.reference)
    extra = tuple(sorted(p.name for p in path.parent.glob(path.name + ".data")))
    component = Component(
        name=spec.name,
        file=path.name,
        inputs=inputs,
        outputs=outputs,
        profile=spec.profile(feeds, traced.ranges),
        extra_files=extra,
    )
    seconds = traced.seconds + time.perf_counter() - start
    return component, GraphCheck(spec.name, max_abs, cosine, seconds), found
