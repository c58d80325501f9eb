"""Export specs: which wrapper module becomes which graph, with which tensor names, traced on which inputs.

Each family's ``graphs.py`` declares its components as :class:`ComponentSpec` subclasses (the shape of
optimum's ``OnnxConfig`` and the TensorRT demo's per-model class): how the component's torch module is built,
the graphs (:class:`Graph`) it becomes (wrapper, input/output names, symbolic axes), seeded example inputs at
a shape, and the min/opt/max of the symbolic axes. Export loops over those specs; nothing about a graph is
decided elsewhere.

A :class:`GraphSpec` is one declared graph around a built module. Export, verify-reference and the parity
tests all run the same spec, in torch through :meth:`GraphSpec.run_torch` and under ONNX Runtime through
:func:`trace_graph` and :func:`check_graph` (``export.phases.export_component`` runs both for one component).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from export.onnx_io import export_onnx, run_onnx
from export.ort_attention import write_ort_graph
from runtime.arrays import agreement
from runtime.bundle import Component, TensorSpec

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

    def export(self, feeds: Mapping[str, np.ndarray], path: Path) -> Path:
        """Trace the module on ``feeds`` (by input name) and write the graph to ``path``; its axes stay symbolic."""
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.inputs]
        return export_onnx(self.module, args, path, input_names=self.inputs, output_names=self.outputs,
                           dynamic_axes=self.dynamic_axes)

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
class Graph:
    """One exported graph, declared: its name, the wrapper that makes it from its component's torch module
    (``wrap(module)``), its input/output tensor names and symbolic axes (``{tensor: {axis index: axis name}}``)."""

    name: str
    wrap: Callable[[Any], torch.nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: Mapping[str, Mapping[int, str]]

    def spec(self, module: Any) -> GraphSpec:
        """This graph around ``module`` (the component's module, or a golden case's), ready to run or trace."""
        return GraphSpec(self.name, self.wrap(module).eval(), list(self.inputs), list(self.outputs), self.dynamic_axes)


class Example(NamedTuple):
    """A graph around a built module, its example feeds, and the min/opt/max of its symbolic axes (by axis name;
    the axes a graph lacks are ignored): what export traces, checks and writes as the manifest's profile."""

    spec: GraphSpec
    feeds: dict[str, np.ndarray]
    ranges: dict[str, dict[str, int]]


class ComponentSpec(ABC):
    """One exported component, declared: the graphs its torch module becomes, seeded example inputs for them
    and the shape ranges of their symbolic axes. Subclasses (one per component, in the family's ``graphs.py``)
    also say how the module is built. ``name`` names the component in the export log."""

    name: str

    @abstractmethod
    def graphs(self) -> tuple[Graph, ...]:
        """The component's graphs, in the order export writes them."""

    @abstractmethod
    def example_inputs(self, module: Any, shape: Any = None) -> dict[str, dict[str, np.ndarray]]:
        """Seeded example feeds per graph name, made for the built ``module``, at ``shape`` (the family's example
        shape; ``None`` for its default)."""

    @abstractmethod
    def shape_ranges(self) -> dict[str, dict[str, int]]:
        """min/opt/max per symbolic axis name: the profile written to the manifest (TensorRT's optimisation
        profile)."""

    def plan(self, module: Any, shape: Any = None) -> list[Example]:
        """Every graph of the component around the built ``module``, with its example feeds at ``shape``."""
        feeds, ranges = self.example_inputs(module, shape), self.shape_ranges()
        return [Example(graph.spec(module), feeds[graph.name], ranges) for graph in self.graphs()]


@dataclass(frozen=True)
class GraphCheck:
    """ORT vs torch on the example inputs, per output."""

    name: str
    max_abs: float
    cosine: float
    seconds: float
    fused_attention: int = 0  # attentions fused in the ONNX Runtime graph (checked too: the worst of both is shown)

    def line(self) -> str:
        fused = f", {self.fused_attention} attentions fused for onnxruntime" if self.fused_attention else ""
        return (f"  {self.name:<16} onnxruntime vs torch: max abs {self.max_abs:.2e}, cosine {self.cosine:.8f} "
                f"(export {self.seconds:.1f} s{fused})")


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


def trace_graph(example: Example, path: Path) -> TracedGraph:
    """Run the example's graph in torch on its feeds and export it to ``path``, traced at the feeds' shapes."""
    start = time.perf_counter()
    spec, feeds, ranges = example
    reference = spec.run_torch(feeds)
    spec.export(feeds, path)
    detached = GraphSpec(spec.name, FreedModule(), spec.inputs, spec.outputs, spec.dynamic_axes)
    return TracedGraph(detached, path, feeds, reference, ranges, time.perf_counter() - start)


def check_graph(traced: TracedGraph) -> tuple[Component, GraphCheck, dict[str, np.ndarray]]:
    """Run the graph under ONNX Runtime on the example feeds, compare with torch and describe it as a
    component whose shape profile takes its symbolic axes' min/opt/max from the traced ranges."""
    start = time.perf_counter()
    spec, path, feeds = traced.spec, traced.path, traced.feeds
    graph_feeds = {n: feeds[n] for n in spec.inputs}
    found = run_onnx(path, graph_feeds)
    max_abs, cosine = compare_outputs(traced.reference, found)
    fused = write_ort_graph(path)
    if fused is not None:  # ONNX Runtime's own graph is checked against torch the same way
        fused_abs, fused_cosine = compare_outputs(traced.reference, run_onnx(fused[0], graph_feeds))
        max_abs, cosine = max(max_abs, fused_abs), min(cosine, fused_cosine)
    inputs, outputs = spec.tensor_specs(feeds, traced.reference)
    extra = tuple(sorted(p.name for p in path.parent.glob(path.name + ".data")))
    component = Component(
        name=spec.name,
        file=path.name,
        inputs=inputs,
        outputs=outputs,
        profile=spec.profile(feeds, traced.ranges),
        extra_files=extra,
        ort_graph=fused[0].name if fused else "",
    )
    seconds = traced.seconds + time.perf_counter() - start
    return component, GraphCheck(spec.name, max_abs, cosine, seconds, fused[1] if fused else 0), found
