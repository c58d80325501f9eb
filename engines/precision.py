"""Which layers stay FP32 in reduced-precision builds, and how a build is typed.

FP16 overflows in normalisation statistics and softmax sums (the VAE decoder's
GroupNorm and mid-block attention are the known cases), so those ONNX nodes are
pinned to FP32 by op type. The rule applies to the components the ``keep_fp32``
switch names: ``vae`` (components whose name contains "vae"), ``all`` or ``none``.
"""
from __future__ import annotations

from pathlib import Path

KEEP_FP32_MODES = ("vae", "all", "none")

# ONNX op types whose outputs overflow or lose the sum in FP16.
FP32_OP_TYPES = frozenset({
    "InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt",
})
# The TensorRT layer types the ONNX parser makes from those nodes (trt.LayerType member names).
FP32_LAYER_TYPES = frozenset({"NORMALIZATION", "SOFTMAX", "REDUCE"})


def keep_fp32_applies(component: str, precision: str, mode: str) -> bool:
    """Whether the FP32 rule applies to ``component`` built at ``precision`` under ``mode``."""
    if mode not in KEEP_FP32_MODES:
        raise ValueError(f"unknown keep-fp32 mode {mode!r}; expected one of {', '.join(KEEP_FP32_MODES)}")
    if precision == "fp32" or mode == "none":
        return False
    return mode == "all" or "vae" in component.lower()


def fp32_node_names(graph: Path) -> list[str]:
    """Names of the nodes of ``graph`` that the FP32 rule pins (graph order; unnamed nodes skipped)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in FP32_OP_TYPES and node.name]


def layer_precisions_arg(names: list[str]) -> str:
    """trtexec's ``--layerPrecisions`` value pinning ``names`` to FP32."""
    for name in names:
        if "," in name or ":" in name:
            raise ValueError(f"node name {name!r} contains ',' or ':', which trtexec's --layerPrecisions cannot "
                             "express; rename the node or build with `python -m engines build`")
    return ",".join(f"{name}:fp32" for name in names)


def strongly_typed(trt_version: str, graph_float_type: str) -> bool:
    """Build a strongly typed network (types from the graph) rather than set FP16/INT8 builder flags.

    A graph already stored in FP16 carries its own types, and TensorRT 10 builds
    it strongly typed. An FP32 graph gets the FP16/INT8 flags (deprecated from
    TensorRT 10.12 on, still honoured), which let TensorRT choose per layer and
    honour the FP32 rule above.
    """
    major = int(trt_version.split(".")[0])
    return major >= 10 and graph_float_type == "float16"
