"""The rule ``backend="auto"`` follows: which backends it tries for a component, in order, and why
(docs/backends.md).

TensorRT comes first everywhere (it is usable only with an engine of the component for
the local GPU). On a CPU the choice between OpenVINO FP32 and ONNX Runtime FP32 is first
one structural fact of the manifest: whether the component is one step of a token-by-token
loop, i.e. takes a cache that each call extends (AiT's ``decoder_step`` with its
``self_k``/``self_v``). Such a step does a few milliseconds of work per call and is called
hundreds of times per image; OpenVINO's per-call cost (about 1.4-1.8 ms more than ONNX
Runtime's at every past length measured) makes it 0.64-0.74x as fast there, so it runs on
ONNX Runtime. The second is whether the bundle gives the component an ONNX Runtime graph
(attention fused into ``MultiHeadAttention``, ``export.ort_attention``): such a component runs on
ONNX Runtime, which never holds an attention's whole score matrix (the released T2V-Turbo UNet at
16 frames on AVX2: 116.6 s a call and 8.5 GiB, OpenVINO FP32 119.0 s and 15.2 GiB, over the 12 GiB
budget). Every other component runs on OpenVINO (1.04-1.26x faster on six of the
eight other released-size components measured on AVX-512), except where a released
component was measured on this CPU's class with ONNX Runtime at least :data:`MARGIN`
faster (:data:`MEASURED`): on AVX2 the ImageBind-huge audio encoder (1.21x) and the
VideoCrafter1 text encoder (1.35x). :func:`auto_choice` says which rule decided.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.bundle import Component
from runtime.cpu import Cpu, this_cpu

STEP_ORDER = ("tensorrt", "onnxruntime")  # a step that extends a cache
GRAPH_ORDER = ("tensorrt", "openvino", "onnxruntime")  # every other component
ORT_FIRST = ("tensorrt", "onnxruntime", "openvino")  # where ONNX Runtime measured faster on this CPU class
MARGIN = 1.10  # a measured speed-up below this is within run-to-run noise on a shared 2-core machine

# CPU class -> (family, variant, component) -> (ONNX Runtime ms, OpenVINO ms), FP32, released size, batch 1
# unless the benchmark's shape says otherwise, on an idle 2-core machine (docs/benchmarks/released.md).
MEASURED: dict[str, dict[tuple[str, str, str], tuple[float, float]]] = {
    "AVX2": {  # AMD EPYC Zen 3
        ("imagebind", "imagebind_huge", "vision_encoder"): (3121.9, 2965.4),
        ("imagebind", "imagebind_huge", "text_encoder"): (510.1, 531.7),
        ("imagebind", "imagebind_huge", "audio_encoder"): (1212.0, 1471.6),
        ("imagebind", "imagebind_huge", "depth_encoder"): (121.0, 112.1),
        ("videocrafter1", "t2v-512", "text_encoder"): (686.7, 926.9),
    },
}


@dataclass(frozen=True)
class AutoChoice:
    """The backends ``auto`` tries for a component, first usable wins, and the reason in one sentence."""

    order: tuple[str, ...]
    why: str


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


def auto_choice(component: Component, family: str = "", variant: str = "", cpu: Cpu | None = None) -> AutoChoice:
    """The order ``auto`` tries backends in for ``component`` (of a ``family`` / ``variant`` bundle) on ``cpu``
    (default: this one), and why: see the module docstring."""
    cpu = cpu or this_cpu()
    caches = growing_caches(component)
    if caches:
        return AutoChoice(STEP_ORDER, f"{component.name} extends a cache on every call ({', '.join(caches)}): "
                                      "ONNX Runtime, whose per-call cost is 1.4-1.8 ms below OpenVINO's")
    if component.ort_graph:
        return AutoChoice(ORT_FIRST, f"{component.name} has an ONNX Runtime graph with fused attention "
                                     f"({component.ort_graph}): ONNX Runtime, as fast as OpenVINO FP32 and 6.7 GiB "
                                     "below it on the released T2V-Turbo UNet at 16 frames")
    measured = MEASURED.get(cpu.isa, {}).get((family, variant, component.name))
    if measured and measured[1] >= MARGIN * measured[0]:
        ort_ms, ov_ms = measured
        return AutoChoice(ORT_FIRST, f"{family} {variant} {component.name} measured on {cpu.isa}: ONNX Runtime "
                                     f"{ort_ms:g} ms, OpenVINO {ov_ms:g} ms (FP32)")
    basis = (f"measured on {cpu.isa}: OpenVINO {measured[1]:g} ms, ONNX Runtime {measured[0]:g} ms (FP32)"
             if measured else "on AVX-512 OpenVINO FP32 was 1.04-1.26x ONNX Runtime on six of eight released graphs")
    return AutoChoice(GRAPH_ORDER, f"{component.name} is a whole graph per call: OpenVINO first ({basis})")

