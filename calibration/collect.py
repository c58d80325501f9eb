"""Record real component inputs while a runtime pipeline runs on calibration data.

What to record of a family and how one calibration sample drives its pipeline is the
family's :class:`~calibration.recipe.FamilyRecipe` (``calibration.<family>``, found
through the family registry); the recorders stand in for the pipeline's sessions
through its one door (:meth:`runtime.pipeline.Pipeline.substitute`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from calibration.recipe import FamilyRecipe, Inputs, families_taking, recipe_of
from calibration.store import CalibrationDataError, Recorder, RecordingSession, write_data
from runtime.bundle import Bundle
from runtime.pipeline import Pipeline

DEFAULT_SET = Path(__file__).resolve().parents[1] / "samples"
DEFAULT_PROMPTS = DEFAULT_SET / "calibration" / "prompts.txt"
DEFAULT_IMAGES = DEFAULT_SET / "assets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav",)


def record_sessions(pipeline: Pipeline, recipe: FamilyRecipe, recorder: Recorder) -> None:
    """Put a :class:`RecordingSession` in place of every session of ``pipeline`` the recipe records."""
    pipeline.substitute(lambda name, session: RecordingSession(session, recorder, recipe.sessions[name])
                        if name in recipe.sessions else None)


def read_prompts(path: Path) -> tuple[str, ...]:
    """Non-empty, non-comment lines of a prompts file."""
    if not path.is_file():
        raise CalibrationDataError(f"prompts file {path} not found; pass --prompts FILE (one prompt a line)")
    prompts = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and not line.lstrip().startswith("#"))
    if not prompts:
        raise CalibrationDataError(f"prompts file {path} has no prompts; expected one prompt a line, found none")
    return prompts


def find_images(folder: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        raise CalibrationDataError(f"images folder {folder} not found; pass --images DIR")
    images = tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
    if not images:
        raise CalibrationDataError(f"images folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); found none")
    return images


def find_audio(folder: Path) -> tuple[Path, ...]:
    """Audio files beside the images (``.wav``); none is fine for bundles without an audio encoder."""
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)) if folder.is_dir() else ()


def heldout_samples(samples: int) -> list[int]:
    """The last quarter of the samples (at least one when there are two or more) are held out for the report."""
    count = max(1, samples // 4) if samples >= 2 else 0
    return list(range(samples - count, samples))


def collect(bundle_root: str | Path, out: str | Path, *, prompts: Path = DEFAULT_PROMPTS,
            images: Path = DEFAULT_IMAGES, samples: int = 8, steps: int | None = None, frames: int | None = None,
            log: Callable[[str], None] = print) -> Path:
    """Run ``samples`` calibration samples through the bundle's pipeline and write the recorded inputs.

    ``steps`` and ``frames`` (VideoCrafter1) override the bundle's sampler steps and frame count, e.g. to
    record a released-size UNet at a few frames; the index keeps them so the report reruns the same.
    """
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, found {samples}")
    bundle = Bundle(bundle_root)
    recipe = recipe_of(bundle.manifest.family)
    settings = {k: v for k, v in (("steps", steps), ("frames", frames)) if v is not None}
    unknown = sorted(set(settings) - set(recipe.settings))
    if unknown:
        raise ValueError(f"--{unknown[0]} applies to {', '.join(families_taking(unknown[0]))} bundles; "
                         f"{bundle.root} is a {bundle.manifest.family} bundle")
    inputs = Inputs(read_prompts(prompts), find_images(images) if recipe.needs_images(bundle) else (),
                    find_audio(images) if recipe.needs_audio else ())
    pipeline = recipe.open_pipeline(bundle)
    recorder = Recorder()
    record_sessions(pipeline, recipe, recorder)
    for sample in range(samples):
        recorder.sample = sample
        recipe.run_sample(pipeline, inputs, sample, settings)
        log(f"sample {sample + 1}/{samples}: " + ", ".join(f"{k} {len(v)}" for k, v in recorder.feeds.items()))
    header = {"family": bundle.manifest.family, "variant": bundle.manifest.variant, "steps": steps, "frames": frames,
              "prompts_file": str(Path(prompts).resolve()),
              "images_folder": str(Path(images).resolve()) if inputs.images else None,
              "samples": samples, "heldout_samples": heldout_samples(samples),
              "inputs": [recipe.describe(inputs, sample) for sample in range(samples)]}
    return write_data(Path(out), recorder, header)
