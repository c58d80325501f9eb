"""Write a VideoCrafter1 bundle: text encoder, UNet step, VAE decoder and encoder (+ I2V image parts).

Weights come from a released checkpoint (official key names, prefixes as in the
Lightning ``state_dict``) or, without one, from seeded random values. Each graph
is checked against its torch module under ONNX Runtime as it is written.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from export.checkpoint import load_into, read_checkpoint, select_prefix
from export.graphs import GraphSpec, export_graph
from export.random_init import randomize_
from export.videocrafter1 import components as vc
from export.videocrafter1.openclip import CLIP_MEAN, CLIP_STD
from export.videocrafter1.presets import VariantConfig
from runtime.bundle import BundleWriter, Manifest, write_manifest
from runtime.tokenizer import VOCAB_FILE, ClipTokenizer
from runtime.videocrafter1.ddim import SCALE_KEYS

TOKENIZER_FILE = "tokenizer/" + VOCAB_FILE.name
Log = Callable[[str], None]


def build_modules(config: VariantConfig, checkpoint: Path | None, *, trust: bool, seed: int) -> dict[str, torch.nn.Module]:
    """The variant's torch modules, filled from ``checkpoint`` or seeded random weights."""
    modules = {
        "unet": vc.build_unet(config.unet),
        "vae": vc.build_vae(config.vae),
        "text_encoder": vc.build_text_encoder(config.text),
    }
    if config.mode == "i2v":
        modules["image_encoder"] = vc.build_image_encoder(config.image_encoder)
        modules["image_proj"] = vc.build_image_proj(config.image_proj)
    if checkpoint is None:
        for offset, module in enumerate(modules.values()):
            randomize_(module, seed + offset)
    else:
        state = read_checkpoint(checkpoint, trust=trust)
        for name, module in modules.items():
            load_into(module, select_prefix(state, vc.PREFIXES[name]), what=f"{config.name} {name}")
        del state
    return {name: module.eval() for name, module in modules.items()}


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


def graph_plan(config: VariantConfig, modules: dict[str, torch.nn.Module]) -> list[tuple[GraphSpec, dict, dict]]:
    """(spec, example feeds, axis ranges) for every graph of the bundle."""
    ranges = shape_ranges(config)
    f = config.vae_factor
    lh, lw = config.height // f, config.width // f
    generator = torch.Generator().manual_seed(0)
    tokens = ClipTokenizer()(["a corgi running on the beach", ""], context_length=77)
    batch_ranges = {"batch": {"min": 1, "opt": 2, "max": 4}}
    image_tokens = config.image_proj["num_queries"] if config.mode == "i2v" else 0
    unet_feeds = vc.example_unet_inputs(config.unet, batch=2, frames=config.frames, height=lh, width=lw,
                                       context_length=77 + image_tokens)
    z = torch.randn(config.frames, 4, lh, lw, generator=generator).numpy()
    frames = (torch.rand(2, 3, config.height, config.width, generator=generator) * 2 - 1).numpy()
    image_ranges = {**ranges, "frames": {"min": 1, "opt": config.frames, "max": ranges["frames"]["max"]},
                    "height": {k: v * f for k, v in ranges["latent_height"].items()},
                    "width": {k: v * f for k, v in ranges["latent_width"].items()}}
    plan = [
        (vc.text_encoder_spec(modules["text_encoder"]), {"tokens": tokens}, batch_ranges),
        (vc.unet_spec(modules["unet"], bool(config.unet.get("fps_cond"))), unet_feeds, ranges),
        (vc.vae_decoder_spec(modules["vae"]), {"z": z}, image_ranges),
        (vc.vae_encoder_spec(modules["vae"]), {"frames": frames}, image_ranges),
    ]
    if config.mode == "i2v":
        size = config.image_encoder["vision_cfg"]["image_size"]
        pixels = torch.randn(2, 3, size, size, generator=generator)
        with torch.no_grad():
            vision_tokens = modules["image_encoder"](pixels).numpy()
        plan += [
            (vc.image_encoder_spec(modules["image_encoder"]), {"pixels": pixels.numpy()}, batch_ranges),
            (vc.image_proj_spec(modules["image_proj"]), {"image_tokens": vision_tokens}, batch_ranges),
        ]
    return plan


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


def export_bundle(config: VariantConfig, out: Path, *, checkpoint: Path | None = None, trust: bool = False,
                  seed: int = 0, log: Log = print) -> Path:
    """Build, export, check and write the bundle for ``config`` at ``out``."""
    started = time.perf_counter()
    source = f"checkpoint {checkpoint}" if checkpoint else f"seeded random weights (seed {seed}), no checkpoint given"
    log(f"videocrafter1 {config.name}: building modules from {source}")
    modules = build_modules(config, checkpoint, trust=trust, seed=seed)
    plan = graph_plan(config, modules)
    components = {}
    with BundleWriter(out) as root:
        for index, (spec, feeds, ranges) in enumerate(plan, 1):
            log(f"[{index}/{len(plan)}] exporting {spec.name} ...")
            component, check, _ = export_graph(spec, feeds, root / f"{spec.name}.onnx", ranges)
            components[spec.name] = component
            log(check.line())
        (root / TOKENIZER_FILE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VOCAB_FILE, root / TOKENIZER_FILE)
        files = [TOKENIZER_FILE] + [f for c in components.values() for f in (c.file, *c.extra_files)]
        manifest = Manifest(
            family="videocrafter1", variant=config.name, components=components,
            pipeline=pipeline_constants(config), files={f: {} for f in files},
            note="; ".join([f"weights: {source}", *config.notes]),
        )
        write_manifest(root, manifest)
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    return out
