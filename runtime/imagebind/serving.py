"""ImageBind served in one call (a Triton pipeline model): any of ``TEXT`` (strings), ``VISION`` (N x H x W x RGB,
uint8), ``AUDIO`` (N x samples), ``DEPTH``, ``THERMAL`` (N x H x W), ``IMU`` (N x 6 x T) -> ``<MODALITY>_EMBEDDING``
for each one sent. A bundle's model has the tensors of its modalities only."""
from __future__ import annotations

from runtime.backends.base import Backend
from runtime.bundle import Bundle
from runtime.imagebind.constants import ImageBindConstants
from runtime.imagebind.pipeline import EmbeddingPipeline
from runtime.serving import Inputs, ServedTask, TensorSpec

# a request's items per modality: type and dims (N items first)
ITEMS = {"TEXT": ("TYPE_STRING", (-1,)), "VISION": ("TYPE_UINT8", (-1, -1, -1, 3)), "AUDIO": ("TYPE_FP32", (-1, -1)),
         "DEPTH": ("TYPE_FP32", (-1, -1, -1)), "THERMAL": ("TYPE_FP32", (-1, -1, -1)),
         "IMU": ("TYPE_FP32", (-1, 6, -1))}


def _open(bundle: Bundle, backend: Backend):
    pipeline = EmbeddingPipeline(bundle, backend=backend)

    def embed(get: Inputs) -> dict:
        items = {m: get(m.upper()) for m in pipeline.modalities}
        items = {m: [t.decode() for t in v] if m == "text" else list(v) for m, v in items.items() if v is not None}
        return {f"{m.upper()}_EMBEDDING": e for m, e in pipeline.embed(items).items()}
    return pipeline, embed


TASK = ServedTask(
    "imagebind",
    inputs=tuple(TensorSpec(name, dtype, dims, optional=True) for name, (dtype, dims) in ITEMS.items()),
    outputs=tuple(TensorSpec(f"{name}_EMBEDDING", "TYPE_FP32", (-1, -1)) for name in ITEMS),
    open=_open)


def served_task(bundle: Bundle) -> ServedTask:
    """The tensors of the bundle's modalities."""
    have = {m.upper() for m in ImageBindConstants.of(bundle).modalities}
    return TASK.only(lambda name: name.removesuffix("_EMBEDDING") in have)
