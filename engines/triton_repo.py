"""A bundle as a Triton Inference Server model repository (``python -m engines triton``).

One model per component, named ``<family>-<variant>-<component>`` (``runtime.backends.triton.model_name``),
plus ``<family>-<variant>-pipeline``, the whole pipeline as a Python-backend model::

    REPO/videocrafter1-tiny-t2v-unet/config.pbtxt
                                    /1/model.onnx (+ its external data)   --platform onnxruntime
                                    /1/model.plan                         --platform tensorrt
                                    /1/model.onnx + model.py              --platform python
    REPO/videocrafter1-tiny-t2v-pipeline/config.pbtxt, 1/model.py, 1/bundle/ (manifest, tokenizer, tables)

Each ``config.pbtxt`` is Triton's own ``ModelConfig`` protobuf in text form: inputs and outputs with
the manifest's names, dtypes and dims (-1 for a symbolic axis) and, when every input and output of the
component leads with the same symbolic axis, that axis as Triton's batch dimension with dynamic batching
up to the profile's maximum (a tensor of that axis alone, like the UNet's ``timesteps``, travels as
``[B, 1]`` and is reshaped to ``[B]``: Triton's dims may not be empty).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from engines.triton_models import pipeline_model
from runtime.backends.triton import PIPELINE_MODEL, TRITON_DTYPES, max_batch_size, model_name, model_prefix
from runtime.bundle import MANIFEST, Bundle, BundleError, Component

PLATFORMS = ("onnxruntime", "tensorrt", "python")
# imports triton_python_backend_utils, which exists only inside the server: copied, never imported here
COMPONENT_MODEL = Path(__file__).parent / "triton_models" / "component_model.py"


def _config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise BundleError("writing a Triton repository needs tritonclient: pip install 'edge-deploy[triton]'") from exc
    return model_config_pb2


def component_config(component: Component, name: str, platform: str, *, instances: int = 1,
                     max_queue_delay_us: int = 100):
    """The ``ModelConfig`` of one component."""
    pb = _config_pb2()
    batch = max_batch_size(component)
    config = pb.ModelConfig(name=name, max_batch_size=batch)
    if platform == "python":
        config.backend = "python"
    else:
        config.platform = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[platform]
    skip = 1 if batch else 0
    for specs, field in ((component.inputs, config.input), (component.outputs, config.output)):
        for spec in specs:
            tensor = field.add(name=spec.name, data_type=pb.DataType.Value(f"TYPE_{TRITON_DTYPES[spec.dtype]}"),
                               dims=[-1 if isinstance(d, str) else d for d in spec.shape[skip:]])
            if batch and len(spec.shape) == 1:  # only the batch axis: [B, 1] on the wire, [B] in the graph
                tensor.dims.append(1)
                tensor.reshape.SetInParent()
    if batch:
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    kind = {"python": "KIND_CPU", "tensorrt": "KIND_GPU", "onnxruntime": "KIND_AUTO"}[platform]
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.Kind.Value(kind))
    return config


def pipeline_config(bundle: Bundle, name: str, *, instances: int = 1):
    """The ``ModelConfig`` of the bundle's pipeline model (inputs and outputs from ``pipeline_model.TASKS``)."""
    pb = _config_pb2()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=0)
    io = pipeline_model.task_io(bundle.manifest.family, bundle.pipeline)
    for tensor_name, dtype, dims, optional in io["inputs"]:
        config.input.add(name=tensor_name, data_type=pb.DataType.Value(dtype), dims=dims, optional=optional)
    for tensor_name, dtype, dims in io["outputs"]:
        config.output.add(name=tensor_name, data_type=pb.DataType.Value(dtype), dims=dims)
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.Kind.KIND_CPU)
    return config


def write_config(config, folder: Path) -> Path:
    from google.protobuf import text_format

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.pbtxt"
    path.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path


def read_config(path: Path):
    """A ``config.pbtxt`` parsed into Triton's ``ModelConfig`` (what the server reads)."""
    from google.protobuf import text_format

    return text_format.Parse(Path(path).read_text(encoding="utf-8"), _config_pb2().ModelConfig())


def _place(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (no copy of a large graph) or, across file systems, a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _engine_file(bundle: Bundle, component: Component, precision: str) -> Path:
    engines = [e for e in component.engines if e.get("precision") == precision]
    if not engines:
        have = sorted({str(e.get("precision")) for e in component.engines}) or ["none"]
        raise BundleError(f"{component.name}: --platform tensorrt needs a {precision} engine in the bundle; it has "
                          f"{', '.join(have)}. Build one (python -m engines build BUNDLE --precision {precision}) "
                          "on the server's GPU type, or register plans built there")
    return bundle.verify(str(engines[0]["file"]))


def _write_graph(bundle: Bundle, component: Component, version: Path, platform: str, precision: str) -> None:
    if platform == "tensorrt":
        _place(_engine_file(bundle, component, precision), version / "model.plan")
        return
    graph = bundle.component_path(component.name)
    _place(graph, version / "model.onnx")
    for rel in component.extra_files:  # external data, found by the graph relative to its own folder
        extra = bundle.verify(rel)
        _place(extra, version / os.path.relpath(extra, graph.parent))
    if platform == "python":
        shutil.copyfile(COMPONENT_MODEL, version / "model.py")


def _write_pipeline(bundle: Bundle, folder: Path, instances: int) -> None:
    write_config(pipeline_config(bundle, folder.name, instances=instances), folder)
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pipeline_model.__file__, version / "model.py")
    for rel in (MANIFEST, *[r for r in bundle.manifest.files if r not in bundle.graph_files()]):
        _place(bundle.root / rel, version / "bundle" / rel)


def write_repository(bundle: str | Path | Bundle, out: str | Path, *, platform: str = "onnxruntime",
                     instances: int = 1, max_queue_delay_us: int = 100, precision: str = "fp16",
                     log=print) -> list[str]:
    """Write (or refresh) the bundle's models in the repository ``out``; returns the model names written."""
    if platform not in PLATFORMS:
        raise BundleError(f"platform {platform!r}: expected one of {', '.join(PLATFORMS)}")
    if instances < 1 or max_queue_delay_us < 0:
        raise BundleError(f"expected --instances >= 1 and --max-queue-delay-us >= 0, found {instances} and "
                          f"{max_queue_delay_us}")
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    if platform == "tensorrt":  # every plan found before anything is written
        for component in bundle.manifest.components.values():
            _engine_file(bundle, component, precision)
    out = Path(out)
    written = []
    for component in bundle.manifest.components.values():
        name = model_name(bundle.manifest, component.name)
        config = component_config(component, name, platform, instances=instances,
                                  max_queue_delay_us=max_queue_delay_us)
        write_config(config, out / name)
        _write_graph(bundle, component, out / name / "1", platform, precision)
        batching = f"dynamic batching up to {config.max_batch_size}" if config.max_batch_size else "no batching"
        log(f"  {name}: {platform}, {batching}, {instances} instance(s)")
        written.append(name)
    pipeline = model_name(bundle.manifest, PIPELINE_MODEL)
    _write_pipeline(bundle, out / pipeline, instances)
    log(f"  {pipeline}: python (BLS) pipeline over {model_prefix(bundle.manifest)}*")
    return [*written, pipeline]
