"""TensorRT calibration caches (implicit quantization) and the scales of a Q/DQ graph.

The cache is text: a header ``TRT-<version>-EntropyCalibration2`` (version as
TensorRT writes it, 8.6.2 -> 8602), then one ``tensor_name: <hex>`` line per
tensor, the hex being the big-endian bits of the float32 scale amax/127.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

CALIBRATOR = "EntropyCalibration2"
DEFAULT_TRT_VERSION = "8.6.2"  # JetPack 6; JetPack 5 ships 8.5.2


def version_code(version: str) -> str:
    """``8.6.2`` -> ``8602`` (major, minor, patch with two digits for the patch), as in TensorRT's header."""
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3]):
        raise ValueError(f"TensorRT version should look like 8.6.2, found {version!r}")
    major, minor, patch = (int(p) for p in (parts + ["0"])[:3])
    return f"{major}{minor}{patch:02d}"


def scale_hex(scale: float) -> str:
    return struct.pack(">f", float(scale)).hex()


def hex_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def write_cache(path: Path, scales: dict[str, float], trt_version: str = DEFAULT_TRT_VERSION) -> None:
    for name in scales:
        if ": " in name or "\n" in name:
            raise ValueError(f"tensor name {name!r} contains ': ' or a newline, which the cache format cannot hold")
    lines = [f"TRT-{version_code(trt_version)}-{CALIBRATOR}"]
    lines += [f"{name}: {scale_hex(scale)}" for name, scale in scales.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_cache(path: Path) -> tuple[str, dict[str, float]]:
    """(header, {tensor: scale}) of a calibration cache."""
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    if not header.startswith("TRT-"):
        raise ValueError(f"{path}: first line is {header!r}, expected a 'TRT-<version>-<calibrator>' header")
    scales = {}
    for number, line in enumerate(lines, start=2):
        name, sep, value = line.rpartition(": ")
        if not sep:
            raise ValueError(f"{path}:{number}: expected 'tensor: hexscale', found {line!r}")
        scales[name] = hex_scale(value)
    return header, scales


def activation_scales(model) -> dict[str, float]:
    """Scale of every activation a Q/DQ graph quantizes: input of a QuantizeLinear -> its scale.

    Weights (initializers) are left out: TensorRT computes their scales itself.
    """
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    scales = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        scale = numpy_helper.to_array(initializers[node.input[1]])
        if scale.size != 1:
            raise ValueError(f"{node.name}: activation scale has {scale.size} values, expected one (per tensor)")
        scales[node.input[0]] = float(np.asarray(scale).reshape(()))
    return scales
