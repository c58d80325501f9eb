"""Record real component inputs while a runtime pipeline runs on calibration data.

Each family has a :class:`FamilyRecipe`: which sessions to record (by component
name, with any per-record facts), where the pipeline keeps them, and how one
calibration sample drives the pipeline. VideoCrafter1: text encoder, UNet along
the sampler trajectory (both branches), VAE decoder. AiT: the image encoder's
pixels and the decoder step's feeds at every step of the AR loop (TTA windows
and flips included). ImageBind: each modality encoder's input (vision, depth and
thermal from the images folder, audio from the ``.wav`` files in it, text from
the prompts, IMU from seeded synthetic ``(6, 2000)`` arrays: no IMU recording ships).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, MutableMapping

import numpy as np

from calibration.store import CalibrationDataError, Facts, Recorder, RecordingSession, write_data
from runtime.bundle import Bundle, BundleError

DEFAULT_SET = Path(__file__).resolve().parents[1] / "samples"
DEFAULT_PROMPTS = DEFAULT_SET / "calibration" / "prompts.txt"
DEFAULT_IMAGES = DEFAULT_SET / "assets"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav",)


@dataclass(frozen=True)
class Inputs:
    """The calibration inputs: prompts and (for image-conditioned pipelines) image files."""

    prompts: tuple[str, ...]
    images: tuple[Path, ...] = ()
    audio: tuple[Path, ...] = ()


@dataclass(frozen=True)
class FamilyRecipe:
    """How to record one family: open the pipeline, the sessions to wrap, and one sample's run."""

    open_pipeline: Callable[[Bundle], Any]
    sessions: Mapping[str, Facts | None]  # component name -> per-record facts
    run_sample: Callable[[Any, Inputs, int, Mapping[str, int]], None]  # (pipeline, inputs, sample, settings)
    needs_images: Callable[[Bundle], bool]
    describe: Callable[[Inputs, int], dict[str, Any]]  # what one sample ran on, kept in the index
    # where the pipeline keeps its sessions: a mutable {key: session} (None: attributes named as the components)
    session_table: Callable[[Any], MutableMapping[str, Any]] | None = None
    needs_audio: bool = False
    settings: tuple[str, ...] = ()  # run settings the recipe takes (``steps``, ``frames``), passed when given


def swap_sessions(pipeline, recipe: FamilyRecipe, replace: Callable[[Any, Facts | None], Any]) -> None:
    """Replace every session of ``pipeline`` whose component the recipe records by ``replace(session, facts)``."""
    if recipe.session_table is not None:
        table = recipe.session_table(pipeline)
        for key, session in list(table.items()):
            if session.component.name in recipe.sessions:
                table[key] = replace(session, recipe.sessions[session.component.name])
        return
    for key, value in list(vars(pipeline).items()):
        name = getattr(getattr(value, "component", None), "name", None)
        if name in recipe.sessions and hasattr(value, "run"):
            setattr(pipeline, key, replace(value, recipe.sessions[name]))


def _timestep(feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    timesteps = feeds["timesteps"]
    return {"timestep": int(timesteps[0]), "batch": int(timesteps.shape[0])}


def _open_video(bundle: Bundle):
    from runtime.videocrafter1 import VideoPipeline

    return VideoPipeline(bundle)


def sample_inputs(inputs: Inputs, sample: int) -> dict[str, str]:
    """The prompt (and image, when there are images) of one sample, cycling through the set."""
    chosen = {"prompt": inputs.prompts[sample % len(inputs.prompts)]}
    if inputs.images:
        chosen["image"] = str(inputs.images[sample % len(inputs.images)])
    return chosen


def _run_video(pipeline, inputs: Inputs, sample: int, settings: Mapping[str, int]) -> None:
    chosen = sample_inputs(inputs, sample)
    pipeline.generate(chosen["prompt"], image=chosen.get("image"), seed=sample, progress=False, **settings)


def _step(feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {"step": int(feeds["step_index"][0]), "batch": int(feeds["token_embedding"].shape[0])}


def _open_depth(bundle: Bundle):
    from runtime.ait.depth import DepthPipeline

    return DepthPipeline(bundle)


def _run_depth(pipeline, inputs: Inputs, sample: int, settings: Mapping[str, int]) -> None:
    pipeline.estimate(str(inputs.images[sample % len(inputs.images)]), progress=False)


def _describe_depth(inputs: Inputs, sample: int) -> dict[str, Any]:
    return {"image": str(inputs.images[sample % len(inputs.images)])}


IMU_SHAPE = (6, 2000)


def synthetic_imu(seed: int) -> np.ndarray:
    """A seeded synthetic IMU window (accelerometer xyz around gravity, gyroscope xyz), float32 (6, 2000)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, IMU_SHAPE[1], dtype=np.float32)
    freq = rng.uniform(0.2, 3.0, (6, 1)).astype(np.float32)
    wave_ = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (6, 1)))
    signal = rng.uniform(0.1, 1.0, (6, 1)) * wave_ + 0.05 * rng.standard_normal(IMU_SHAPE)
    signal[2] += 9.81  # gravity on the accelerometer's z axis
    return signal.astype(np.float32)


def _describe_embedding(inputs: Inputs, sample: int) -> dict[str, Any]:
    """One item per modality: vision cycles through the images; depth and thermal through the images named
    after them (``depth.png``, ``thermal.png``), mirrored on every other pass; IMU is a seeded synthetic array."""
    chosen: dict[str, Any] = {"text": inputs.prompts[sample % len(inputs.prompts)],
                              "vision": str(inputs.images[sample % len(inputs.images)]), "imu_seed": sample}
    for modality in ("depth", "thermal"):
        named = [p for p in inputs.images if modality in p.stem.lower()]
        if named:
            chosen[modality] = str(named[sample % len(named)])
            chosen[f"{modality}_mirrored"] = bool((sample // len(named)) % 2)
    if inputs.audio:
        chosen["audio"] = str(inputs.audio[sample % len(inputs.audio)])
    return chosen


def embedding_items(chosen: Mapping[str, Any], modalities) -> dict[str, list]:
    """The ``{modality: [item]}`` of one described sample, for the opened modalities."""
    from runtime.imagebind.inputs import read_single_channel

    items = {m: [chosen[m]] for m in ("text", "vision", "depth", "thermal", "audio") if m in chosen}
    for m in ("depth", "thermal"):
        if chosen.get(f"{m}_mirrored"):
            items[m] = [np.ascontiguousarray(read_single_channel(chosen[m])[:, ::-1])]
    items["imu"] = [synthetic_imu(int(chosen["imu_seed"]))]
    return {m: v for m, v in items.items() if m in modalities}


def _open_embedding(bundle: Bundle):
    from runtime.imagebind.pipeline import EmbeddingPipeline

    return EmbeddingPipeline(bundle)


def _run_embedding(pipeline, inputs: Inputs, sample: int, settings: Mapping[str, int]) -> None:
    pipeline.embed(embedding_items(_describe_embedding(inputs, sample), pipeline.modalities))


RECIPES: dict[str, FamilyRecipe] = {
    "videocrafter1": FamilyRecipe(
        open_pipeline=_open_video,
        sessions={"text_encoder": None, "unet": _timestep, "vae_decoder": None, "image_encoder": None,
                  "image_proj": None},
        run_sample=_run_video,
        needs_images=lambda bundle: bundle.pipeline.get("mode") == "i2v",
        describe=sample_inputs,
        settings=("steps", "frames"),
    ),
    "ait": FamilyRecipe(
        open_pipeline=_open_depth,
        sessions={"image_encoder": None, "decoder_step": _step},
        run_sample=_run_depth,
        needs_images=lambda bundle: True,
        describe=_describe_depth,
    ),
    "imagebind": FamilyRecipe(
        open_pipeline=_open_embedding,
        sessions={f"{m}_encoder": None for m in ("vision", "text", "audio", "depth", "thermal", "imu")},
        run_sample=_run_embedding,
        needs_images=lambda bundle: True,
        describe=_describe_embedding,
        session_table=lambda pipeline: pipeline.sessions,
        needs_audio=True,
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
    recipe = recipe_for(bundle)
    settings = {k: v for k, v in (("steps", steps), ("frames", frames)) if v is not None}
    unknown = sorted(set(settings) - set(recipe.settings))
    if unknown:
        raise ValueError(f"--{unknown[0]} applies to {', '.join(k for k, r in RECIPES.items() if unknown[0] in r.settings)} "
                         f"bundles; {bundle.root} is a {bundle.manifest.family} bundle")
    inputs = Inputs(read_prompts(prompts), find_images(images) if recipe.needs_images(bundle) else (),
                    find_audio(images) if recipe.needs_audio else ())
    pipeline = recipe.open_pipeline(bundle)
    recorder = Recorder()
    swap_sessions(pipeline, recipe, lambda session, facts: RecordingSession(session, recorder, facts))
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
