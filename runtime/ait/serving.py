"""AiT served in one call (a Triton pipeline model): ``IMAGE`` -> ``DEPTH`` (a depth bundle), or ``IMAGE``
(+ ``SEED``) -> ``BOXES``, ``SCORES``, ``CLASSES``, ``MASKS`` (an instance-segmentation bundle)."""
from __future__ import annotations

from runtime.ait.constants import task_of
from runtime.ait.depth import DepthPipeline
from runtime.ait.instances import InstancePipeline
from runtime.backends.base import Backend
from runtime.bundle import Bundle, BundleError
from runtime.serving import IMAGE, SEED, Inputs, ServedTask, TensorSpec, scalar


def _open_depth(bundle: Bundle, backend: Backend):
    pipeline = DepthPipeline(bundle, backend=backend)
    return pipeline, lambda get: {"DEPTH": pipeline.estimate(get("IMAGE"), progress=False)}


def _open_instances(bundle: Bundle, backend: Backend):
    pipeline = InstancePipeline(bundle, backend=backend)

    def segment(get: Inputs) -> dict:
        found = pipeline.segment(get("IMAGE"), seed=scalar(get("SEED"), 0), progress=False)
        return {"BOXES": found.boxes, "SCORES": found.scores, "CLASSES": found.classes, "MASKS": found.masks}
    return pipeline, segment


TASKS = {
    "depth": ServedTask("depth", inputs=(IMAGE,), outputs=(TensorSpec("DEPTH", "TYPE_FP32", (-1, -1)),),
                        open=_open_depth),
    "insseg": ServedTask("insseg", inputs=(IMAGE, SEED),
                         outputs=(TensorSpec("BOXES", "TYPE_FP32", (-1, 4)), TensorSpec("SCORES", "TYPE_FP32", (-1,)),
                                  TensorSpec("CLASSES", "TYPE_INT64", (-1,)),
                                  TensorSpec("MASKS", "TYPE_BOOL", (-1, -1, -1))),
                         open=_open_instances),
}


def served_task(bundle: Bundle) -> ServedTask:
    """The task the bundle was exported for."""
    task = task_of(bundle)
    if task not in TASKS:
        raise BundleError(f"{bundle.root}: AiT task {task!r} is not served; expected one of {sorted(TASKS)}")
    return TASKS[task]
