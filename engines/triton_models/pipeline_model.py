"""A bundle's whole pipeline as one Triton Python-backend model (business-logic scripting).

Copied as ``<family>-<variant>-pipeline/1/model.py`` by ``python -m engines triton``, next to
``1/bundle/`` (the manifest and the bundle's non-graph files). One request runs the runtime's own
numpy sampler, AR loop or preprocessing, whose components are the repository's other models
(``Backend("triton-bls")``). Which inputs and outputs the model has, and how a request is answered,
is the family's own declaration (``runtime.<family>.serving``, found by ``runtime.serving.served_task``).
The server's Python environment needs numpy, the runtime's dependencies and ``runtime`` on its path.

A component call that failed because the server is busy or going away (its queue full, the component
unloaded while the server stops) answers the request with Triton's UNAVAILABLE code, which clients
retry; any other failure answers it with the reason, and the model keeps serving.
"""
import json
from pathlib import Path

import numpy as np

from runtime.backends import Backend
from runtime.backends.triton import ServerUnavailable
from runtime.bundle import Bundle
from runtime.serving import served_task


class TritonPythonModel:
    def initialize(self, args):
        self.name = json.loads(args["model_config"])["name"]
        self.bundle = Bundle(Path(args["model_repository"]) / args["model_version"] / "bundle", graphs=False)
        self.task = served_task(self.bundle)
        self.pipeline = self.handle = None  # opened by the first request: BLS calls work only within execute

    def _error(self, exc: Exception):
        import triton_python_backend_utils as pb_utils

        code = pb_utils.TritonError.UNAVAILABLE if isinstance(exc, ServerUnavailable) else pb_utils.TritonError.INTERNAL
        return pb_utils.TritonError(f"{self.name}: {type(exc).__name__}: {exc}", code)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        if self.pipeline is None:
            self.pipeline, self.handle = self.task.open(self.bundle, Backend("triton-bls"))
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
                responses.append(pb_utils.InferenceResponse(error=self._error(exc)))
        return responses

    def finalize(self):
        if self.pipeline is not None:
            self.pipeline.close()
