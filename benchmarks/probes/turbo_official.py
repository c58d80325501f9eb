"""T2V-Turbo (v1 and v2) against the OFFICIAL pipeline: the decoded video from the same noise.

Run by hand (about 25 minutes and 16 GiB at released size on a 2-core CPU), with the official repository's
``lvdm/``, ``utils/``, ``scheduler/`` and ``pipeline/`` importable (``git archive HEAD lvdm utils scheduler
pipeline`` of Ji4chenLi/t2v-turbo; none of it is kept here) and the golden generators' folder for their helpers::

    PYTHONPATH=/tmp/t2v-turbo:tests/videocrafter1/golden nice /usr/bin/time -v \\
        .venv/bin/python -m benchmarks.probes.turbo_official WORK [--variant t2v-turbo-v2] [--frames 8] \\
        [--seed 0] [--up-std 0.02] [--case tests/videocrafter1/golden/lcm_video_t2v_turbo]

1. Official-layout files from seeded random weights, written under ``WORK``: ``model.ckpt`` (Lightning
   layout, ``state_dict`` of ``model.diffusion_model.*``: VideoCrafter2's UNet, i.e. the official Turbo
   ``UNetModel`` without its Turbo-only layers; ``first_stage_model.*`` from the official ``AutoencoderKL``;
   ``cond_stage_model.model.*`` from the export's OpenCLIP text tower, which has open_clip's names). v1 adds
   ``unet_lora.pt`` made by the official training path (``inject_trainable_lora_extended`` at rank 64, the
   ups and downs given random values, saved by ``save_lora_weight``) and ``time_cond_proj.pt``, the base
   ``time_cond_proj`` the official UNet drew; v2 adds ``unet_mg.pt``, the whole Turbo UNet's state dict
   (official keys, no prefix, ``motion_cond_proj`` and ``combine_proj`` included).
2. ``python -m export videocrafter1 --variant VARIANT --checkpoint model.ckpt`` with ``--lora`` and
   ``--time-cond-proj`` (v1) or ``--unet`` (v2), in a child process.
3. The runtime (ONNX Runtime, ``memory="low"``): the prompt's context, then ``generate`` from x_T and the
   per-step noise (the official generator's draws, replayed), latents and the decoded uint8 video.
4. The official ``T2VTurboVC2Pipeline`` with the app's loading (v1: ``LoraHandler``, ``collapse_lora``; v2:
   ``load_state_dict``, and the Replicate predictor's motion guidance) on the same context
   (``prompt_embeds``), x_T (``latents``) and generator, decoded by the official ``decode_first_stage_2DAE``
   and saved to uint8 as the official app saves videos.

Prints JSON: PSNR of the two uint8 videos (the issue's bar: 40 dB), SNR and max abs of the final latents,
the share of clipped pixels, and the time of each part. The runtime's weights are freed before the
official modules are built, so the two never share the memory. With a tiny variant and ``--case DIR`` the
run is kept as a golden case (the official-layout files, the context, x_T, noise and the official latents
and video) that ``python -m export verify-reference`` (handler ``lcm.video``) and the tests replay.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROMPT = "a corgi running on the beach at sunset"
VARIANTS = ("t2v-turbo-vc2", "t2v-turbo-v2", "tiny-t2v-turbo", "tiny-t2v-turbo-v2")
TURBO_ONLY = ("time_cond_proj.", "motion_cond_proj.", "combine_proj.")  # not in VideoCrafter2's UNet


def is_v2(config) -> bool:
    """T2V-Turbo v2 (a whole UNet file, motion guidance) rather than v1 (VideoCrafter2 plus a LoRA list)."""
    return bool(config.unet.get("motion_cond_proj_dim"))


def official_files(work: Path, config, seed: int, up_std: float) -> dict[str, Path]:
    """Step 1: ``model.ckpt``, ``unet_lora.pt`` and ``time_cond_proj.pt`` under ``work``."""
    import torch
    from lvdm.models.autoencoder import AutoencoderKL
    from lvdm.modules.networks.openaimodel3d import UNetModel
    from seeded_weights import randomize, randomize_lora
    from utils.lora import inject_trainable_lora_extended, save_lora_weight

    from export.videocrafter1.bundle import build_component

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # time_cond_proj: the default nn.Linear init, as the official app draws it
    unet = UNetModel(**config.unet)
    randomize(unet, generator)
    vae = AutoencoderKL(**config.vae)
    randomize(vae, generator)
    text = build_component(config, "text_encoder", None, seed=seed)
    base = {k: v for k, v in unet.state_dict().items() if not k.startswith(TURBO_ONLY)}  # VideoCrafter2's UNet
    state = {**{f"model.diffusion_model.{k}": v for k, v in base.items()},
             **{f"first_stage_model.{k}": v for k, v in vae.state_dict().items()},
             **{f"cond_stage_model.model.{k}": v for k, v in text.state_dict().items()}}
    files = {"checkpoint": work / "model.ckpt"}
    torch.save({"state_dict": state}, files["checkpoint"])
    del state, vae, text
    if is_v2(config):  # the whole Turbo UNet, official keys, no prefix (unet_mg.pt)
        files["unet"] = work / "unet_mg.pt"
        torch.save(unet.state_dict(), files["unet"])
        return files
    files.update(lora=work / "unet_lora.pt", time_cond_proj=work / "time_cond_proj.pt")
    torch.save(unet.time_cond_proj.weight.detach().clone(), files["time_cond_proj"])
    inject_trainable_lora_extended(unet, {"UNetModel"}, r=64)
    randomize_lora(unet, generator, up_std)
    save_lora_weight(unet, str(files["lora"]), ["UNetModel"])
    return files


def export_bundle(work: Path, variant: str, files: dict[str, Path]) -> Path:
    """Step 2, in a child process (its peak memory is its own)."""
    out = work / "bundle"
    flags = [arg for key, path in files.items() for arg in (f"--{key.replace('_', '-')}", str(path))]
    subprocess.run([sys.executable, "-m", "export", "videocrafter1", "--variant", variant, *flags, "--out", str(out)],
                   check=True)
    return out


def run_runtime(bundle: Path, frames: int, seed: int) -> dict[str, np.ndarray]:
    """Step 3: context, x_T, the replayed noise (one per step but the last), the final latents and the uint8 video
    of the runtime."""
    import torch

    from runtime import VideoPipeline

    with VideoPipeline(bundle, backend="onnxruntime", memory="low") as pipeline:
        c = pipeline.constants
        shape = pipeline.latent_shape(1, frames, c.height, c.width)
        x_T = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
        replay = torch.Generator().manual_seed(seed + 1)  # the official generator's draws, one per step
        noise = [torch.randn(shape, generator=replay).numpy() for _ in range(c.sampling.steps)]
        context = pipeline.encode_text([PROMPT])
        latents = pipeline.generate(PROMPT, frames=frames, latents=x_T, noise=noise[:-1], output_type="latent")
        video = pipeline.decode(latents)[0]
    return {"context": context, "x_T": x_T, "noise": np.stack(noise[:-1]), "latents": latents, "video": video}


def run_official(config, files: dict[str, Path], found: dict[str, np.ndarray], frames: int, seed: int
                 ) -> dict[str, np.ndarray]:
    """Step 4: the official pipeline from the official files, on the runtime's context, x_T and noise."""
    import torch
    from lvdm.models.autoencoder import AutoencoderKL
    from lvdm.models.ddpm3d import LatentDiffusion
    from lvdm.modules.networks.openaimodel3d import UNetModel
    from make_lora_case import merge_like_the_app
    from pipeline.t2v_turbo_vc2_pipeline import T2VTurboVC2Pipeline
    from scheduler.t2v_turbo_scheduler import T2VTurboScheduler

    state = torch.load(files["checkpoint"], mmap=True, weights_only=True)["state_dict"]
    if is_v2(config):  # the app's v2 path: the whole UNet, loaded strictly
        unet = UNetModel(**config.unet)
        unet.load_state_dict(torch.load(files["unet"], weights_only=True))
        unet.eval()
    else:  # the app's v1 path: VideoCrafter2's UNet, the drawn time_cond_proj, the LoRA collapsed into it
        prefix = "model.diffusion_model."
        base = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        base["time_cond_proj.weight"] = torch.load(files["time_cond_proj"], weights_only=True)
        unet = merge_like_the_app(config.unet, base, files["lora"])
    vae = AutoencoderKL(**config.vae)
    vae.load_state_dict({k[len("first_stage_model."):]: v for k, v in state.items()
                         if k.startswith("first_stage_model.")})

    class Model(torch.nn.Module):
        """What the pipeline reads of a LatentDiffusion, with its own decode method."""

        scale_factor = config.inference["scale_factor"]
        decode_first_stage_2DAE = LatentDiffusion.decode_first_stage_2DAE

        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.diffusion_model = unet
            self.first_stage_model = vae.eval()
            self.cond_stage_model = None

    class CPUPipeline(T2VTurboVC2Pipeline):
        _execution_device = torch.device("cpu")
        dtype = torch.float32

    sampling = config.inference
    motion = {"use_motion_cond": True, "motion_gs": sampling["motion_gs"], "percentage": sampling["motion_percentage"]
              } if sampling.get("use_motion_cond") else {}
    pipe = CPUPipeline(Model(), T2VTurboScheduler(num_train_timesteps=1000, linear_start=0.00085,
                                                  linear_end=0.012),
                       {"params": {"unet_config": {"params": {"in_channels": 4}}}})
    with torch.no_grad():
        videos = pipe(prompt_embeds=torch.from_numpy(found["context"]), height=config.height, width=config.width,
                      frames=frames, fps=sampling["fps"], guidance_scale=sampling["guidance_scale"],
                      generator=torch.Generator().manual_seed(seed + 1), latents=torch.from_numpy(found["x_T"]),
                      num_inference_steps=sampling["steps"], lcm_origin_steps=sampling["lcm_origin_steps"],
                      output_type="latent", **motion)
        latents = videos.clone()
        decoded = Model.decode_first_stage_2DAE(pipe.pretrained_t2v, latents)
    video = ((torch.clamp(decoded[0].float(), -1.0, 1.0) + 1.0) / 2.0 * 255).to(torch.uint8)  # the app's save
    return {"latents": latents.numpy(), "video": video.permute(1, 2, 3, 0).numpy()}


def write_case(case: Path, args: argparse.Namespace, files: dict[str, Path], found: dict[str, np.ndarray],
               official: dict[str, np.ndarray]) -> None:
    """The tiny run as a golden case: the official-layout files, the runtime's inputs, the official outputs."""
    import shutil

    import torch

    case.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        shutil.copyfile(path, case / path.name)
    np.savez(case / "io.npz", context=found["context"], x_T=found["x_T"], noise=found["noise"],
             latents=official["latents"], video=official["video"])
    (case / "case.json").write_text(json.dumps({
        "component": "lcm.video", "official_class": "pipeline.t2v_turbo_vc2_pipeline.T2VTurboVC2Pipeline.__call__ "
        "+ LatentDiffusion.decode_first_stage_2DAE, LoRA loaded as app.py loads it",
        "config": {"variant": args.variant, "prompt": PROMPT, "frames": args.frames, "psnr_db_min": 40.0,
                   **{k: v.name for k, v in files.items()}},
        "inputs": ["x_T", "noise"], "outputs": ["latents", "video"], "atol": 1e-4, "rtol": 1e-4,
        "seed": args.seed, "notes": (
            f"Made by python -m benchmarks.probes.turbo_official --variant {args.variant} (seed {args.seed}, LoRA "
            f"ups N(0, {args.up_std}^2)) with the official Ji4chenLi/t2v-turbo code, fp32, CPU, torch "
            f"{torch.__version__}. model.ckpt: Lightning layout, seeded random weights (official UNetModel and "
            "AutoencoderKL, the export's OpenCLIP text tower); unet_lora.pt: the official save_lora_weight list; "
            "time_cond_proj.pt: the base the official UNet drew. context: the runtime's text encoding of the "
            "prompt, given to the official pipeline as prompt_embeds. noise: the official generator's draws, one per "
            "step but the last (the official scheduler draws it too, unused). video: uint8 (T, H, W, 3) as the "
            "official app saves it.")}, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probes.turbo_official", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="folder for the official-layout files and the bundle")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--up-std", type=float, default=0.02, help="std of the LoRA ups (the downs: 1/rank)")
    parser.add_argument("--variant", choices=VARIANTS, default=VARIANTS[0])
    parser.add_argument("--case", type=Path, help="also write a golden case here (for the tiny variant)")
    args = parser.parse_args(argv)
    import diffusers  # noqa: F401  (before the stubs: it probes for torchvision itself)
    from seeded_weights import stub_training_imports

    stub_training_imports()
    from export.videocrafter1.presets import released_variants, tiny_turbo_variants
    from runtime.arrays import agreement, psnr

    config = {**released_variants(), **tiny_turbo_variants()}[args.variant]
    args.work.mkdir(parents=True, exist_ok=True)
    seconds = {}
    start = time.perf_counter()
    files = official_files(args.work, config, args.seed, args.up_std)
    gc.collect()
    seconds["official_files"] = time.perf_counter() - start
    bundle = export_bundle(args.work, args.variant, files)
    seconds["export"] = time.perf_counter() - start - sum(seconds.values())
    found = run_runtime(bundle, args.frames, args.seed)
    seconds["runtime"] = time.perf_counter() - start - sum(seconds.values())
    official = run_official(config, files, found, args.frames, args.seed)
    seconds["official"] = time.perf_counter() - start - sum(seconds.values())
    latent = agreement(official["latents"], found["latents"])
    video = official["video"]
    if args.case:
        write_case(args.case, args, files, found, official)
    print(json.dumps({
        "variant": args.variant, "frames": args.frames, "height": config.height, "width": config.width,
        "steps": config.inference["steps"], "seed": args.seed, "lora_up_std": args.up_std,
        "video_psnr_db": psnr(video, found["video"]),
        "video_max_abs": int(np.abs(video.astype(int) - found["video"]).max()),
        "clipped_share": float(np.mean((video == 0) | (video == 255))),
        "latent_snr_db": latent.snr_db, "latent_max_abs": latent.max_abs, "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
