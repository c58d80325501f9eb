"""Build TensorRT engines from a bundle with the TensorRT Python API.

One engine per component, built through Polygraphy's loaders: the ONNX graph
parsed (the Q/DQ graph for INT8; ``NetworkFromOnnxPath``), one optimization
profile from the manifest's min/opt/max (``Profile``), FP16/INT8 builder flags
for FP32 graphs or a strongly typed network for FP16 graphs (``CreateConfig``),
the FP32 rule of :mod:`engines.precision` (``PostprocessNetwork``), and a timing
cache loaded before and saved after every build. Each plan is written into the
bundle and recorded in the manifest.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.precision import FP32_LAYER_TYPES, fp32_node_names, keep_fp32_applies, strongly_typed
from engines.profiles import plan_name, profile_of, select_components, source_graph
from engines.register import register
from runtime.bundle import Bundle, BundleError
from runtime.backends.trt import local_target


def _graph_float_type(graph: Path) -> str:
    """``float16`` when the graph's float inputs are FP16, else ``float32``."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    floats = [i.type.tensor_type.elem_type for i in model.graph.input
              if i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    return "float16" if floats and all(t == onnx.TensorProto.FLOAT16 for t in floats) else "float32"


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


@dataclass
class EngineRecipe:
    """Polygraphy's loaders for one engine: the parsed network (post-processed) and the builder config."""

    component: str
    precision: str
    graph: Path
    network: Any  # NetworkFromOnnxPath, or PostprocessNetwork over it when layers are pinned to FP32
    config: Any  # CreateConfig
    strongly_typed: bool
    pinned: list[str] = field(default_factory=list)  # filled while the network is parsed


def engine_recipe(trt, bundle: Bundle, component: str, precision: str, *, workspace_mb: int, timing_cache: Path,
                  keep_fp32: str = "vae") -> EngineRecipe:
    """What :func:`build_component` builds, as Polygraphy loader objects (nothing runs until they are called).

    ``trt`` is the ``tensorrt`` module (its version types the network; its enums name
    the workspace pool and the layers to pin).
    """
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, PostprocessNetwork, Profile

    spec = bundle.component(component)
    rel = source_graph(bundle, spec, precision)
    graph = bundle.component_path(component) if rel == spec.file else bundle.verify(rel)
    strong = strongly_typed(trt.__version__, _graph_float_type(graph))
    profile = Profile()
    for r in profile_of(spec):
        profile.add(r.name, min=r.min, opt=r.opt, max=r.max)
    pin = not strong and keep_fp32_applies(component, precision, keep_fp32)
    config = CreateConfig(
        # FP16/INT8 flags only for FP32 graphs; a strongly typed network takes its types from the graph, and
        # INT8 is explicit quantization (scales from the graph's Q/DQ nodes).
        fp16=not strong and precision in ("fp16", "int8"), int8=not strong and precision == "int8",
        profiles=[profile], memory_pool_limits={trt.MemoryPoolType.WORKSPACE: workspace_mb << 20},
        precision_constraints="obey" if pin else None,
        load_timing_cache=str(timing_cache) if timing_cache.is_file() else None)
    network = NetworkFromOnnxPath(str(graph), strongly_typed=strong)
    recipe = EngineRecipe(component, precision, graph, network, config, strong)
    if pin:
        names = fp32_node_names(graph)
        recipe.network = PostprocessNetwork(
            network, lambda network: recipe.pinned.extend(_pin_fp32(trt, network, names)), name="keep FP32 layers")
    return recipe


def build_component(bundle: Bundle, component: str, precision: str, *, workspace_mb: int, timing_cache: Path,
                    keep_fp32: str = "vae", verbose: bool = False) -> tuple[Path, dict[str, Any]]:
    """Build one engine; write ``<component>.<precision>.plan`` and return its path and build facts."""
    import tensorrt as trt
    from polygraphy.backend.trt import engine_bytes_from_network
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.VERBOSE if verbose else G_LOGGER.WARNING
    recipe = engine_recipe(trt, bundle, component, precision, workspace_mb=workspace_mb, timing_cache=timing_cache,
                           keep_fp32=keep_fp32)
    try:
        serialized = engine_bytes_from_network(recipe.network, recipe.config, save_timing_cache=str(timing_cache))
    except PolygraphyException as exc:
        raise BundleError(f"TensorRT failed to build {component} ({precision}) from {recipe.graph.name}: {exc}. Try "
                          "a larger --workspace, --keep-fp32 none, or `python -m engines lint` on the bundle") from exc
    plan = bundle.root / plan_name(component, precision)
    plan.write_bytes(memoryview(serialized))
    return plan, {"built_with": "polygraphy", "strongly_typed": recipe.strongly_typed,
                  "fp32_layers": len(recipe.pinned)}


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
    target = local_target()
    if target is None:
        raise BundleError(f"TensorRT {trt.__version__} is here but no CUDA GPU (or no polygraphy: "
                          "`pip install '.[trt]'`); build the engines on the machine that runs them")
    cache = timing_cache or bundle.root / f"timing-sm{target.compute_capability.replace('.', '')}.cache"
    records = []
    for spec in select_components(bundle, components):
        print(f"building {spec.name} ({precision}) on {target.gpu}, TensorRT {target.tensorrt} ...", flush=True)
        plan, facts = build_component(bundle, spec.name, precision, workspace_mb=workspace_mb, timing_cache=cache,
                                      keep_fp32=keep_fp32, verbose=verbose)
        records += register(bundle.root, [plan], target, **facts)
        print(f"  wrote {plan.name} ({plan.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return records
