"""Checkpoints in the released files' layouts, with seeded random weights, for any preset.

    python -m benchmarks.probes.checkpoints videocrafter1 t2v-512-v2 /data/vc2.ckpt
    python -m benchmarks.probes.checkpoints imagebind imagebind_huge /data/imagebind_huge.pth
    python -m benchmarks.probes.checkpoints ait swinv2b_480reso_depthonly /data/ait_depth.pth

The real files cannot be downloaded here; these stand in for them, laid out as the official code saves them:

* VideoCrafter1/2 ``model.ckpt``: a Lightning dict ``{"state_dict", "epoch", "global_step"}``, the
  modules under their official prefixes and the 13 DDPM buffers of ``LatentDiffusion`` (12 without
  ``use_scale``), computed here as ``register_schedule`` does, independently of the runtime's code.
* ImageBind ``imagebind_huge.pth``: the plain ``state_dict`` of all six encoders.
* AiT: mmcv's ``{"meta", "state_dict", "optimizer"}``, with Adam-like optimizer state.

Released sizes are written one component at a time: each goes to a scratch file, and the
final file is saved from memory-mapped copies of them, so writing never holds two copies.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

from export.videocrafter1.graphs import PREFIXES
from export.videocrafter1.presets import VariantConfig

Parts = Iterable[tuple[str, Callable[[], dict[str, torch.Tensor]]]]


def ddpm_buffers(settings: dict, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The official ``register_schedule`` buffers (float64 maths, stored as float32) plus ``scale_arr``, of a
    variant's DDPM settings (``VariantConfig.inference``)."""
    n = settings["timesteps"]
    betas = torch.linspace(settings["linear_start"] ** 0.5, settings["linear_end"] ** 0.5, n, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - cumprod)
    buffers = {
        "betas": betas, "alphas_cumprod": cumprod, "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": cumprod.sqrt(), "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(), "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1).sqrt(), "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - prev) * alphas.sqrt() / (1.0 - cumprod),
    }
    if settings.get("use_scale"):
        tail = n - settings["mid_step"] if settings["fix_scale_bug"] else n
        buffers["scale_arr"] = torch.cat([
            torch.linspace(settings["scale_a"], settings["scale_b"], settings["mid_step"], dtype=torch.float64),
            torch.full((tail,), float(settings["scale_b"]), dtype=torch.float64)])
    return {k: v.to(torch.float32).to(dtype) for k, v in buffers.items()}


def _save_parts(parts: Parts, path: Path, wrap: Callable[[dict[str, torch.Tensor]], dict],
                dtype: torch.dtype | None) -> Path:
    """Save each part to a scratch file, then ``wrap(all tensors, memory-mapped)`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=path.parent) as scratch:
        files = []
        for index, (name, make) in enumerate(parts):
            state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                     for k, v in make().items()}
            files.append(Path(scratch) / f"{index}-{name}.pt")
            torch.save(state, files[-1])
            del state
        merged = {}
        for file in files:
            merged.update(torch.load(file, mmap=True, weights_only=True))
        torch.save(wrap(merged), path)
    return path


def videocrafter1_parts(config: VariantConfig, seed: int) -> Parts:
    from export.videocrafter1.bundle import build_component, component_names

    for name in component_names(config):
        yield name, lambda name=name: {PREFIXES[name] + k: v for k, v in
                                       build_component(config, name, None, seed=seed).state_dict().items()}
    yield "ddpm", lambda: ddpm_buffers(config.inference)


def write_videocrafter1(config: VariantConfig, path: Path, *, seed: int = 0, dtype: torch.dtype | None = None,
                        buffers: dict[str, torch.Tensor] | None = None) -> Path:
    """A Lightning ``model.ckpt``; ``buffers`` replaces DDPM buffers (e.g. another schedule), ``dtype`` casts
    every floating tensor (fp16/bf16 checkpoints)."""
    parts = list(videocrafter1_parts(config, seed))
    if buffers is not None:
        parts[-1] = ("ddpm", lambda: {**ddpm_buffers(config.inference), **buffers})
    return _save_parts(parts, path, lambda state: {"state_dict": state, "epoch": 0, "global_step": 0}, dtype)


def write_imagebind(preset, path: Path, *, seed: int = 0) -> Path:
    """The plain ``state_dict`` of all six encoders (official key names)."""
    from export.imagebind.bundle import build_one
    from export.imagebind.model import MODALITIES

    parts = [(m, lambda m=m: build_one(preset, m, None, seed=seed).state_dict()) for m in MODALITIES]
    return _save_parts(parts, path, lambda state: state, None)


def write_ait(config, path: Path, *, seed: int = 0) -> Path:
    """mmcv's ``{"meta", "state_dict", "optimizer"}`` with the task solver's prefixes and Adam-like moments."""
    from export.ait.bundle import INSTANCE_VQVAE_PREFIX, PREFIXES, build_modules
    from export.ait.presets import InstanceConfig

    modules = build_modules(config, None, seed=seed)  # AiT is small: all of it fits in memory at once
    prefixes = {**PREFIXES, **({"vqvae": INSTANCE_VQVAE_PREFIX} if isinstance(config, InstanceConfig) else {})}

    def wrap(state: dict[str, torch.Tensor]) -> dict:
        weights = [v for v in state.values() if v.is_floating_point()]
        moments = {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)}
                   for i, v in enumerate(weights[:4])}
        return {"meta": {"mmcv_version": "1.3.17", "epoch": 1, "iter": 1, "config": f"# {config.name}"},
                "state_dict": state,
                "optimizer": {"state": moments, "param_groups": [{"lr": 1e-4, "params": list(range(len(weights)))}]}}

    parts = [(n, lambda n=n: {prefixes[n] + k: v for k, v in modules[n].state_dict().items()}) for n in modules]
    return _save_parts(parts, path, wrap, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=["videocrafter1", "imagebind", "ait"])
    parser.add_argument("variant")
    parser.add_argument("path", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.family == "videocrafter1":
        from export.videocrafter1.presets import released_variants, tiny_variants

        write_videocrafter1({**released_variants(), **tiny_variants()}[args.variant], args.path, seed=args.seed)
    elif args.family == "imagebind":
        from export.imagebind.presets import presets

        write_imagebind(presets()[args.variant], args.path, seed=args.seed)
    else:
        from export.ait.presets import variant

        write_ait(variant(args.variant), args.path, seed=args.seed)
    print(f"wrote {args.path} ({args.path.stat().st_size / 1024**3:.2f} GiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
