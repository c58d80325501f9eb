"""A bundle's whole pipeline as one Triton Python-backend model (business-logic scripting).

Copied as ``<family>-<variant>-pipeline/1/model.py`` by ``python -m engines triton``, next to
``1/bundle/`` (the manifest and the bundle's non-graph files). One request runs the runtime's own
numpy sampler, AR loop or preprocessing, whose components are the repository's other models
(``Backend("triton-bls")``): a prompt (+ image) gives a video, an image a depth map or instances,
items embeddings. The server's Python environment needs numpy, the runtime's dependencies and
``runtime`` on its path. :data:`TASKS` is the one table of each task's inputs and outputs; the
repository writer builds the model's config from it.
"""
import json
from pathlib import Path

import numpy as np

from runtime.backends import Backend
from runtime.bundle import Bundle

IMAGE = ("IMAGE", "TYPE_UINT8", [-1, -1, 3])
SEED = ("SEED", "TYPE_INT64", [1])
# task -> inputs (name, type, dims, optional) and outputs (name, type, dims)
TASKS = {
    "videocrafter1": {"inputs": [("PROMPT", "TYPE_STRING", [1], False), (*IMAGE, True), (*SEED, True),
                                 ("STEPS", "TYPE_INT64", [1], True)],
                      "outputs": [("VIDEO", "TYPE_UINT8", [-1, -1, -1, 3])]},
    "depth": {"inputs": [(*IMAGE, False)], "outputs": [("DEPTH", "TYPE_FP32", [-1, -1])]},
    "insseg": {"inputs": [(*IMAGE, False), (*SEED, True)],
               "outputs": [("BOXES", "TYPE_FP32", [-1, 4]), ("SCORES", "TYPE_FP32", [-1]),
                           ("CLASSES", "TYPE_INT64", [-1]), ("MASKS", "TYPE_BOOL", [-1, -1, -1])]},
    "imagebind": {"inputs": [("TEXT", "TYPE_STRING", [-1], True), ("VISION", "TYPE_UINT8", [-1, -1, -1, 3], True),
                             ("AUDIO", "TYPE_FP32", [-1, -1], True), ("DEPTH", "TYPE_FP32", [-1, -1, -1], True),
                             ("THERMAL", "TYPE_FP32", [-1, -1, -1], True), ("IMU", "TYPE_FP32", [-1, 6, -1], True)],
                  "outputs": [(f"{m}_EMBEDDING", "TYPE_FP32", [-1, -1])
                              for m in ("TEXT", "VISION", "AUDIO", "DEPTH", "THERMAL", "IMU")]},
}


def task_of(family: str, pipeline: dict) -> str:
    return str(pipeline["task"]) if family == "ait" else family


def task_io(family: str, pipeline: dict) -> dict:
    """The inputs and outputs of a bundle's pipeline model (ImageBind: only the bundle's modalities)."""
    io = TASKS[task_of(family, pipeline)]
    if family != "imagebind":
        return io
    have = {m.upper() for m in pipeline["modalities"]}
    return {"inputs": [t for t in io["inputs"] if t[0] in have],
            "outputs": [t for t in io["outputs"] if t[0].removesuffix("_EMBEDDING") in have]}


def _open_pipeline(bundle: Bundle):
    """The runtime pipeline of the bundle with every component on this server, and its request handler."""
    import runtime

    backend = Backend("triton-bls")
    task = task_of(bundle.manifest.family, bundle.pipeline)
    if task == "videocrafter1":
        pipeline = runtime.VideoPipeline(bundle, backend=backend)
        return pipeline, lambda get: {"VIDEO": pipeline.generate(
            get("PROMPT")[0].decode(), image=get("IMAGE"), seed=_scalar(get("SEED"), 0),
            steps=_scalar(get("STEPS"), None), progress=False)}
    if task == "depth":
        pipeline = runtime.DepthPipeline(bundle, backend=backend)
        return pipeline, lambda get: {"DEPTH": pipeline.estimate(get("IMAGE"), progress=False)}
    if task == "insseg":
        pipeline = runtime.InstancePipeline(bundle, backend=backend)

        def segment(get):
            found = pipeline.segment(get("IMAGE"), seed=_scalar(get("SEED"), 0), progress=False)
            return {"BOXES": found.boxes, "SCORES": found.scores, "CLASSES": found.classes, "MASKS": found.masks}
        return pipeline, segment
    pipeline = runtime.EmbeddingPipeline(bundle, backend=backend)

    def embed(get):
        items = {m: get(m.upper()) for m in pipeline.modalities}
        items = {m: [t.decode() for t in v] if m == "text" else list(v) for m, v in items.items() if v is not None}
        return {f"{m.upper()}_EMBEDDING": e for m, e in pipeline.embed(items).items()}
    return pipeline, embed


def _scalar(value, default):
    return default if value is None else int(np.asarray(value).reshape(-1)[0])


class TritonPythonModel:
    def initialize(self, args):
        self.name = json.loads(args["model_config"])["name"]
        self.bundle = Bundle(Path(args["model_repository"]) / args["model_version"] / "bundle", graphs=False)
        self.pipeline = self.handle = None  # opened by the first request: BLS calls work only within execute

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        if self.pipeline is None:
            self.pipeline, self.handle = _open_pipeline(self.bundle)
        responses = []
        for request in requests:
            def get(name, request=request):
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                return None if tensor is None else tensor.as_numpy()
            try:
                outputs = self.handle(get)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in outputs.items()]))
            except Exception as exc:  # the client gets the reason; the server keeps serving
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{self.name}: {type(exc).__name__}: {exc}")))
        return responses

    def finalize(self):
        if self.pipeline is not None:
            self.pipeline.close()
