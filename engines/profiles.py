"""Optimization profiles and file names, derived from a component's manifest entry.

A component's ``profile`` (``{input: {"min": [..], "opt": [..], "max": [..]}}``)
becomes one TensorRT optimization profile; inputs whose shape is fully static
get min = opt = max = their declared shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from runtime.bundle import Bundle, BundleError, Component

PRECISIONS = ("fp32", "fp16", "int8")
LEVELS = ("min", "opt", "max")


@dataclass(frozen=True)
class InputRange:
    """The min/opt/max shapes of one input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]
    dynamic: bool = True

    def level(self, level: str) -> tuple[int, ...]:
        return getattr(self, level)


def profile_of(component: Component) -> tuple[InputRange, ...]:
    """One :class:`InputRange` per input, in manifest order; refuses incomplete or inconsistent ranges."""
    ranges = []
    for spec in component.inputs:
        bounds = component.profile.get(spec.name)
        if bounds is None:
            if not all(isinstance(d, int) for d in spec.shape):
                raise BundleError(
                    f"{component.name}: input '{spec.name}' has dynamic shape {list(spec.shape)} but no "
                    "min/opt/max profile in the manifest; re-export the bundle with a shape range for it"
                )
            static = tuple(int(d) for d in spec.shape)
            ranges.append(InputRange(spec.name, static, static, static, dynamic=False))
            continue
        missing = [lvl for lvl in LEVELS if lvl not in bounds]
        if missing:
            raise BundleError(f"{component.name}: profile of '{spec.name}' lacks {missing}; expected min, opt, max")
        low, opt, high = (tuple(int(d) for d in bounds[lvl]) for lvl in LEVELS)
        for lvl, dims in zip(LEVELS, (low, opt, high)):
            if len(dims) != len(spec.shape):
                raise BundleError(
                    f"{component.name}: profile {lvl} of '{spec.name}' is {list(dims)}, expected rank "
                    f"{len(spec.shape)} like {list(spec.shape)}"
                )
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            raise BundleError(
                f"{component.name}: profile of '{spec.name}' needs min <= opt <= max per axis, found "
                f"min {list(low)}, opt {list(opt)}, max {list(high)}"
            )
        ranges.append(InputRange(spec.name, low, opt, high))
    return tuple(ranges)


def profile_json(ranges: tuple[InputRange, ...]) -> dict[str, dict[str, list[int]]]:
    """The profile as the manifest's engine records store it."""
    return {r.name: {lvl: list(r.level(lvl)) for lvl in LEVELS} for r in ranges}


def shapes_arg(ranges: tuple[InputRange, ...], level: str) -> str:
    """trtexec's ``name:1x4x8,other:2x77`` form of one profile level (dynamic inputs only)."""
    return ",".join(f"{r.name}:{'x'.join(str(d) for d in r.level(level))}" for r in ranges if r.dynamic)


def plan_name(component: str, precision: str) -> str:
    """The engine file of one component at one precision: ``<component>.<precision>.plan``."""
    check_precision(precision)
    return f"{component}.{precision}.plan"


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def source_graph(bundle: Bundle, component: Component, precision: str) -> str:
    """The bundle-relative ONNX file an engine of ``precision`` is built from.

    INT8 builds use the Q/DQ graph the calibration stage writes next to the FP32
    graph (``<stem>.int8.onnx``); FP32 and FP16 builds use the exported graph.
    """
    check_precision(precision)
    if precision != "int8":
        return component.file
    path = PurePosixPath(component.file)
    quantized = str(path.with_name(f"{path.stem}.int8.onnx"))
    if quantized not in bundle.manifest.files:
        raise BundleError(
            f"{component.name}: an INT8 engine needs the Q/DQ graph {quantized}, which {bundle.root} does not "
            "list; run the calibration stage on this bundle first, or build with --precision fp16"
        )
    return quantized


def select_components(bundle: Bundle, names: list[str] | None) -> list[Component]:
    """The named components (all when ``names`` is empty), refusing unknown names with the known ones."""
    return [bundle.component(n) for n in (names or list(bundle.manifest.components))]

