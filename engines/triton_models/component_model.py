"""A bundle component as a Triton Python-backend model: its ONNX graph run by ONNX Runtime on the CPU.

Copied as ``<model>/1/model.py`` by ``python -m engines triton --platform python`` (for servers
without the ONNX Runtime backend). With dynamic batching the server hands ``execute`` several
requests at once: those whose non-batch shapes agree run as one batch and are split again.
Needs only numpy and onnxruntime in the server's Python environment.
"""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(config.get("parameters", {}).get("threads", {}).get("string_value", 0))
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _graph_shaped(self, name, array):
        """A tensor of the batch axis alone travels as [B, 1]: back to the graph's [B] unless the server did it."""
        return array.reshape(array.shape[:self.ranks[name]]) if array.ndim > self.ranks[name] else array

    def _groups(self, feeds):
        """Indices of the requests that can run as one batch (all of them alone without batching)."""
        groups = {}
        for index, feed in enumerate(feeds):
            key = tuple((n, feed[n].shape[1:], feed[n].dtype.str) for n in self.inputs) if self.batching else index
            groups.setdefault(key, []).append(index)
        return groups.values()

    def execute(self, requests):
        feeds = [{n: self._graph_shaped(n, pb_utils.get_input_tensor_by_name(r, n).as_numpy()) for n in self.inputs}
                 for r in requests]
        responses = [None] * len(requests)
        for indices in self._groups(feeds):
            try:
                batch = {n: np.concatenate([feeds[i][n] for i in indices]) for n in self.inputs}
                results = self.session.run(self.outputs, batch)
                bounds = np.cumsum([len(feeds[i][self.inputs[0]]) for i in indices])[:-1]
                per_request = zip(*[np.split(r, bounds) if len(indices) > 1 else [r] for r in results])
                for i, arrays in zip(indices, per_request):
                    tensors = [pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in zip(self.outputs, arrays)]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            except Exception as exc:  # one failing batch answers its own requests with the reason, not the server
                error = pb_utils.TritonError(f"{self.name}: ONNX Runtime failed: {type(exc).__name__}: {exc}")
                for i in indices:
                    responses[i] = pb_utils.InferenceResponse(error=error)
        return responses
