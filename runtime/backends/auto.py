"""The rule ``backend="auto"`` follows: which backends it tries for a component, in order (docs/backends.md).

TensorRT comes first everywhere (it is usable only with an engine of the component for
the local GPU). On a CPU the choice between OpenVINO FP32 and ONNX Runtime FP32 is one
structural fact of the manifest: whether the component is one step of a token-by-token
loop, i.e. takes a cache that each call extends (AiT's ``decoder_step`` with its
``self_k``/``self_v``). Such a step does a few milliseconds of work per call and is called
hundreds of times per image; OpenVINO's per-call cost (about 1.4-1.8 ms more than ONNX
Runtime's at every past length measured) makes it 0.64-0.74x as fast there, so it runs on
ONNX Runtime. Every other component runs on OpenVINO, 1.04-1.26x faster on six of the
eight other released-size components measured (docs/backends.md lists the figures and
the two misses, 0.87x and 0.95x, that no property of the graph tells apart).
"""
from __future__ import annotations

from runtime.bundle import Component

STEP_ORDER = ("tensorrt", "onnxruntime")  # a step that extends a cache
GRAPH_ORDER = ("tensorrt", "openvino", "onnxruntime")  # every other component


def _extends(before: tuple[int | str, ...], after: tuple[int | str, ...], axis: int) -> bool:
    """``after`` is ``before`` with another symbolic size along ``axis`` and the same sizes elsewhere."""
    return (len(after) == len(before) and isinstance(after[axis], str) and after[axis] != before[axis]
            and all(a == b for i, (a, b) in enumerate(zip(before, after)) if i != axis))


def growing_caches(component: Component) -> tuple[str, ...]:
    """The inputs that are a cache each call extends: a symbolic axis whose profile starts at 0 (the first
    call has nothing cached) and an output of the same shape except along that axis (the cache one longer)."""
    found = []
    for spec in component.inputs:
        low = component.profile.get(spec.name, {}).get("min")
        if low is None:
            continue
        if any(isinstance(dim, str) and low[axis] == 0 and any(_extends(spec.shape, out.shape, axis)
                                                                for out in component.outputs)
               for axis, dim in enumerate(spec.shape)):
            found.append(spec.name)
    return tuple(found)


def auto_order(component: Component) -> tuple[str, ...]:
    """The backends ``auto`` tries for this component, first usable wins: see the module docstring."""
    return STEP_ORDER if growing_caches(component) else GRAPH_ORDER
