"""Write per-component Q/DQ INT8 graphs and TensorRT calibration caches, and register them in the manifest.

Explicit quantization as TensorRT consumes it: symmetric INT8 activations
(per tensor), symmetric per-channel INT8 weights (full 8-bit range),
QuantizeLinear/DequantizeLinear pairs in front of the weighted ops (Conv, MatMul, Gemm).
The same graph is exact on every CPU where the runtime runs it on ONNX Runtime: on an x86
CPU without INT8 dot products (no VNNI or AMX) its sessions use the kernels that do not sum
u8 x s8 pairs in int16 (:func:`runtime.cpu.int8_saturates`). Weights within +-64 (ONNX
Runtime's ``reduce_range``) would avoid the saturation for every backend, but cost 4 dB on
the released ImageBind vision encoder (26.9 dB against FP32, where 8-bit weights give 30.8 dB
with those kernels on an AMD EPYC Zen 3); OpenVINO, which has no such kernels, says so where
its INT8 sums saturate. Ranges come from the
recorded calibration data (minmax: :mod:`calibration.ranges`; percentile and
entropy: ONNX Runtime's histogram calibrators). Sensitive layers
(the first and last convolution, attention softmax and the product it feeds,
normalisation; in a diffusion UNet also the skip-connection convolutions and the
last decoder block: :func:`sensitive_nodes`) stay in higher precision, and the
list goes into the manifest.
"""
from __future__ import annotations

import fnmatch
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from calibration.cache import DEFAULT_TRT_VERSION, activation_scales, write_cache
from calibration.ranges import minmax_ranges, write_minmax_cache
from calibration.store import CalibrationData, CalibrationDataError
from runtime.bundle import Bundle, BundleError, write_manifest

METHODS = ("minmax", "percentile", "entropy")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
NORM_OPS = frozenset({"GroupNormalization", "LayerNormalization", "InstanceNormalization"})
PERCENTILE = 99.999
PROTOBUF_LIMIT = 2**31 - 2**26  # a graph whose weights pass protobuf's 2 GiB (with margin) keeps them outside


def int8_names(graph_file: str) -> tuple[str, str]:
    """Bundle-relative Q/DQ graph and calibration cache of a component graph: ``<stem>.int8.onnx``, ``.int8.cache``."""
    path = PurePosixPath(graph_file)
    return str(path.with_name(f"{path.stem}.int8.onnx")), str(path.with_name(f"{path.stem}.int8.cache"))


def _scope_index(name: str, scope: str) -> int | None:
    """N of the ``/<scope>.N/`` path element in an exported node name, if the node lies in one."""
    for part in name.split("/"):
        head, _, index = part.partition(".")
        if head == scope and index.isdigit():
            return int(index)
    return None


def sensitive_nodes(model) -> dict[str, str]:
    """Nodes kept in higher precision by default, each with its reason.

    Every graph: the first and last convolution, attention softmax and the product it feeds,
    normalisation, and a weighted op whose input is a constant (Swin V2's relative-position MLP on its
    coordinates table: computed the same every call, and ONNX Runtime's s8 -> u8 rewrite for its exact
    kernels on x86 without VNNI refused the graph with it quantized: "Attempt to replace the existing tensor").
    A diffusion UNet (nodes under ``output_blocks.N``) also keeps its skip-connection
    convolutions (they add the encoder's activations, on another scale, to the decoder's) and its last
    decoder block (its error reaches the output unattenuated): on the released T2V-512 UNet that took
    ONNX Runtime's held-out SNR from 29.7/31.1 dB to 31.8/33.6 dB (OpenVINO's from 23.2/24.6 to
    31.6/33.3 dB), at 1.57x over FP32 on ONNX Runtime and 2.47x on OpenVINO (docs/benchmarks/released.md).
    """
    nodes = list(model.graph.node)
    chosen: dict[str, str] = {}
    decoder_blocks = [i for i in (_scope_index(n.name, "output_blocks") for n in nodes) if i is not None]
    for node in nodes:
        if "skip_connection" in node.name.split("/") and node.op_type in QUANTIZED_OPS:
            chosen[node.name] = "skip-connection convolution"
        elif decoder_blocks and _scope_index(node.name, "output_blocks") == max(decoder_blocks) \
                and node.op_type in QUANTIZED_OPS:
            chosen[node.name] = "last decoder block"
    varying = {i.name for i in model.graph.input}  # tensors that change from call to call
    for node in nodes:
        if varying.intersection(node.input):
            varying.update(node.output)
    for node in nodes:
        if node.op_type in QUANTIZED_OPS and node.input and node.input[0] not in varying:
            chosen[node.name] = "constant input"
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    if convs:
        chosen[convs[0]] = "first convolution"
        chosen[convs[-1]] = "last convolution"
    softmax_outputs = {out for n in nodes if n.op_type == "Softmax" for out in n.output}
    for node in nodes:
        if node.op_type == "Softmax":
            chosen[node.name] = "attention softmax"
        elif node.op_type == "MatMul" and softmax_outputs.intersection(node.input):
            chosen[node.name] = "attention probabilities x values"
        elif node.op_type in NORM_OPS:
            chosen[node.name] = "normalisation"
    return chosen


def excluded_nodes(model, patterns: list[str], *, keep_sensitive: bool = True) -> dict[str, str]:
    """The sensitive nodes (unless ``keep_sensitive`` is off) plus the nodes matching ``--exclude`` globs."""
    chosen = sensitive_nodes(model) if keep_sensitive else {}
    names = [n.name for n in model.graph.node]
    for pattern in patterns:
        matched = fnmatch.filter(names, pattern)
        chosen.update({name: f"--exclude {pattern}" for name in matched if name not in chosen})
    return chosen


def _reader(data: CalibrationData, component: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._records: Iterator = data.records(component, "calibration")

        def get_next(self):
            return next(self._records, None)

    return Reader()


def quantize_component(bundle: Bundle, component: str, data: CalibrationData, *, method: str,
                       excluded: dict[str, str], trt_version: str = DEFAULT_TRT_VERSION) -> dict:
    """Write the Q/DQ graph and cache of one component; returns its manifest ``int8`` entry.

    ONNX Runtime reads the FP32 graph from the bundle itself; minmax ranges come from
    :mod:`calibration.ranges` (one copy of the weights in memory), histogram methods from ONNX Runtime's
    calibrators. The ranges are kept beside the data (:meth:`CalibrationData.ranges_path`) and reused by
    the next quantization.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if next(data.records(component, "calibration"), None) is None:
        raise CalibrationDataError(f"{data.root}: no calibration records of '{component}' outside the held-out "
                                   "samples; collect more --samples")
    graph_rel, cache_rel = int8_names(bundle.component(component).file)
    large = bundle.weight_bytes(component) > PROTOBUF_LIMIT
    ranges = data.ranges_path(component, method)
    if method == "minmax" and not ranges.is_file():  # ONNX Runtime's calibrator would hold three copies
        write_minmax_cache(ranges, minmax_ranges(bundle.component_path(component),
                                                 data.records(component, "calibration"), QUANTIZED_OPS))
    calibrate = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                 "entropy": CalibrationMethod.Entropy}[method]
    quantize_static(
        str(bundle.component_path(component)), str(bundle.root / graph_rel), _reader(data, component),
        calibration_cache_path=ranges, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, nodes_to_exclude=list(excluded), calibrate_method=calibrate,
        use_external_data_format=large,
        # DedicatedQDQPair: a tensor read by a quantized node and by a node kept in higher precision (the UNet's
        # time embedding, the text context) reaches the latter unquantized
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibPercentile": PERCENTILE,
                       "DedicatedQDQPair": True})
    scales = activation_scales(onnx.load(str(bundle.root / graph_rel)))
    write_cache(bundle.root / cache_rel, scales, trt_version)
    weights = [f"{graph_rel}.data"] if (bundle.root / f"{graph_rel}.data").is_file() else []
    return {"graph": graph_rel, "cache": cache_rel, "graph_data": weights, "method": method,
            "quantized_ops": list(QUANTIZED_OPS),
            "activations": "int8 symmetric per tensor", "weights": "int8 symmetric per channel",
            "excluded_nodes": excluded, "tensors_in_cache": len(scales), "tensorrt_cache_version": trt_version,
            "calibration_records": sum(1 for _ in data.records(component, "calibration")),
            "calibration_data": str(Path(data.root).resolve()), "onnxruntime": onnxruntime.__version__}


def quantize(bundle_root: str | Path, data_root: str | Path, *, method: str = "minmax",
             exclude: list[str] | None = None, components: list[str] | None = None, keep_sensitive: bool = True,
             trt_version: str = DEFAULT_TRT_VERSION, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Quantize every recorded component (or the named ones) and rewrite the manifest once, atomically."""
    import onnx

    bundle = Bundle(bundle_root)
    data = CalibrationData.open(data_root)
    data.check_bundle(bundle.manifest.family, bundle.manifest.variant)
    names = components or [c for c in data.components if c in bundle.manifest.components]
    if not names:
        raise BundleError(f"none of the recorded components {data.components} is in {bundle.root}")
    models = {name: onnx.load(str(bundle.component_path(name)), load_external_data=False) for name in names}
    excluded = {name: excluded_nodes(model, exclude or [], keep_sensitive=keep_sensitive)
                for name, model in models.items()}
    for pattern in exclude or []:
        if not any(fnmatch.filter([n.name for n in m.graph.node], pattern) for m in models.values()):
            raise ValueError(f"--exclude {pattern!r} matches no node of {', '.join(names)} (node names look like "
                             f"{models[names[0]].graph.node[0].name!r}); use a glob such as '*attn1*'")
    manifest = bundle.manifest
    entries = {}
    for name in names:
        entry = quantize_component(bundle, name, data, method=method, excluded=excluded[name],
                                   trt_version=trt_version)
        for rel in (entry["graph"], entry["cache"], *entry["graph_data"]):
            manifest.files[rel] = {}
        manifest.components[name] = replace(manifest.components[name], int8=entry)
        entries[name] = entry
        log(f"{name}: wrote {entry['graph']} and {entry['cache']} ({method}, {entry['calibration_records']} records, "
            f"{len(entry['excluded_nodes'])} nodes kept in higher precision)")
    write_manifest(bundle.root, manifest)
    return entries
