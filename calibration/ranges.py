"""Min/max activation ranges over the calibration records, with one copy of the weights in memory.

ONNX Runtime's own min/max calibrator loads a graph three times (the quantizer's copy,
the calibrator's copy, the session over its augmented copy): for a released-size UNet
(4.6 GB of weights) that passed 24 GB and was killed. This one reads only the graph's
structure (``load_external_data=False``), adds a ``ReduceMin``/``ReduceMax`` pair right
after the producer of each tensor the quantizer needs (the inputs and outputs of the
quantized op types, as ONNX Runtime's calibrator selects them), and runs that graph in
one ONNX Runtime session whose weights are the bundle's own files. The ranges are written
in ONNX Runtime's calibration-cache format, so ``quantize_static`` then reads them instead
of calibrating again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from calibration.store import CalibrationDataError


def calibrated_tensors(model, op_types: Sequence[str]) -> list[str]:
    """Every non-weight tensor read or written by a node of ``op_types``, in graph order."""
    weights = {i.name for i in model.graph.initializer}
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type in op_types:
            seen.update((t, None) for t in (*node.input, *node.output) if t and t not in weights)
    return list(seen)


def _with_reductions(model, tensors: list[str]) -> list[tuple[str, str]]:
    """Add a min and a max reduction of each tensor right after its producer (so the memory planner frees
    the tensor as early as before) and make them graph outputs; returns the (min, max) output names."""
    from onnx import TensorProto, helper

    wanted = set(tensors)
    names = {t: (f"calibration_min_{i}", f"calibration_max_{i}") for i, t in enumerate(tensors)}

    def reductions(produced: Iterable[str]) -> list:
        return [helper.make_node(op, [t], [out], keepdims=0)
                for t in produced if t in wanted for op, out in zip(("ReduceMin", "ReduceMax"), names[t])]

    nodes = reductions(i.name for i in model.graph.input)
    for node in model.graph.node:
        nodes += [node, *reductions(node.output)]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.output.extend(helper.make_tensor_value_info(out, TensorProto.FLOAT, [])
                              for pair in names.values() for out in pair)
    return [names[t] for t in tensors]


def minmax_ranges(graph: Path, records: Iterable[Mapping[str, np.ndarray]],
                  op_types: Sequence[str]) -> dict[str, tuple[np.float32, np.float32]]:
    """The lowest and highest value each calibrated tensor of ``graph`` takes over ``records``."""
    import onnx

    from runtime.backends.onnxrt import inference_session

    model = onnx.load(str(graph), load_external_data=False)
    tensors = calibrated_tensors(model, op_types)
    outputs = _with_reductions(model, tensors)
    augmented = model.SerializeToString()  # the structure, plus any weights stored inside the graph file
    del model
    session = inference_session(augmented, weights_folder=Path(graph).parent, in_node_order=True)
    del augmented
    low = np.full(len(tensors), np.inf, np.float32)
    high = np.full(len(tensors), -np.inf, np.float32)
    flat = [name for pair in outputs for name in pair]
    count = 0
    for feeds in records:
        found = np.asarray(session.run(flat, dict(feeds)), np.float32).reshape(-1, 2)
        low, high = np.minimum(low, found[:, 0]), np.maximum(high, found[:, 1])
        count += 1
    if not count:
        raise CalibrationDataError(f"{graph}: no calibration records to compute ranges from")
    return {t: (np.float32(lo), np.float32(hi)) for t, lo, hi in zip(tensors, low, high)}


def write_minmax_cache(path: Path, ranges: Mapping[str, tuple[np.float32, np.float32]]) -> None:
    """Write ``ranges`` as ONNX Runtime's calibration cache (what ``quantize_static(calibration_cache_path=)``
    reads back)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    save_tensors_data(TensorsData(CalibrationMethod.MinMax, dict(ranges)), path)
