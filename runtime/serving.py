"""A bundle's whole pipeline as one served task: its tensors and its request handler, declared beside each family.

A Triton pipeline model (``python -m engines triton`` writes ``<family>-<variant>-pipeline``) answers one
call with one whole result: a prompt gives a video, an image a depth map or instances, items their
embeddings. Each family declares its tasks in ``runtime/<family>/serving.py`` (``served_task(bundle)``);
:func:`served_task` finds them through the family registry (``runtime.families``), like everything else
of a family. A :class:`ServedTask` names its input and output tensors (Triton's config types, ``-1`` for a
free axis) and opens the runtime's own pipeline for a bundle with the components on a backend; the
repository writer builds the model's config from the tensors, the pipeline model runs the handler, and
:class:`runtime.backends.triton.PipelineClient` checks a call's inputs against them.

Every served task is a pure function of its inputs (noise comes only from ``SEED``, 0 when not given),
so a call repeated after a server restart gives the same result: clients may retry it.
:class:`PipelineClient` calls a bundle's pipeline model on one or more servers, and does.
"""
from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from runtime.backends.base import Backend
from runtime.backends.triton import DEFAULT_URL, PIPELINE_MODEL, model_name
from runtime.backends.triton_servers import Retry, Server, Servers, answered
from runtime.bundle import Bundle, BundleError
from runtime.families import FAMILIES, family_modules

# Triton's config data types -> the type names of the inference protocol (what a client's InferInput takes)
WIRE_TYPES = {"TYPE_STRING": "BYTES", "TYPE_UINT8": "UINT8", "TYPE_INT64": "INT64", "TYPE_FP32": "FP32",
              "TYPE_BOOL": "BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served task: name, Triton config type, dims (``-1``: any size)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def wire_type(self) -> str:
        return WIRE_TYPES[self.dtype]


# what a handler gets: a request's input by name (None when the request lacks it); it returns outputs by name
Inputs = Callable[[str], "np.ndarray | None"]
Handler = Callable[[Inputs], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ServedTask:
    """A task's tensors and ``open(bundle, backend) -> (pipeline, handler)``: the runtime pipeline (closed by
    whoever opened it) and the function that answers one request with it."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    open: Callable[[Bundle, Backend], tuple[Any, Handler]]

    def only(self, keep: Callable[[str], bool]) -> "ServedTask":
        """The task with only the inputs and outputs whose name ``keep`` accepts."""
        return replace(self, inputs=tuple(t for t in self.inputs if keep(t.name)),
                       outputs=tuple(t for t in self.outputs if keep(t.name)))


IMAGE = TensorSpec("IMAGE", "TYPE_UINT8", (-1, -1, 3))  # H x W x RGB
SEED = TensorSpec("SEED", "TYPE_INT64", (1,), optional=True)


def scalar(value: np.ndarray | None, default: Any) -> Any:
    """A request's one-element input as an int, or ``default`` when it was not sent."""
    return default if value is None else int(np.asarray(value).reshape(-1)[0])


def served_task(bundle: Bundle) -> ServedTask:
    """The task a bundle is served as, from its family's ``runtime.<family>.serving``."""
    family = bundle.manifest.family
    if family not in FAMILIES:
        raise BundleError(f"{bundle.root}: family {family!r} has no served task; expected one of {FAMILIES}")
    return family_modules("runtime", "serving")[family].served_task(bundle)


class PipelineClient:
    """One call, one whole result: a bundle's pipeline model (``<family>-<variant>-pipeline``) on Triton servers.

    ``bundle``: the bundle (its manifest and small files are enough: ``Bundle(path, graphs=False)``), whose
    family's served task (``runtime.<family>.serving``) gives the inputs a call may send. ``url``, ``prefix``,
    ``timeout`` and ``retry`` as :class:`runtime.backends.triton.TritonSession` (a pipeline call takes longer:
    600 s by default).
    ``infer({"PROMPT": ..., "SEED": ...}, request_id="req-7")`` returns every output the model produced,
    by name; inputs are checked (names, types, ranks) before any request. Every pipeline call is idempotent
    (its noise comes from ``SEED`` only), so busy and unavailable servers are retried.
    """

    def __init__(self, bundle: str | Bundle, *, url: str | Sequence[str] = DEFAULT_URL, prefix: str | None = None,
                 timeout: float = 600.0, retry: Retry = Retry()):
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle, graphs=False)
        self.task = served_task(self.bundle)
        self.model = model_name(self.bundle.manifest, PIPELINE_MODEL, prefix)
        self.servers = Servers(url, timeout=timeout, retry=retry)
        self._tag = uuid.uuid4().hex[:8]
        self._ids = itertools.count(1)
        self.servers.check_ready(self.model, self.model)

    def _checked(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from tritonclient.utils import np_to_triton_dtype

        specs = {t.name: t for t in self.task.inputs}
        unknown = sorted(set(inputs) - set(specs))
        missing = [t.name for t in self.task.inputs if not t.optional and t.name not in inputs]
        if unknown or missing:
            raise BundleError(f"{self.model}: expected inputs from {list(specs)} with {missing or 'nothing'} "
                              f"required; found {sorted(inputs)}")
        arrays = {}
        for name, value in inputs.items():
            spec, array = specs[name], np.asarray(value)
            if spec.wire_type == "BYTES" and array.dtype.kind in "SU":
                array = np.array([v.encode() if isinstance(v, str) else v for v in array.reshape(-1)],
                                 dtype=object).reshape(array.shape)
            fits = len(spec.dims) == array.ndim and all(d in (-1, n) for d, n in zip(spec.dims, array.shape))
            if np_to_triton_dtype(array.dtype) != spec.wire_type or not fits:
                raise BundleError(f"{self.model}: input {name!r}: expected {spec.wire_type} of shape "
                                  f"{list(spec.dims)} (-1: any), found {np_to_triton_dtype(array.dtype)} "
                                  f"{list(array.shape)}")
            arrays[name] = array
        return arrays

    def infer(self, inputs: Mapping[str, Any], *, request_id: str | None = None) -> dict[str, np.ndarray]:
        """The model's outputs for one request (``request_id`` names it in errors; default a fresh one)."""
        arrays, types = self._checked(inputs), {t.name: t.wire_type for t in self.task.inputs}
        request_id = request_id or f"{self.model}-{self._tag}-{next(self._ids)}"
        what = f"request {request_id} to model '{self.model}'"

        def send(server: Server) -> Any:
            tensors = []
            for name, array in arrays.items():
                tensors.append(server.api.InferInput(name, list(array.shape), types[name]))
                tensors[-1].set_data_from_numpy(array)
            return answered(server.client.infer(self.model, tensors, request_id=request_id, **server.options),
                             request_id, what)

        result = self.servers.call(send, request=what)
        response = result.get_response()
        outputs = response["outputs"] if isinstance(response, dict) else response.outputs
        return {name: result.as_numpy(name) for name in
                (o["name"] if isinstance(o, dict) else o.name for o in outputs)}

    def close(self) -> None:
        """Close this thread's connections."""
        self.servers.close()

    def __enter__(self) -> "PipelineClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
