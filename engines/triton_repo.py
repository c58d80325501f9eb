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

Every model has a bounded queue (:func:`queue_policy`): past ``--queue-depth`` executions' worth of waiting
requests per instance, or ``--queue-timeout-ms`` of waiting, the server refuses a request at once ("Exceeds
maximum queue size" / "Request timeout expired"; the client raises ``ServerBusy``) instead of letting every
request's latency grow without bound.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from engines.triton_models import pipeline_model
from runtime.backends.triton import PIPELINE_MODEL, TRITON_DTYPES, max_batch_size, model_name, model_prefix
from runtime.bundle import MANIFEST, Bundle, BundleError, Component
from runtime.serving import served_task

PLATFORMS = ("onnxruntime", "tensorrt", "python")
# Waiting executions per instance a model queues before refusing a request: a request let in waits at most about
# this many execution times; a deeper queue adds latency, not throughput (the instances are busy already), and a
# refused client does better retrying later or on another server. A pipeline model's instance calls one component
# at a time, so a component's queue (at least one per instance) always has room for the pipelines' own calls.
QUEUE_DEPTH = 4
# A request that waited this long in a queue is refused: half the client's default timeout (runtime.backends.triton:
# 60 s a component call, 600 s a pipeline call), so that it hears "busy" while it can still retry, here or elsewhere,
# instead of timing out on a request that would have run late.
QUEUE_TIMEOUT_MS = 30_000
PIPELINE_QUEUE_TIMEOUT_MS = 300_000
# imports triton_python_backend_utils, which exists only inside the server: copied, never imported here
COMPONENT_MODEL = Path(__file__).parent / "triton_models" / "component_model.py"


def _config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise BundleError("writing a Triton repository needs tritonclient: pip install 'edge-deploy[triton]'") from exc
    return model_config_pb2


def queue_policy(config, *, instances: int, depth: int = QUEUE_DEPTH, timeout_ms: int = QUEUE_TIMEOUT_MS) -> None:
    """Bound ``config``'s queue: at most ``depth`` executions' worth of requests per instance (batches of
    ``max_batch_size`` where the model batches) wait, none longer than ``timeout_ms``; past either the request
    is refused (REJECT) at once. ``depth`` 0 or ``timeout_ms`` 0: no bound of that kind. The dynamic batcher
    holds the policy, so every model gets one (with ``max_batch_size`` 0 it runs requests one by one)."""
    pb = _config_pb2()
    policy = config.dynamic_batching.default_queue_policy
    policy.max_queue_size = depth * instances * max(1, config.max_batch_size)
    policy.default_timeout_microseconds = timeout_ms * 1000
    policy.timeout_action = pb.ModelQueuePolicy.TimeoutAction.REJECT


def component_config(component: Component, name: str, platform: str, *, instances: int = 1,
                     max_queue_delay_us: int = 100, queue_depth: int = QUEUE_DEPTH,
                     queue_timeout_ms: int = QUEUE_TIMEOUT_MS):
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
    queue_policy(config, instances=instances, depth=queue_depth, timeout_ms=queue_timeout_ms)
    return config


def pipeline_config(bundle: Bundle, name: str, *, instances: int = 1, queue_depth: int = QUEUE_DEPTH,
                    queue_timeout_ms: int = PIPELINE_QUEUE_TIMEOUT_MS):
    """The ``ModelConfig`` of the bundle's pipeline model (inputs and outputs: the family's served task,
    ``runtime.<family>.serving``)."""
    pb = _config_pb2()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=0)
    task = served_task(bundle)
    for spec in task.inputs:
        config.input.add(name=spec.name, data_type=pb.DataType.Value(spec.dtype), dims=spec.dims,
                         optional=spec.optional)
    for spec in task.outputs:
        config.output.add(name=spec.name, data_type=pb.DataType.Value(spec.dtype), dims=spec.dims)
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.Kind.KIND_CPU)
    queue_policy(config, instances=instances, depth=queue_depth, timeout_ms=queue_timeout_ms)
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
    graph = bundle.onnxruntime_path(component.name)  # ONNX Runtime runs both platforms
    _place(graph, version / "model.onnx")
    for rel in component.extra_files:  # external data, found by the graph relative to its own folder
        extra = bundle.verify(rel)
        _place(extra, version / os.path.relpath(extra, graph.parent))
    if platform == "python":
        shutil.copyfile(COMPONENT_MODEL, version / "model.py")


def _write_pipeline(bundle: Bundle, folder: Path, instances: int, queue_depth: int, queue_timeout_ms: int) -> None:
    write_config(pipeline_config(bundle, folder.name, instances=instances, queue_depth=queue_depth,
                                 queue_timeout_ms=queue_timeout_ms), folder)
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pipeline_model.__file__, version / "model.py")
    for rel in (MANIFEST, *[r for r in bundle.manifest.files if r not in bundle.graph_files()]):
        _place(bundle.root / rel, version / "bundle" / rel)


def write_repository(bundle: str | Path | Bundle, out: str | Path, *, platform: str = "onnxruntime",
                     instances: int = 1, max_queue_delay_us: int = 100, precision: str = "fp16",
                     queue_depth: int = QUEUE_DEPTH, queue_timeout_ms: int = QUEUE_TIMEOUT_MS,
                     pipeline_queue_timeout_ms: int = PIPELINE_QUEUE_TIMEOUT_MS, log=print) -> list[str]:
    """Write (or refresh) the bundle's models in the repository ``out``; returns the model names written.
    ``queue_depth``, ``queue_timeout_ms`` (component models) and ``pipeline_queue_timeout_ms``: :func:`queue_policy`."""
    if platform not in PLATFORMS:
        raise BundleError(f"platform {platform!r}: expected one of {', '.join(PLATFORMS)}")
    if instances < 1 or min(max_queue_delay_us, queue_depth, queue_timeout_ms, pipeline_queue_timeout_ms) < 0:
        raise BundleError(f"expected --instances >= 1 and --max-queue-delay-us, --queue-depth, --queue-timeout-ms, "
                          f"--pipeline-queue-timeout-ms >= 0, found {instances}, {max_queue_delay_us}, {queue_depth}, "
                          f"{queue_timeout_ms} and {pipeline_queue_timeout_ms}")
    bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
    if platform == "tensorrt":  # every plan found before anything is written
        for component in bundle.manifest.components.values():
            _engine_file(bundle, component, precision)
    out = Path(out)
    written = []
    for component in bundle.manifest.components.values():
        name = model_name(bundle.manifest, component.name)
        config = component_config(component, name, platform, instances=instances,
                                  max_queue_delay_us=max_queue_delay_us, queue_depth=queue_depth,
                                  queue_timeout_ms=queue_timeout_ms)
        write_config(config, out / name)
        _write_graph(bundle, component, out / name / "1", platform, precision)
        batching = f"dynamic batching up to {config.max_batch_size}" if config.max_batch_size else "no batching"
        log(f"  {name}: {platform}, {batching}, {instances} instance(s), "
            f"queue {config.dynamic_batching.default_queue_policy.max_queue_size or 'unbounded'}")
        written.append(name)
    pipeline = model_name(bundle.manifest, PIPELINE_MODEL)
    _write_pipeline(bundle, out / pipeline, instances, queue_depth, pipeline_queue_timeout_ms)
    log(f"  {pipeline}: python (BLS) pipeline over {model_prefix(bundle.manifest)}*")
    return [*written, pipeline]
