"""Build TensorRT engines from a bundle with the TensorRT Python API.

One engine per component: the ONNX graph parsed (the Q/DQ graph for INT8), one
optimization profile from the manifest's min/opt/max, FP16/INT8 builder flags
for FP32 graphs or a strongly typed network for FP16 graphs, the FP32 rule of
:mod:`engines.precision`, and a timing cache loaded before and saved after every
build. Each plan is written into the bundle and recorded in the manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.precision import FP32_LAYER_TYPES, fp32_node_names, keep_fp32_applies, strongly_typed
from engines.profiles import plan_name, profile_of, select_components, source_graph
from engines.register import register
from runtime.bundle import Bundle, BundleError
from runtime.tensorrt_backend import Cuda, LocalTarget


def _graph_float_type(graph: Path) -> str:
    """``float16`` when the graph's float inputs are FP16, else ``float32``."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    floats = [i.type.tensor_type.elem_type for i in model.graph.input
              if i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    return "float16" if floats and all(t == onnx.TensorProto.FLOAT16 for t in floats) else "float32"


def _parse(trt, builder, logger, graph: Path, strong: bool):
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0
    if int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BundleError(f"TensorRT could not parse {graph}:\n  {errors}\nRun `python -m engines lint` on the bundle")
    return network, parser


def _pin_fp32(trt, network, node_names: list[str]) -> list[str]:
    """Set FP32 precision and output types on the layers the FP32 rule names; return their names."""
    wanted = {getattr(trt.LayerType, t) for t in FP32_LAYER_TYPES}
    pinned = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in wanted or any(layer.name.startswith(n) for n in node_names):
            layer.precision = trt.float32
            for out in range(layer.num_outputs):
                if layer.get_output(out).dtype in (trt.float16, trt.float32):
                    layer.set_output_type(out, trt.float32)
            pinned.append(layer.name)
    return pinned


def build_component(bundle: Bundle, component: str, precision: str, *, workspace_mb: int, timing_cache: Path,
                    keep_fp32: str = "vae", verbose: bool = False) -> tuple[Path, dict[str, Any]]:
    """Build one engine; write ``<component>.<precision>.plan`` and return its path and build facts."""
    import tensorrt as trt

    spec = bundle.component(component)
    ranges = profile_of(spec)
    rel = source_graph(bundle, spec, precision)
    graph = bundle.component_path(component) if rel == spec.file else bundle.verify(rel)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strong = strongly_typed(trt.__version__, _graph_float_type(graph))
    network, _parser = _parse(trt, builder, logger, graph, strong)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not strong and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if not strong and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: scales come from the graph's Q/DQ nodes
    pinned: list[str] = []
    if not strong and keep_fp32_applies(component, precision, keep_fp32):
        pinned = _pin_fp32(trt, network, fp32_node_names(graph))
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    for r in ranges:
        profile.set_shape(r.name, r.min, r.opt, r.max)
    config.add_optimization_profile(profile)

    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BundleError(f"TensorRT failed to build {component} ({precision}); see the log above. Try a larger "
                          "--workspace, --keep-fp32 none, or `python -m engines lint` on the bundle")
    timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    plan = bundle.root / plan_name(component, precision)
    plan.write_bytes(memoryview(serialized))
    return plan, {"built_with": "tensorrt-python", "strongly_typed": strong, "fp32_layers": len(pinned)}


def build(root: str | Path, precision: str, *, components: list[str] | None = None, workspace_mb: int = 4096,
          timing_cache: Path | None = None, keep_fp32: str = "vae", verbose: bool = False) -> list[dict]:
    """Build the engines of ``components`` (all by default) and record them in the manifest."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BundleError("the TensorRT Python package is not installed here: on Jetson it comes with JetPack "
                          "(python3-libnvinfer), elsewhere `pip install '.[trt]'`; or write a trtexec script with "
                          "`python -m engines trtexec BUNDLE` and run it on the target") from None

    bundle = Bundle(root)
    cuda = Cuda()
    target = LocalTarget(trt.__version__, cuda.device_name(), cuda.compute_capability())
    cache = timing_cache or bundle.root / f"timing-sm{target.compute_capability.replace('.', '')}.cache"
    records = []
    for spec in select_components(bundle, components):
        print(f"building {spec.name} ({precision}) on {target.gpu}, TensorRT {target.tensorrt} ...", flush=True)
        plan, facts = build_component(bundle, spec.name, precision, workspace_mb=workspace_mb, timing_cache=cache,
                                      keep_fp32=keep_fp32, verbose=verbose)
        records += register(bundle.root, [plan], target, **facts)
        print(f"  wrote {plan.name} ({plan.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return records
