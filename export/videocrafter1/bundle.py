"""Write a VideoCrafter1 bundle: text encoder, UNet step, VAE decoder and encoder (+ I2V image parts).

Weights come from a released checkpoint (official key names, prefixes as in the
Lightning ``state_dict``) or, without one, from seeded random values. Each graph
is checked against its torch module under ONNX Runtime as it is written.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Mapping

import torch

from export.checkpoint import fit_problem, load_into, meta_parameters, refuse, select_prefix
from export.phases import export_component, peak_rss_gib
from export.random_init import randomize_
from export.videocrafter1.graphs import component_spec, component_specs
from export.videocrafter1.openclip import CLIP_MEAN, CLIP_STD
from export.videocrafter1.presets import VariantConfig
from export.videocrafter1.schedule_check import check_schedule
from export.videocrafter1.turbo_weights import TurboWeights, check_options, check_turbo_files, describe, read_state
from runtime.bundle import BundleWriter, Manifest, write_manifest
from runtime.tokenizer import VOCAB_FILE
from runtime.videocrafter1.constants import (LCM_KEYS, MOTION_KEYS, SCALE_KEYS, DiffusionSchedule, ImageConditioning, SamplingConstants,
                                             VideoConstants)

TOKENIZER_FILE = "tokenizer/" + VOCAB_FILE.name
Log = Callable[[str], None]


def component_names(config: VariantConfig) -> list[str]:
    """The names of the variant's components, in export order."""
    return [spec.name for spec in component_specs(config)]


def build_component(config: VariantConfig, name: str, state: Mapping[str, torch.Tensor] | None, *,
                    seed: int = 0) -> torch.nn.Module:
    """One component, its parameters taken from ``state`` (a checkpoint's tensors, official prefixes; built
    on the meta device so no other storage is allocated) or from seeded random values when ``state`` is None."""
    spec = component_spec(config, name)
    if state is None:
        return randomize_(spec.build(), seed + spec.seed_offset).eval()
    module = empty_component(config, name)
    load_into(module, select_prefix(state, spec.prefix), what=f"{config.name} {name}")
    return module.eval()


def empty_component(config: VariantConfig, name: str) -> torch.nn.Module:
    """The component with its parameters on the meta device (no storage), to be filled by ``load_into``."""
    with meta_parameters():
        return component_spec(config, name).build()


def build_modules(config: VariantConfig, checkpoint: Path | None, *, trust: bool, seed: int,
                  turbo: TurboWeights = TurboWeights()) -> dict[str, torch.nn.Module]:
    """All of the variant's torch modules at once, filled from ``checkpoint`` (and T2V-Turbo's ``turbo`` files)
    or seeded random weights."""
    state = None if checkpoint is None else read_state(config, checkpoint, turbo, trust=trust)
    return {name: build_component(config, name, state, seed=seed) for name in component_names(config)}


def pipeline_constants(config: VariantConfig) -> VideoConstants:
    """The bundle's pipeline constants: the variant's defaults, latent layout, tokenizer and diffusion schedule."""
    s = config.inference
    image = None
    if config.mode == "i2v":
        image = ImageConditioning(
            size=config.image_encoder["vision_cfg"]["image_size"], mean=tuple(CLIP_MEAN), std=tuple(CLIP_STD),
            loader_resize="opencv bilinear to (height, width) on float32 RGB, then /127.5 - 1",
            clip_resize="gaussian blur (reflect) when downscaling + bicubic align_corners (kornia antialias)",
            text_tokens=77, image_tokens=config.image_proj["num_queries"], uncond_image="zeros")
    diffusion = DiffusionSchedule(linear_start=s["linear_start"], linear_end=s["linear_end"],
                                  num_timesteps=s["timesteps"], **{k: s[k] for k in SCALE_KEYS if k in s})
    return VideoConstants(
        mode=config.mode, height=config.height, width=config.width, frames=config.frames, fps=s["fps"],
        save_fps=s["save_fps"], latent_channels=config.unet["in_channels"], vae_factor=config.vae_factor,
        scale_factor=s["scale_factor"], context_length=config.text["text_cfg"]["context_length"], uncond_prompt="",
        tokenizer=TOKENIZER_FILE, fps_cond=bool(config.unet.get("fps_cond")),
        sampling=SamplingConstants(sampler_name=s.get("sampler", "ddim"), diffusion=diffusion, steps=s["steps"],
                                   eta=s["eta"], guidance_scale=s["guidance_scale"],
                                   **{k: s[k] for k in LCM_KEYS + MOTION_KEYS if k in s}),
        image=image)


def check_checkpoint(config: VariantConfig, checkpoint: Path, *, trust: bool, log: Log,
                     turbo: TurboWeights = TurboWeights()) -> None:
    """Before any export: T2V-Turbo's files, every component's keys and shapes (on modules built on the meta
    device, so nothing is loaded) and the diffusion schedule; all the problems are reported at once."""
    check_turbo_files(config, turbo, trust=trust)
    state = read_state(config, checkpoint, turbo, trust=trust, merge_lora=False)
    problems = []
    for spec in component_specs(config):
        problems.append(fit_problem(empty_component(config, spec.name), select_prefix(state, spec.prefix),
                                    what=f"{config.name} {spec.name}"))
    refuse([p for p in problems if p])
    checked = check_schedule(state, pipeline_constants(config).sampling.diffusion,
                             what=f"{config.name}'s diffusion schedule")
    log(f"checkpoint fits {config.name}" + (f"; its schedule ({', '.join(checked)}) matches the bundle's"
                                             if checked else ""))


def export_bundle(config: VariantConfig, out: Path, *, checkpoint: Path | None = None, trust: bool = False,
                  seed: int = 0, log: Log = print, turbo: TurboWeights = TurboWeights()) -> Path:
    """Build, export, check and write the bundle for ``config`` at ``out``, one component at a time.

    Each component is built (from the memory-mapped checkpoint or seeded random weights), traced at its spec's
    ``trace_shape()`` and released before its graphs are checked under ONNX Runtime, so at most one
    component's weights are in memory at once.
    """
    started = time.perf_counter()
    check_options(config, turbo, checkpoint)
    source = f"checkpoint {checkpoint}" if checkpoint else f"seeded random weights (seed {seed}), no checkpoint given"
    source = "; ".join(filter(None, [source, describe(config, turbo)]))
    specs = component_specs(config)
    log(f"videocrafter1 {config.name}: exporting from {source}, traced at {specs[0].trace_shape()}")
    if checkpoint is not None:
        check_checkpoint(config, checkpoint, trust=trust, log=log, turbo=turbo)
    components = {}
    with BundleWriter(out) as root:
        for index, spec in enumerate(specs, 1):
            def build(name=spec.name):
                state = None if checkpoint is None else read_state(config, checkpoint, turbo, trust=trust,
                                                                    component=name)
                return build_component(config, name, state, seed=seed)

            label = f"[{index}/{len(specs)}] {spec.name}"
            for component in export_component(label, spec, build, root, log, shape=spec.trace_shape()):
                components[component.name] = component
        (root / TOKENIZER_FILE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VOCAB_FILE, root / TOKENIZER_FILE)
        files = [TOKENIZER_FILE] + [f for c in components.values() for f in c.files]
        manifest = Manifest(
            family="videocrafter1", variant=config.name, components=components,
            pipeline=pipeline_constants(config).to_dict(), files={f: {} for f in files},
            note="; ".join([f"weights: {source}", *config.notes]),
        )
        write_manifest(root, manifest)
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s (peak RSS {peak_rss_gib():.2f} GiB)")
    return out
