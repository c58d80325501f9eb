"""VideoCrafter1 served in one call (a Triton pipeline model): ``PROMPT`` (+ ``IMAGE``, ``SEED``, ``STEPS``) ->
``VIDEO`` (frames x H x W x RGB, uint8), the runtime's own sampler with the components on the server."""
from __future__ import annotations

from dataclasses import replace

from runtime.backends.base import Backend
from runtime.bundle import Bundle
from runtime.serving import IMAGE, SEED, Inputs, ServedTask, TensorSpec, scalar
from runtime.videocrafter1.pipeline import VideoPipeline


def _open(bundle: Bundle, backend: Backend):
    pipeline = VideoPipeline(bundle, backend=backend)

    def generate(get: Inputs) -> dict:
        return {"VIDEO": pipeline.generate(get("PROMPT")[0].decode(), image=get("IMAGE"), seed=scalar(get("SEED"), 0),
                                           steps=scalar(get("STEPS"), None), progress=False)}
    return pipeline, generate


TASK = ServedTask(
    "videocrafter1",
    inputs=(TensorSpec("PROMPT", "TYPE_STRING", (1,)), replace(IMAGE, optional=True), SEED,
            TensorSpec("STEPS", "TYPE_INT64", (1,), optional=True)),
    outputs=(TensorSpec("VIDEO", "TYPE_UINT8", (-1, -1, -1, 3)),),
    open=_open)


def served_task(bundle: Bundle) -> ServedTask:
    """Text-to-video and image-to-video bundles alike (an I2V bundle takes ``IMAGE``)."""
    return TASK
