"""The Triton backend: a component served by Triton Inference Servers behind the ``Session`` interface.

``TritonSession`` is the client (``tritonclient``, HTTP or gRPC by the url's scheme):
``Backend("triton", url="grpc://host:8001")`` makes every pipeline run its components on the
server while the sampler, AR loop and preprocessing stay here; ``url=[url1, url2]`` spreads the calls
over identical servers in turn (``runtime.serving.PipelineClient`` calls a bundle's pipeline model
instead: one call, one whole result). ``BlsSession`` is the same inside the server: the repository's
pipeline model (``python -m engines triton``) runs a pipeline with it through business-logic scripting.
All name a component's model as the repository does: ``<family>-<variant>-<component>`` (:func:`model_name`).

Every request carries an id that errors name and the answer must echo. A server that is busy
(:class:`ServerBusy`: its queue for the model is full) or unavailable (:class:`ServerUnavailable`:
down, stopping, restarting) is retried with backoff (``retry=``, a :class:`Retry`), on the next server
when there are several; other failures (unknown model, refused request, a call past ``timeout``) are
:class:`BundleError`s at once, naming the url, the model, the request and what to do.
"""
from __future__ import annotations

import itertools
import uuid
from typing import Any, Sequence

import numpy as np

from runtime.backends.base import BaseSession
from runtime.backends.triton_servers import (Retry, Server, ServerBusy, ServerUnavailable, Servers, answered, reason,
                                             split_url, trouble_in)
from runtime.bundle import Bundle, BundleError, Component, Manifest

__all__ = ["BlsSession", "Retry", "ServerBusy", "ServerUnavailable", "TritonSession",
           "max_batch_size", "model_name", "model_prefix", "split_url"]

TRITON_DTYPES = {"float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32"}
PIPELINE_MODEL = "pipeline"  # the repository's pipeline model is <prefix>pipeline
DEFAULT_URL = "http://127.0.0.1:8000"


def model_prefix(manifest: Manifest) -> str:
    """The prefix of a bundle's model names in a Triton repository: ``<family>-<variant>-``."""
    return f"{manifest.family}-{manifest.variant}-"


def model_name(manifest: Manifest, component: str, prefix: str | None = None) -> str:
    return f"{model_prefix(manifest) if prefix is None else prefix}{component}"


def max_batch_size(component: Component) -> int:
    """Triton's ``max_batch_size`` of a component's model: the profile's largest batch when every tensor leads
    with the same symbolic axis starting at 1, else 0 (no batch dimension: requests run one by one)."""
    tensors = (*component.inputs, *component.outputs)
    leading = {t.shape[0] if t.shape else None for t in tensors}
    if len(leading) != 1 or not isinstance(next(iter(leading)), str):
        return 0
    profile = [component.profile[t.name] for t in component.inputs if t.name in component.profile]
    if not profile or any(p["min"][0] != 1 for p in profile):
        return 0
    return min(p["max"][0] for p in profile)


class _Wire:
    """A batched model's tensors of the batch axis alone travel as ``[B, 1]`` (Triton's dims may not be empty)."""

    def __init__(self, component: Component):
        batched = max_batch_size(component) > 0
        self._column = {t.name for t in (*component.inputs, *component.outputs) if batched and len(t.shape) == 1}

    def send(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: a[:, None] if n in self._column else a for n, a in feeds.items()}

    def receive(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: a.reshape(-1) if n in self._column else a for n, a in outputs.items()}


class TritonSession(BaseSession):
    """A component run by Triton servers' model of the same name (see the module docstring).

    ``url``: ``http://HOST:PORT`` (default port 8000) or ``grpc://HOST:PORT`` (8001), or a list of urls of
    identical servers, called in turn. ``prefix``: the model-name prefix if the repository was written
    with another one. ``timeout``: seconds any one call may take (connect, readiness, inference).
    ``retry``: how calls that a server is too busy for, or unavailable for, are tried again.
    """

    options = frozenset({"url", "prefix", "timeout", "retry"})
    label = "Triton"

    def __init__(self, bundle: Bundle, name: str, *, url: str | Sequence[str] = DEFAULT_URL,
                 prefix: str | None = None, timeout: float = 60.0, retry: Retry = Retry()):
        super().__init__(bundle.component(name))
        self.servers = Servers(url, timeout=timeout, retry=retry)
        self.model, self._wire = model_name(bundle.manifest, name, prefix), _Wire(self.component)
        self._ids, self._tag = itertools.count(1), uuid.uuid4().hex[:8]
        self.servers.check_ready(self.model, self.component.name)
        wanted = {kind: [(t.name, TRITON_DTYPES[t.dtype]) for t in specs]
                  for kind, specs in (("inputs", self.component.inputs), ("outputs", self.component.outputs))}
        for index, url in enumerate(self.servers.urls):
            served = self._tensors(index)
            if served != wanted:
                raise BundleError(
                    f"{self.component.name}: model '{self.model}' at {url} has tensors {served}, this bundle's "
                    f"component has {wanted}; the repository was written from another bundle: write it again with "
                    "`python -m engines triton BUNDLE --out REPO`")

    def _tensors(self, index: int) -> dict[str, list[tuple[str, str]]]:
        """Server ``index``'s model's (name, datatype) of its inputs and outputs."""
        server = self.servers.server(index)
        try:
            metadata = server.client.get_model_metadata(self.model, **server.options)
        except Exception as exc:
            raise BundleError(f"{self.component.name}: Triton server at {server.url} did not describe model "
                              f"'{self.model}' ({type(exc).__name__}: {reason(exc)})") from exc
        if isinstance(metadata, dict):
            return {kind: [(t["name"], t["datatype"]) for t in metadata[kind]] for kind in ("inputs", "outputs")}
        return {kind: [(t.name, t.datatype) for t in getattr(metadata, kind)] for kind in ("inputs", "outputs")}

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sent, names = self._wire.send(feeds), [spec.name for spec in self.component.outputs]
        request_id = f"{self.component.name}-{self._tag}-{next(self._ids)}"
        what = f"{self.component.name}: request {request_id} to model '{self.model}'"

        def send(server: Server) -> Any:
            inputs = []
            for spec in self.component.inputs:
                tensor = server.api.InferInput(spec.name, list(sent[spec.name].shape), TRITON_DTYPES[spec.dtype])
                tensor.set_data_from_numpy(sent[spec.name])
                inputs.append(tensor)
            outputs = [server.api.InferRequestedOutput(n) for n in names]
            return answered(server.client.infer(self.model, inputs, outputs=outputs, request_id=request_id,
                                                 **server.options), request_id, what)

        result = self.servers.call(send, request=what)
        return self._wire.receive({n: result.as_numpy(n) for n in names})

    def _release(self) -> None:
        """Close this thread's connections (the others end with their threads)."""
        self.servers.close()


class BlsSession(BaseSession):
    """A component run by another model of the same Triton server, from inside a Python-backend model.

    A call the server could not take (the component's queue full, the component unloaded while the server
    stops) raises :class:`ServerBusy` / :class:`ServerUnavailable`, which the pipeline model answers with
    Triton's UNAVAILABLE code, so that the client retries it."""

    options = frozenset({"prefix"})

    def __init__(self, bundle: Bundle, name: str, *, prefix: str | None = None):
        super().__init__(bundle.component(name))
        import triton_python_backend_utils as pb_utils  # only inside a Triton Python-backend model

        self._pb, self._wire = pb_utils, _Wire(self.component)
        self.model = model_name(bundle.manifest, name, prefix)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec.name for spec in self.component.outputs]
        request = self._pb.InferenceRequest(model_name=self.model, requested_output_names=names,
                                            inputs=[self._pb.Tensor(n, a) for n, a in self._wire.send(feeds).items()])
        response = request.exec()
        if response.has_error():
            error = response.error()
            status = "UNAVAILABLE" if error.code() == self._pb.TritonError.UNAVAILABLE else ""
            raise (trouble_in(status, error.message()) or BundleError)(
                f"{self.component.name}: model '{self.model}' failed: {error.message()}")
        return self._wire.receive({n: self._pb.get_output_tensor_by_name(response, n).as_numpy() for n in names})
