"""The Triton backend: a component served by a Triton Inference Server behind the ``Session`` interface.

``TritonSession`` is the client (``tritonclient``, HTTP or gRPC by the url's scheme):
``Backend("triton", url="grpc://host:8001")`` makes every pipeline run its components on the
server while the sampler, AR loop and preprocessing stay here. ``BlsSession`` is the same inside
the server: the repository's pipeline model (``python -m engines triton``) runs a pipeline with it
through business-logic scripting. Both name a component's model as the repository does:
``<family>-<variant>-<component>`` (:func:`model_name`). Server failures (down, unknown model,
refused request, timeout) are :class:`BundleError`s naming the url, the model and what to do.
"""
from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from runtime.backends.base import BaseSession
from runtime.bundle import Bundle, BundleError, Component, Manifest

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


def split_url(url: str) -> tuple[str, str]:
    """``(protocol, host:port)`` of ``http://host:port``, ``grpc://host:port`` or a bare ``host:port`` (HTTP)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc") or not parts.netloc:
        raise BundleError(f"Triton url {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
    return parts.scheme, parts.netloc


def _reason(exc: BaseException) -> str:
    text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0][:400]


class TritonSession(BaseSession):
    """A component run by a Triton server's model of the same name (see the module docstring).

    ``url``: ``http://HOST:PORT`` (default port 8000) or ``grpc://HOST:PORT`` (8001). ``prefix``:
    the model-name prefix if the repository was written with another one. ``timeout``: seconds any
    one call may take before it fails (connect, readiness, inference).
    """

    options = frozenset({"url", "prefix", "timeout"})
    label = "Triton"

    def __init__(self, bundle: Bundle, name: str, *, url: str = DEFAULT_URL, prefix: str | None = None,
                 timeout: float = 60.0):
        super().__init__(bundle.component(name))
        self.protocol, address = split_url(url)
        self.url, self.model, self.timeout = url, model_name(bundle.manifest, name, prefix), float(timeout)
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as client
            else:
                import tritonclient.http as client
        except ImportError as exc:
            raise BundleError("backend 'triton' needs tritonclient: pip install 'edge-deploy[triton]'") from exc
        self._api, self._address, self._wire = client, address, _Wire(self.component)
        self._call = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        self._local = threading.local()
        self._check_model()

    @property
    def _client(self):
        """This thread's client: tritonclient's HTTP client is gevent-based and must stay in its thread."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self._api.InferenceServerClient(self._address)
            else:
                client = self._api.InferenceServerClient(self._address, connection_timeout=self.timeout,
                                                         network_timeout=self.timeout)
            self._local.client = client
        return client

    def _fail(self, what: str, exc: BaseException) -> BundleError:
        return BundleError(f"{self.component.name}: Triton server at {self.url} {what} model '{self.model}' "
                           f"({type(exc).__name__}: {_reason(exc)})")

    def _check_model(self) -> None:
        try:
            live = self._client.is_server_live(**self._call)
        except Exception as exc:  # tritonclient raises its own, socket and gevent errors alike when unreachable
            raise BundleError(f"{self.component.name}: no Triton server reachable at {self.url} "
                              f"({type(exc).__name__}: {_reason(exc)}); start one (docs/serving.md) "
                              "or pass the right url") from exc
        try:
            ready = live and self._client.is_model_ready(self.model, **self._call)
            models = [] if ready else [m["name"] if isinstance(m, dict) else m.name for m in self._repository()]
        except Exception as exc:
            raise self._fail("did not answer about", exc) from exc
        if not ready:
            raise BundleError(
                f"{self.component.name}: the Triton server at {self.url} has no ready model '{self.model}'; it serves "
                f"{', '.join(sorted(models)) or 'nothing'}. Write the repository with `python -m engines triton "
                f"BUNDLE --out REPO` from this bundle (or pass prefix= if it was written with another one)")
        served = self._tensors()
        wanted = {kind: [(t.name, TRITON_DTYPES[t.dtype]) for t in specs]
                  for kind, specs in (("inputs", self.component.inputs), ("outputs", self.component.outputs))}
        if served != wanted:
            raise BundleError(
                f"{self.component.name}: model '{self.model}' at {self.url} has tensors {served}, this bundle's "
                f"component has {wanted}; the repository was written from another bundle: write it again with "
                "`python -m engines triton BUNDLE --out REPO`")

    def _tensors(self) -> dict[str, list[tuple[str, str]]]:
        """The served model's (name, datatype) of its inputs and outputs."""
        try:
            metadata = self._client.get_model_metadata(self.model, **self._call)
        except Exception as exc:
            raise self._fail("did not describe", exc) from exc
        if self.protocol == "grpc":
            return {kind: [(t.name, t.datatype) for t in getattr(metadata, kind)] for kind in ("inputs", "outputs")}
        return {kind: [(t["name"], t["datatype"]) for t in metadata[kind]] for kind in ("inputs", "outputs")}

    def _repository(self) -> list[Any]:
        index = self._client.get_model_repository_index(**self._call)
        return list(index.models) if self.protocol == "grpc" else list(index)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = []
        sent = self._wire.send(feeds)
        for spec in self.component.inputs:
            tensor = self._api.InferInput(spec.name, list(sent[spec.name].shape), TRITON_DTYPES[spec.dtype])
            tensor.set_data_from_numpy(sent[spec.name])
            inputs.append(tensor)
        names = [spec.name for spec in self.component.outputs]
        outputs = [self._api.InferRequestedOutput(n) for n in names]
        try:
            result = self._client.infer(self.model, inputs, outputs=outputs, **self._call)
        except Exception as exc:
            raise self._fail("refused or failed a request to", exc) from exc
        return self._wire.receive({n: result.as_numpy(n) for n in names})

    def _release(self) -> None:
        """Close this thread's client (the others end with their threads)."""
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
        self._local = threading.local()


class BlsSession(BaseSession):
    """A component run by another model of the same Triton server, from inside a Python-backend model."""

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
            raise BundleError(f"{self.component.name}: model '{self.model}' failed: {response.error().message()}")
        return self._wire.receive({n: self._pb.get_output_tensor_by_name(response, n).as_numpy() for n in names})
