"""Write a VideoCrafter1 bundle: text encoder, UNet step, VAE decoder and encoder (+ I2V image parts).

Weights come from a released checkpoint (official key names, prefixes as in the
Lightning ``state_dict``) or, without one, from seeded random values. Each graph
is checked against its torch module under ONNX Runtime as it is written.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from export.checkpoint import fit_problem, load_into, meta_parameters, read_checkpoint, refuse, select_prefix
from export.graphs import GraphSpec
from export.phases import export_component, peak_rss_gib
from export.random_init import randomize_
from export.videocrafter1 import components as vc
from export.videocrafter1.openclip import CLIP_MEAN, CLIP_STD
from export.videocrafter1.presets import VariantConfig
from export.videocrafter1.schedule_check import check_schedule
from runtime.bundle import BundleWriter, Manifest, write_manifest
from runtime.tokenizer import VOCAB_FILE, ClipTokenizer
from runtime.videocrafter1.ddim import SCALE_KEYS

TOKENIZER_FILE = "tokenizer/" + VOCAB_FILE.name
Log = Callable[[str], None]


# The seed offset each component gets for random weights (the order they were randomised in before).
SEED_OFFSETS = {"text_encoder": 2, "unet": 0, "vae": 1, "image_encoder": 3, "image_proj": 4}
_BUILDERS = {"unet": (vc.build_unet, "unet"), "vae": (vc.build_vae, "vae"),
             "text_encoder": (vc.build_text_encoder, "text"),
             "image_encoder": (vc.build_image_encoder, "image_encoder"),
             "image_proj": (vc.build_image_proj, "image_proj")}


def component_names(config: VariantConfig) -> list[str]:
    names = ["text_encoder", "unet", "vae"]
    return names + ["image_encoder", "image_proj"] if config.mode == "i2v" else names


def build_component(config: VariantConfig, name: str, state: Mapping[str, torch.Tensor] | None, *,
                    seed: int = 0) -> torch.nn.Module:
    """One component, its parameters taken from ``state`` (a checkpoint's tensors, official prefixes; built
    on the meta device so no other storage is allocated) or from seeded random values when ``state`` is None."""
    builder, field = _BUILDERS[name]
    if state is None:
        return randomize_(builder(getattr(config, field)), seed + SEED_OFFSETS[name]).eval()
    module = empty_component(config, name)
    load_into(module, select_prefix(state, vc.PREFIXES[name]), what=f"{config.name} {name}")
    return module.eval()


def empty_component(config: VariantConfig, name: str) -> torch.nn.Module:
    """The component with its parameters on the meta device (no storage), to be filled by ``load_into``."""
    builder, field = _BUILDERS[name]
    with meta_parameters():
        return builder(getattr(config, field))


def build_modules(config: VariantConfig, checkpoint: Path | None, *, trust: bool, seed: int) -> dict[str, torch.nn.Module]:
    """All of the variant's torch modules at once, filled from ``checkpoint`` or seeded random weights."""
    state = None if checkpoint is None else read_checkpoint(checkpoint, trust=trust)
    return {name: build_component(config, name, state, seed=seed) for name in component_names(config)}


def shape_ranges(config: VariantConfig) -> dict[str, dict[str, int]]:
    """min/opt/max of the symbolic axes: frames, latent size, guidance batch."""
    f = config.vae_factor
    lh, lw = config.height // f, config.width // f
    return {
        "batch": {"min": 1, "opt": 2, "max": 4},
        "frames": {"min": 1, "opt": config.frames, "max": max(24, config.frames)},
        "latent_height": {"min": max(1, lh // 2), "opt": lh, "max": lh * 2},
        "latent_width": {"min": max(1, lw // 2), "opt": lw, "max": lw * 2},
    }


@dataclass(frozen=True)
class ExampleShape:
    """The shape graphs are traced and checked at: frames and latent size (the VAE decodes ``vae_frames``)."""

    frames: int
    latent_height: int
    latent_width: int
    vae_frames: int


def opt_shape(config: VariantConfig) -> ExampleShape:
    """The profile's opt shape (what benchmarks time)."""
    f = config.vae_factor
    return ExampleShape(config.frames, config.height // f, config.width // f, config.frames)


def trace_shape(config: VariantConfig) -> ExampleShape:
    """A small shape inside the profile to trace and check at: at most 4 frames, the smallest latent size the
    UNet's downsampling allows. The axes stay symbolic, so the manifest keeps the variant's profile while the
    one traced forward (and its attention maps) stays small."""
    ranges = shape_ranges(config)
    multiple = 2 ** (len(config.unet["channel_mult"]) - 1)

    def smallest(axis: str) -> int:
        return -(-ranges[axis]["min"] // multiple) * multiple

    return ExampleShape(min(4, config.frames), smallest("latent_height"), smallest("latent_width"), 1)


def component_graphs(config: VariantConfig, name: str, module: torch.nn.Module, shape: ExampleShape
                     ) -> list[tuple[GraphSpec, dict, dict]]:
    """(spec, example feeds at ``shape``, axis ranges) for the graphs of one component."""
    ranges = shape_ranges(config)
    f = config.vae_factor
    generator = torch.Generator().manual_seed(0)
    batch_ranges = {"batch": {"min": 1, "opt": 2, "max": 4}}
    if name == "text_encoder":
        tokens = ClipTokenizer()(["a corgi running on the beach", ""], context_length=77)
        return [(vc.text_encoder_spec(module), {"tokens": tokens}, batch_ranges)]
    if name == "unet":
        image_tokens = config.image_proj["num_queries"] if config.mode == "i2v" else 0
        feeds = vc.example_unet_inputs(config.unet, batch=2, frames=shape.frames, height=shape.latent_height,
                                       width=shape.latent_width, context_length=77 + image_tokens)
        return [(vc.unet_spec(module, bool(config.unet.get("fps_cond"))), feeds, ranges)]
    if name == "vae":
        image_ranges = {**ranges, "height": {k: v * f for k, v in ranges["latent_height"].items()},
                        "width": {k: v * f for k, v in ranges["latent_width"].items()}}
        z = torch.randn(shape.vae_frames, 4, shape.latent_height, shape.latent_width, generator=generator).numpy()
        frames = torch.rand(2, 3, shape.latent_height * f, shape.latent_width * f, generator=generator) * 2 - 1
        return [(vc.vae_decoder_spec(module), {"z": z}, image_ranges),
                (vc.vae_encoder_spec(module), {"frames": frames.numpy()}, image_ranges)]
    if name == "image_encoder":
        size = config.image_encoder["vision_cfg"]["image_size"]
        pixels = torch.randn(2, 3, size, size, generator=generator).numpy()
        return [(vc.image_encoder_spec(module), {"pixels": pixels}, batch_ranges)]
    if name == "image_proj":
        width = config.image_encoder["vision_cfg"]["width"]
        patches = (config.image_encoder["vision_cfg"]["image_size"] // config.image_encoder["vision_cfg"]["patch_size"])
        tokens = torch.randn(2, patches**2 + 1, width, generator=generator).numpy()
        return [(vc.image_proj_spec(module), {"image_tokens": tokens}, batch_ranges)]
    raise ValueError(f"unknown VideoCrafter1 component {name!r}; expected one of {list(SEED_OFFSETS)}")


def graph_plan(config: VariantConfig, modules: dict[str, torch.nn.Module], shape: ExampleShape | None = None
               ) -> list[tuple[GraphSpec, dict, dict]]:
    """(spec, example feeds, axis ranges) for every graph of the bundle, at ``shape`` (default: the opt shape)."""
    shape = shape or opt_shape(config)
    return [entry for name in component_names(config)
            for entry in component_graphs(config, name, modules[name], shape)]


def pipeline_constants(config: VariantConfig) -> dict:
    s = config.sampler
    constants = {
        "mode": config.mode,
        "height": config.height,
        "width": config.width,
        "frames": config.frames,
        "fps": s["fps"],
        "save_fps": s["save_fps"],
        "latent_channels": config.unet["in_channels"],
        "vae_factor": config.vae_factor,
        "scale_factor": s["scale_factor"],
        "context_length": config.text["text_cfg"]["context_length"],
        "uncond_prompt": "",
        "tokenizer": TOKENIZER_FILE,
        "fps_cond": bool(config.unet.get("fps_cond")),
        "sampler": {
            "name": "ddim",
            "linear_start": s["linear_start"],
            "linear_end": s["linear_end"],
            "num_timesteps": s["timesteps"],
            "steps": s["steps"],
            "eta": s["eta"],
            "guidance_scale": s["guidance_scale"],
            **{k: s[k] for k in SCALE_KEYS if k in s},
        },
    }
    if config.mode == "i2v":
        constants["image"] = {
            "size": config.image_encoder["vision_cfg"]["image_size"],
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "loader_resize": "opencv bilinear to (height, width) on float32 RGB, then /127.5 - 1",
            "clip_resize": "gaussian blur (reflect) when downscaling + bicubic align_corners (kornia antialias)",
            "text_tokens": 77,
            "image_tokens": config.image_proj["num_queries"],
            "uncond_image": "zeros",
        }
    return constants


def check_checkpoint(config: VariantConfig, checkpoint: Path, *, trust: bool, log: Log) -> None:
    """Before any export: every component's keys and shapes (on modules built on the meta device, so nothing
    is loaded) and the diffusion schedule; all the problems are reported at once."""
    state = read_checkpoint(checkpoint, trust=trust)
    problems = []
    for name in component_names(config):
        problems.append(fit_problem(empty_component(config, name), select_prefix(state, vc.PREFIXES[name]),
                                    what=f"{config.name} {name}"))
    refuse([p for p in problems if p])
    checked = check_schedule(state, pipeline_constants(config)["sampler"], what=f"{config.name}'s sampler")
    log(f"checkpoint fits {config.name}" + (f"; its schedule ({', '.join(checked)}) matches the bundle's sampler"
                                             if checked else ""))


def export_bundle(config: VariantConfig, out: Path, *, checkpoint: Path | None = None, trust: bool = False,
                  seed: int = 0, log: Log = print) -> Path:
    """Build, export, check and write the bundle for ``config`` at ``out``, one component at a time.

    Each component is built (from the memory-mapped checkpoint or seeded random weights), traced at
    :func:`trace_shape` and released before its graphs are checked under ONNX Runtime, so at most one
    component's weights are in memory at once.
    """
    started = time.perf_counter()
    source = f"checkpoint {checkpoint}" if checkpoint else f"seeded random weights (seed {seed}), no checkpoint given"
    log(f"videocrafter1 {config.name}: exporting from {source}, traced at {trace_shape(config)}")
    if checkpoint is not None:
        check_checkpoint(config, checkpoint, trust=trust, log=log)
    names = component_names(config)
    components = {}
    with BundleWriter(out) as root:
        for index, name in enumerate(names, 1):
            def build(name=name):
                state = None if checkpoint is None else read_checkpoint(checkpoint, trust=trust)
                return build_component(config, name, state, seed=seed)

            def graphs(module, name=name):
                return component_graphs(config, name, module, trace_shape(config))

            for component in export_component(f"[{index}/{len(names)}] {name}", build, graphs, root, log):
                components[component.name] = component
        (root / TOKENIZER_FILE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VOCAB_FILE, root / TOKENIZER_FILE)
        files = [TOKENIZER_FILE] + [f for c in components.values() for f in (c.file, *c.extra_files)]
        manifest = Manifest(
            family="videocrafter1", variant=config.name, components=components,
            pipeline=pipeline_constants(config), files={f: {} for f in files},
            note="; ".join([f"weights: {source}", *config.notes]),
        )
        write_manifest(root, manifest)
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s (peak RSS {peak_rss_gib():.2f} GiB)")
    return out
