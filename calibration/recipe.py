"""What calibration knows of a family, found through the family registry (``runtime.families``).

Each family's module ``calibration.<family>`` holds its :data:`RECIPE`, a :class:`FamilyRecipe`:
how to record it (which sessions, with which per-record facts, and how one calibration sample
drives the pipeline), and how the report measures it end to end (INT8 graphs in the pipeline
against FP32) and prints that in one line or two.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from calibration.store import CalibrationData, Facts
from runtime.backends import OrtSession
from runtime.bundle import Bundle, BundleError
from runtime.families import FAMILIES
from runtime.pipeline import Pipeline


@dataclass(frozen=True)
class Inputs:
    """The calibration inputs: prompts, and image and audio files where the family takes them."""

    prompts: tuple[str, ...]
    images: tuple[Path, ...] = ()
    audio: tuple[Path, ...] = ()


@dataclass(frozen=True)
class FamilyRecipe:
    """How to record one family and how its report measures it end to end."""

    open_pipeline: Callable[[Bundle], Pipeline]
    sessions: Mapping[str, Facts | None]  # component name -> per-record facts
    run_sample: Callable[[Any, Inputs, int, Mapping[str, int]], None]  # (pipeline, inputs, sample, settings)
    needs_images: Callable[[Bundle], bool]
    describe: Callable[[Inputs, int], dict[str, Any]]  # what one sample ran on, kept in the index
    # (bundle, calibration data, INT8 sessions by component) -> figures of the pipeline with them against FP32
    end_to_end: Callable[[Bundle, CalibrationData, Mapping[str, OrtSession]], dict]
    summary: Callable[[Mapping[str, Any]], list[str]]  # the end-to-end figures as lines of the report's table
    needs_audio: bool = False
    settings: tuple[str, ...] = ()  # run settings the recipe takes (``steps``, ``frames``), passed when given


def recipe_of(family: str) -> FamilyRecipe:
    """The :class:`FamilyRecipe` of a registered family."""
    if family not in FAMILIES:
        raise BundleError(f"calibration has no recipe for {family} bundles; it knows {', '.join(FAMILIES)}")
    return importlib.import_module(f"calibration.{family}").RECIPE


def families_taking(setting: str) -> list[str]:
    """The families whose recipe takes the run setting ``setting`` (e.g. ``steps``)."""
    return [family for family in FAMILIES if setting in recipe_of(family).settings]


def heldout_inputs(data: CalibrationData) -> list[tuple[int, Mapping[str, Any]]]:
    """(sample, what it ran on) of the held-out samples (the first sample when none is held out)."""
    samples = data.index.get("heldout_samples") or [0]
    return [(s, data.index["inputs"][s]) for s in samples]
