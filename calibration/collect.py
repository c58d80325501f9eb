"""Record real component inputs while a runtime pipeline runs on calibration data.

Each family has a :class:`FamilyRecipe`: which pipeline attributes are sessions
to record (with any per-record facts) and how one calibration sample drives the
pipeline. AiT and ImageBind add their recipe to ``RECIPES`` when they land.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from calibration.store import CalibrationDataError, Facts, Recorder, RecordingSession, write_data
from runtime.bundle import Bundle, BundleError

DEFAULT_SET = Path(__file__).resolve().parents[1] / "samples"
DEFAULT_PROMPTS = DEFAULT_SET / "calibration" / "prompts.txt"
DEFAULT_IMAGES = DEFAULT_SET / "assets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Inputs:
    """The calibration inputs: prompts and (for image-conditioned pipelines) image files."""

    prompts: tuple[str, ...]
    images: tuple[Path, ...] = ()


@dataclass(frozen=True)
class FamilyRecipe:
    """How to record one family: open the pipeline, the sessions to wrap, and one sample's run."""

    open_pipeline: Callable[[Bundle], Any]
    sessions: Mapping[str, Facts | None]  # pipeline attribute (= component name) -> per-record facts
    run_sample: Callable[[Any, Inputs, int, int | None], None]  # (pipeline, inputs, sample, steps)
    needs_images: Callable[[Bundle], bool]
    describe: Callable[[Inputs, int], dict[str, str]]  # what one sample ran on, kept in the index


def _timestep(feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    timesteps = feeds["timesteps"]
    return {"timestep": int(timesteps[0]), "batch": int(timesteps.shape[0])}


def _open_video(bundle: Bundle):
    from runtime.video import VideoPipeline

    return VideoPipeline(bundle)


def sample_inputs(inputs: Inputs, sample: int) -> dict[str, str]:
    """The prompt (and image, when there are images) of one sample, cycling through the set."""
    chosen = {"prompt": inputs.prompts[sample % len(inputs.prompts)]}
    if inputs.images:
        chosen["image"] = str(inputs.images[sample % len(inputs.images)])
    return chosen


def _run_video(pipeline, inputs: Inputs, sample: int, steps: int | None) -> None:
    chosen = sample_inputs(inputs, sample)
    pipeline.generate(chosen["prompt"], image=chosen.get("image"), steps=steps, seed=sample, progress=False)


RECIPES: dict[str, FamilyRecipe] = {
    "videocrafter1": FamilyRecipe(
        open_pipeline=_open_video,
        sessions={"text_encoder": None, "unet": _timestep, "vae_decoder": None, "image_encoder": None,
                  "image_proj": None},
        run_sample=_run_video,
        needs_images=lambda bundle: bundle.pipeline.get("mode") == "i2v",
        describe=sample_inputs,
    ),
}


def recipe_for(bundle: Bundle) -> FamilyRecipe:
    family = bundle.manifest.family
    if family not in RECIPES:
        raise BundleError(f"calibration has no recipe for {family} bundles yet; it knows {', '.join(RECIPES)}")
    return RECIPES[family]


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


def heldout_samples(samples: int) -> list[int]:
    """The last quarter of the samples (at least one when there are two or more) are held out for the report."""
    count = max(1, samples // 4) if samples >= 2 else 0
    return list(range(samples - count, samples))


def collect(bundle_root: str | Path, out: str | Path, *, prompts: Path = DEFAULT_PROMPTS,
            images: Path = DEFAULT_IMAGES, samples: int = 8, steps: int | None = None,
            log: Callable[[str], None] = print) -> Path:
    """Run ``samples`` calibration samples through the bundle's pipeline and write the recorded inputs."""
    if samples < 1:
        raise ValueError(f"--samples must be at least 1, found {samples}")
    bundle = Bundle(bundle_root)
    recipe = recipe_for(bundle)
    inputs = Inputs(read_prompts(prompts), find_images(images) if recipe.needs_images(bundle) else ())
    pipeline = recipe.open_pipeline(bundle)
    recorder = Recorder()
    for name, facts in recipe.sessions.items():
        if hasattr(pipeline, name):
            setattr(pipeline, name, RecordingSession(getattr(pipeline, name), recorder, facts))
    for sample in range(samples):
        recorder.sample = sample
        recipe.run_sample(pipeline, inputs, sample, steps)
        log(f"sample {sample + 1}/{samples}: " + ", ".join(f"{k} {len(v)}" for k, v in recorder.feeds.items()))
    header = {"family": bundle.manifest.family, "variant": bundle.manifest.variant, "steps": steps,
              "samples": samples, "heldout_samples": heldout_samples(samples),
              "inputs": [recipe.describe(inputs, sample) for sample in range(samples)]}
    return write_data(Path(out), recorder, header)
