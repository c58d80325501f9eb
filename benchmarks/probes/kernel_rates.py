"""The arithmetic rate this CPU reaches in ONNX Runtime's kernels: GFLOP/s of the convolutions and matrix products
that make up the diffusion graphs, in FP32 and as INT8 Q/DQ (per-tensor activations, per-channel weights, as
``python -m calibration quantize`` writes them), through the runtime's own session settings
(:func:`runtime.backends.onnxrt.inference_session`, so the exact INT8 kernels where the CPU has no VNNI).

    python -m benchmarks.probes.kernel_rates [--json FILE]

A graph's GFLOP (:func:`benchmarks.measure.graph_flops`) over the best rate here is the least time it can take on
this CPU with these kernels: the whole-video suite's GFLOP/s columns say how close each graph came. Prints one
line per shape and the CPU it ran on; seconds of work.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# (name, input shape, weight shape): the largest layers of a released VideoCrafter2 UNet call (16 frames, 40x64
# latent) and of its VAE decoder at 320x512, and the UNet's feed-forward and attention projections
CONVS = (("UNet 3x3 conv, 320 channels, 16 x 40x64", (16, 320, 40, 64), (320, 320, 3, 3)),
         ("VAE 3x3 conv, 512 channels, 80x128", (1, 512, 80, 128), (512, 512, 3, 3)),
         ("VAE 3x3 conv, 128 channels, 320x512", (1, 128, 320, 512), (128, 128, 3, 3)))
MATMULS = (("UNet feed-forward in, 40960 x 320 -> 1280", (40960, 320), (320, 1280)),
           ("UNet feed-forward out, 40960 x 1280 -> 320", (40960, 1280), (1280, 320)),
           ("UNet projection, 10240 x 640 -> 640", (10240, 640), (640, 640)))


@dataclass
class Rate:
    kernel: str
    precision: str
    ms: float
    gflop: float

    @property
    def gflops_per_s(self) -> float:
        return self.gflop / (self.ms / 1e3)


def layer_graph(op: str, x_shape: tuple[int, ...], weights: np.ndarray, int8: bool) -> bytes:
    """One Conv (same padding) or MatMul on a float input ``x``; ``int8``: input and weights through Q/DQ pairs."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers, x = [], [], "x"
    if int8:
        channel_axis = 0 if op == "Conv" else 1
        reduce = tuple(a for a in range(weights.ndim) if a != channel_axis)
        scale = np.abs(weights).max(axis=reduce) / 127.0
        quantized = np.round(weights / np.expand_dims(scale, reduce)).astype(np.int8)
        initializers += [numpy_helper.from_array(np.array(4.0 / 127, np.float32), "x_scale"),
                         numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
                         numpy_helper.from_array(quantized, "w_q"),
                         numpy_helper.from_array(scale.astype(np.float32), "w_scale"),
                         numpy_helper.from_array(np.zeros(scale.shape, np.int8), "w_zero")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
                  helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=channel_axis)]
        x = "x_dq"
    else:
        initializers.append(numpy_helper.from_array(weights, "w"))
    pads = {"pads": [weights.shape[-1] // 2] * 4} if op == "Conv" else {}
    nodes.append(helper.make_node(op, [x, "w"], ["y"], **pads))
    graph = helper.make_graph(nodes, op.lower(), [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def measure_rates(repeats: int = 3, seed: int = 0, log=print) -> list[Rate]:
    """Each layer of :data:`CONVS` and :data:`MATMULS` in FP32 and INT8: the best of ``repeats`` timed runs after
    one untimed run."""
    from benchmarks.measure import graph_flops
    from runtime.backends.onnxrt import inference_session

    rng = np.random.default_rng(seed)
    rates = []
    for op, layers in (("Conv", CONVS), ("MatMul", MATMULS)):
        for name, x_shape, w_shape in layers:
            x = rng.standard_normal(x_shape, dtype=np.float32)
            weights = rng.standard_normal(w_shape, dtype=np.float32) * 0.05
            gflop = graph_flops(layer_graph(op, x_shape, weights, False), {"x": x_shape}).flops / 1e9
            for int8 in (False, True):
                session = inference_session(layer_graph(op, x_shape, weights, int8))
                session.run(None, {"x": x})
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    session.run(None, {"x": x})
                    times.append(time.perf_counter() - start)
                rate = Rate(name, "int8" if int8 else "fp32", min(times) * 1e3, gflop)
                log(f"{rate.kernel:48s} {rate.precision}  {rate.ms:8.1f} ms  {rate.gflops_per_s:6.1f} GFLOP/s")
                rates.append(rate)
    return rates


def main(argv: list[str] | None = None) -> int:
    from benchmarks.__main__ import environment

    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes.kernel_rates", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    device = environment()
    print(f"{device['cpu']} ({device['cpu_class']}), {device['cpu_count']} cores, "
          f"ONNX Runtime {device['versions']['onnxruntime']}")
    rates = measure_rates(args.repeats)
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rates": [
            {**asdict(r), "gflops_per_s": r.gflops_per_s} for r in rates]}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
