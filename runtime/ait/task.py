"""What the AiT pipelines share: a pipeline runs the AiT bundles of one task only."""
from __future__ import annotations

from typing import ClassVar

from runtime.ait.constants import task_of
from runtime.bundle import Bundle
from runtime.pipeline import Pipeline


class TaskPipeline(Pipeline):
    """An AiT pipeline: it runs the AiT bundles of its ``task`` ("depth" or "insseg") only."""

    family: ClassVar[str] = "ait"
    task: ClassVar[str]
    variant_hint: ClassVar[str]  # how to export such a bundle, named when another one is refused

    @classmethod
    def fits(cls, bundle: Bundle) -> bool:
        return task_of(bundle) == cls.task

    @classmethod
    def needs(cls) -> str:
        return f"an AiT {cls.task} bundle (python -m export all, or python -m export ait {cls.variant_hint})"
