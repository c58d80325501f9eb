"""Make the T2V-Turbo UNet and LCM golden cases with the OFFICIAL t2v-turbo code.

Run by hand, never by the tests, from a folder holding the official repository's ``lvdm/``, ``utils/``,
``scheduler/`` and ``pipeline/`` (``git archive HEAD lvdm utils scheduler pipeline`` of Ji4chenLi/t2v-turbo,
none of it kept here) with einops importable::

    PYTHONPATH=/tmp/t2v-turbo .venv/bin/python tests/videocrafter1/golden/make_lcm_cases.py OUT \
        [--seed S] [--batch B] [--frames F] [--size S]

Cases written (the folder names below OUT):

- ``unet3d_t2v_turbo``, ``unet3d_t2v_turbo_v2``: the UNet with ``timestep_cond`` (and ``motion_cond``);
- ``lcm_schedule``: ``T2VTurboScheduler``'s ᾱ, timesteps of several (steps, lcm_origin_steps), its boundary
  scalings and its ``step`` on given samples, ε and the noise its generator drew;
- ``lcm_guidance_embedding``: ``T2VTurboVC2Pipeline.get_w_embedding`` (256-d) of several scales;
- ``lcm_sample_t2v_turbo``, ``lcm_sample_t2v_turbo_v2``: a whole ``T2VTurboVC2Pipeline`` call
  (``prompt_embeds=``, ``latents=``, ``output_type="latent"``) with the v1 and v2 settings; the per-step noise
  is the pipeline generator's draws, replayed from the same seed.

torchvision and pytorch_lightning are stubbed (imported by ``utils/utils.py`` and ``lvdm/models/ddpm3d.py``
for things these cases never use).
"""
import argparse
import json
from pathlib import Path

import diffusers  # noqa: F401  (before the stubs: it probes for torchvision itself)
import numpy as np
import torch
from safetensors.torch import save_file

from seeded_weights import randomize, stub_training_imports  # (beside this script)

stub_training_imports()
from lvdm.modules.networks.openaimodel3d import UNetModel  # noqa: E402
from pipeline.t2v_turbo_vc2_pipeline import T2VTurboVC2Pipeline  # noqa: E402
from scheduler.t2v_turbo_scheduler import T2VTurboScheduler  # noqa: E402

TINY_TURBO = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [1],
              "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 16, "transformer_depth": 1,
              "context_dim": 16, "use_linear": True, "use_checkpoint": False, "temporal_attention": True,
              "temporal_selfatt_only": True, "use_causal_attention": False, "temporal_length": 8,
              "addition_attention": True, "temporal_conv": True, "use_relative_position": False,
              "fps_cond": True, "time_cond_proj_dim": 256}
SCHEDULE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}
# the released variants' LCM settings (export/videocrafter1/presets.py), at tiny size
V1 = {"steps": 4, "lcm_origin_steps": 50, "guidance_scale": 7.5, "fps": 16, "use_motion_cond": False}
V2 = {"steps": 8, "lcm_origin_steps": 200, "guidance_scale": 7.5, "fps": 8, "use_motion_cond": True,
      "motion_gs": 0.05, "motion_percentage": 0.5}
GRIDS = [(4, 50), (8, 200), (16, 200), (1, 50), (3, 50), (2, 1000), (6, 100)]
STEPPED = [(4, 50), (8, 200), (1, 50)]
CONTEXT_TOKENS = 12


def official_unet(config, seed):
    torch.manual_seed(seed)
    unet = UNetModel(**config)
    randomize(unet, torch.Generator().manual_seed(seed))
    return unet.eval()


def write_case(root, name, meta, arrays, weights=None):
    case = root / name
    case.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        save_file({k: v.contiguous() for k, v in weights.items()}, case / "weights.safetensors")
    np.savez(case / "io.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    meta = dict(meta, notes=meta["notes"] + f" fp32, CPU, torch {torch.__version__}. Made by "
                                             "tests/videocrafter1/golden/make_lcm_cases.py.")
    (case / "case.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {case}")


def w_embedding(w):
    return T2VTurboVC2Pipeline.get_w_embedding(None, torch.tensor(w, dtype=torch.float32), embedding_dim=256)


def unet_case(root, name, config, args):
    unet = official_unet(config, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    b = args.batch
    inputs = {
        "x": torch.randn(b, 4, args.frames, args.size, args.size, generator=g),
        "timesteps": torch.tensor([999, 259, 500, 20][:b], dtype=torch.int64),
        "context": torch.randn(b, CONTEXT_TOKENS, config["context_dim"], generator=g),
        "fps": torch.tensor([16, 8, 24, 12][:b], dtype=torch.int64),
        "timestep_cond": w_embedding([7.5, 3.0, 12.0, 1.0][:b]),
    }
    if config.get("motion_cond_proj_dim"):
        inputs["motion_cond"] = w_embedding([0.05, 0.0, 0.1, 0.0][:b])
    with torch.no_grad():
        eps = unet(inputs["x"], inputs["timesteps"], context=inputs["context"], fps=inputs["fps"],
                   timestep_cond=inputs["timestep_cond"], motion_cond=inputs.get("motion_cond"))
    write_case(root, name, {
        "component": "unet3d", "official_class": "lvdm.modules.networks.openaimodel3d.UNetModel",
        "config": config, "checkpoint_prefix": "model.diffusion_model.", "inputs": list(inputs),
        "outputs": ["eps"], "atol": 1e-4, "rtol": 1e-4, "seed": args.seed,
        "notes": (f"T2V-Turbo UNet, seeded random weights in official keys (time_cond_proj.weight: the default "
                  f"nn.Linear init after torch.manual_seed({args.seed})); timestep_cond / motion_cond are the "
                  "pipeline's get_w_embedding of guidance / motion scales."),
    }, {k: v.numpy() for k, v in inputs.items()} | {"eps": eps.numpy()}, unet.state_dict())


def schedule_case(root, args):
    scheduler = T2VTurboScheduler(num_train_timesteps=SCHEDULE["timesteps"], linear_start=SCHEDULE["linear_start"],
                                  linear_end=SCHEDULE["linear_end"])
    arrays = {"alphas_cumprod": scheduler.alphas_cumprod.numpy()}
    t = torch.arange(SCHEDULE["timesteps"], dtype=torch.int64)
    c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(t)
    arrays.update(c_skip=c_skip.numpy(), c_out=c_out.numpy())
    for steps, origin in GRIDS:
        scheduler.set_timesteps(steps, origin)
        arrays[f"timesteps_S{steps}_O{origin}"] = scheduler.timesteps.numpy()
    inputs = []
    for steps, origin in STEPPED:
        scheduler.set_timesteps(steps, origin)
        g = torch.Generator().manual_seed(args.seed + steps)
        shape = (args.batch, 4, args.frames, args.size, args.size)
        xs, eps = torch.randn(steps, *shape, generator=g), torch.randn(steps, *shape, generator=g)
        step_generator = torch.Generator().manual_seed(args.seed + 100 + steps)
        prev, denoised = [], []
        for i, timestep in enumerate(scheduler.timesteps):
            p, d = scheduler.step(eps[i], i, timestep, xs[i], generator=step_generator, return_dict=False)
            prev.append(p)
            denoised.append(d)
        replay = torch.Generator().manual_seed(args.seed + 100 + steps)
        draws = steps if steps > 1 else 0
        noise = torch.stack([torch.randn(shape, generator=replay) for _ in range(draws)]) if draws \
            else torch.zeros(0, *shape)
        key = f"S{steps}_O{origin}"
        arrays.update({f"x_{key}": xs.numpy(), f"eps_{key}": eps.numpy(), f"noise_{key}": noise.numpy(),
                       f"denoised_{key}": torch.stack(denoised).numpy(),
                       f"prev_{key}": torch.stack(prev[:-1]).numpy() if steps > 1 else torch.zeros(0, *shape).numpy()})
        inputs += [f"x_{key}", f"eps_{key}", f"noise_{key}"]
    outputs = [k for k in arrays if k not in inputs]
    write_case(root, "lcm_schedule", {
        "component": "lcm.schedule", "official_class": "scheduler.t2v_turbo_scheduler.T2VTurboScheduler",
        "config": dict(SCHEDULE, grids=GRIDS, stepped=STEPPED), "checkpoint_prefix": "", "inputs": inputs,
        "outputs": outputs, "atol": 1e-6, "rtol": 1e-5, "seed": args.seed,
        "notes": ("alphas_cumprod: the scheduler's float32 table; timesteps_S{n}_O{origin}: set_timesteps(n, origin); "
                  "c_skip/c_out at t = 0..999; step i of S{n}_O{origin} on x_*[i], eps_*[i] (its generator's draws "
                  "replayed in noise_*: one per step, the last one unused by the result) gives denoised_*[i] and, "
                  "before the last step, prev_*[i]."),
    }, arrays)


def embedding_case(root, args):
    scales = [0.0, 0.05, 0.1, 1.0, 2.5, 7.5, 12.0, 15.0]
    write_case(root, "lcm_guidance_embedding", {
        "component": "lcm.guidance_embedding",
        "official_class": "pipeline.t2v_turbo_vc2_pipeline.T2VTurboVC2Pipeline.get_w_embedding",
        "config": {"embedding_dim": 256}, "checkpoint_prefix": "", "inputs": ["w"], "outputs": ["embedding"],
        "atol": 2e-3, "rtol": 0.0, "seed": args.seed,
        "notes": ("embedding_dim 256, as the pipeline calls it. The float32 angles reach 15000 rad: one ulp of "
                  "torch's float32 exp moves them by up to 1e-3, hence atol 2e-3."),
    }, {"w": np.asarray(scales, dtype=np.float32), "embedding": w_embedding(scales).numpy()})


class _Model(torch.nn.Module):
    """What the pipeline reads of a LatentDiffusion: model.diffusion_model (no VAE or text encoder needed)."""

    def __init__(self, unet):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.diffusion_model = unet
        self.first_stage_model = None
        self.cond_stage_model = None


class _CPUPipeline(T2VTurboVC2Pipeline):
    """The official pipeline on the CPU in float32 (diffusers 0.42 no longer derives these for it)."""

    _execution_device = torch.device("cpu")
    dtype = torch.float32


def sample_case(root, name, config, settings, args):
    unet = official_unet(config, args.seed)
    pipe = _CPUPipeline(_Model(unet), T2VTurboScheduler(
        num_train_timesteps=SCHEDULE["timesteps"], linear_start=SCHEDULE["linear_start"],
        linear_end=SCHEDULE["linear_end"]), {"params": {"unet_config": {"params": {"in_channels": 4}}}})
    g = torch.Generator().manual_seed(args.seed + 2)
    b, size = args.batch, args.size
    context = torch.randn(b, CONTEXT_TOKENS, config["context_dim"], generator=g)
    x_T = torch.randn(b, 4, args.frames, size, size, generator=g)
    noise_seed = args.seed + 3
    motion = {"motion_gs": settings["motion_gs"], "percentage": settings["motion_percentage"]} \
        if settings["use_motion_cond"] else {}
    with torch.no_grad():
        latent = pipe(prompt_embeds=context, height=size * 8, width=size * 8, frames=args.frames,
                      fps=settings["fps"], guidance_scale=settings["guidance_scale"],
                      use_motion_cond=settings["use_motion_cond"],
                      **motion,
                      generator=torch.Generator().manual_seed(noise_seed), latents=x_T.clone(),
                      num_inference_steps=settings["steps"], lcm_origin_steps=settings["lcm_origin_steps"],
                      output_type="latent")
    replay = torch.Generator().manual_seed(noise_seed)
    noise = torch.stack([torch.randn(x_T.shape, generator=replay) for _ in range(settings["steps"])])
    write_case(root, name, {
        "component": "lcm.sample", "official_class": "pipeline.t2v_turbo_vc2_pipeline.T2VTurboVC2Pipeline.__call__",
        "config": dict(SCHEDULE, unet=config, **settings), "checkpoint_prefix": "model.diffusion_model.",
        "inputs": ["x_T", "context", "fps", "noise"], "outputs": ["latent"], "atol": 1e-4, "rtol": 1e-4,
        "seed": args.seed,
        "notes": ("T2VTurboVC2Pipeline(prompt_embeds=context, latents=x_T, output_type='latent', the config's "
                  "steps, lcm_origin_steps, guidance_scale, fps and motion settings); latent: the last step's "
                  "denoised. noise[i]: the noise the scheduler drew after step i (its generator replayed; the last "
                  "one is drawn but unused). weights: the UNet (config.unet), as in the unet3d cases."),
    }, {"x_T": x_T.numpy(), "context": context.numpy(), "fps": np.full((b,), settings["fps"], dtype=np.int64),
        "noise": noise.numpy(), "latent": latent.numpy()}, unet.state_dict())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=8)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    v1 = dict(TINY_TURBO, temporal_length=args.frames)
    v2 = dict(v1, motion_cond_proj_dim=256)
    unet_case(args.out, "unet3d_t2v_turbo", v1, args)
    unet_case(args.out, "unet3d_t2v_turbo_v2", v2, args)
    schedule_case(args.out, args)
    embedding_case(args.out, args)
    sample_case(args.out, "lcm_sample_t2v_turbo", v1, V1, args)
    sample_case(args.out, "lcm_sample_t2v_turbo_v2", v2, V2, args)


if __name__ == "__main__":
    main()
