"""Make the ``lora.merge`` golden case (and the tiny v2 UNet key manifest) with the OFFICIAL t2v-turbo code.

Run by hand, never by the tests, from a folder holding the official repository's ``lvdm/`` and ``utils/``
(``git archive HEAD lvdm utils`` of Ji4chenLi/t2v-turbo, none of it kept here) with einops importable::

    PYTHONPATH=/tmp/t2vt:/tmp/t2vt/_deps .venv/bin/python tests/videocrafter1/golden/make_lora_case.py OUT \
        [--seed S] [--batch B] [--frames F] [--size S]

torchvision is stubbed (``utils/utils.py`` imports it for ``make_grid`` only; ``seeded_weights.stub_training_imports``). ``merged.safetensors`` (the official
merged state) is written for a one-off comparison and is not kept in the project.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from seeded_weights import randomize, randomize_lora, stub_training_imports  # (beside this script)

stub_training_imports()
from lvdm.modules.networks.openaimodel3d import UNetModel  # noqa: E402
from utils.lora import collapse_lora, inject_trainable_lora_extended, monkeypatch_remove_lora, save_lora_weight  # noqa: E402
from utils.lora_handler import LoraHandler  # noqa: E402

# tiny-t2v-turbo's UNet with attention at the first level only and a 16-d context (a small case file)
TINY_TURBO = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "attention_resolutions": [1],
              "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 16, "transformer_depth": 1,
              "context_dim": 16, "use_linear": True, "use_checkpoint": False, "temporal_attention": True,
              "temporal_selfatt_only": True, "use_causal_attention": False, "temporal_length": 8,
              "addition_attention": True, "temporal_conv": True, "use_relative_position": False,
              "fps_cond": True, "time_cond_proj_dim": 256}


def make_lora_file(config, base, path, generator, up_std):
    """The official training path: inject rank-64 LoRA into every Linear/Conv2d/Conv3d of the UNet, give the
    (zero-initialised) ups random values, save with the official save_lora_weight (list of up, down)."""
    unet = UNetModel(**config)
    unet.load_state_dict(base)
    inject_trainable_lora_extended(unet, {"UNetModel"}, r=64)
    randomize_lora(unet, generator, up_std)
    save_lora_weight(unet, str(path), ["UNetModel"])


def merge_like_the_app(config, base, lora_path):
    """app.py's v1 path: base weights, LoraHandler(cloneofsimo).add_lora_to_model(r=64), collapse, remove."""
    unet = UNetModel(**config)
    unet.load_state_dict(base)
    handler = LoraHandler(version="cloneofsimo", use_unet_lora=True, save_for_webui=True,
                          unet_replace_modules=["UNetModel"])
    handler.add_lora_to_model(True, unet, handler.unet_replace_modules, lora_path=str(lora_path), dropout=0.1, r=64)
    collapse_lora(unet, handler.unet_replace_modules)
    monkeypatch_remove_lora(unet)
    return unet.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--up-std", type=float, default=0.5)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    config = dict(TINY_TURBO, temporal_length=args.frames)
    case = args.out / "lora_merge_t2v_turbo"
    case.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    official = UNetModel(**config)
    randomize(official, generator)
    base = {k: v.clone() for k, v in official.state_dict().items()}
    save_file(base, case / "weights.safetensors")
    make_lora_file(config, base, case / "unet_lora.pt", generator, args.up_std)

    unet = merge_like_the_app(config, base, case / "unet_lora.pt")
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, case / "merged.safetensors")
    b, c = args.batch, config["context_dim"]
    inputs = {
        "x": torch.randn(b, 4, args.frames, args.size, args.size, generator=generator),
        "timesteps": torch.tensor([999, 259, 500, 20][:b], dtype=torch.int64),
        "context": torch.randn(b, 77, c, generator=generator),
        "fps": torch.tensor([16, 8, 24, 12][:b], dtype=torch.int64),
        "timestep_cond": torch.randn(b, 256, generator=generator),
    }
    with torch.no_grad():
        eps = unet(inputs["x"], inputs["timesteps"], context=inputs["context"], fps=inputs["fps"],
                   timestep_cond=inputs["timestep_cond"])
    np.savez(case / "io.npz", **{k: v.numpy() for k, v in inputs.items()}, eps=eps.numpy())
    lora = torch.load(case / "unet_lora.pt")
    (case / "case.json").write_text(json.dumps({
        "component": "lora.merge",
        "official_class": "utils.lora.inject_trainable_lora_extended + collapse_lora (LoraHandler cloneofsimo, "
                          "r=64, as app.py loads unet_lora.pt) on lvdm.modules.networks.openaimodel3d.UNetModel",
        "config": {"unet": config, "lora_file": "unet_lora.pt", "lora_rank": 64},
        "checkpoint_prefix": "model.diffusion_model.",
        "inputs": list(inputs), "outputs": ["eps"],
        "atol": 1e-4, "rtol": 1e-4, "seed": args.seed,
        "notes": (f"weights.safetensors: base UNet (official keys, seeded random; time_cond_proj.weight is the "
                  f"official default nn.Linear init after torch.manual_seed({args.seed})). unet_lora.pt: official "
                  f"save_lora_weight list, {len(lora)} tensors (up, down per Linear/Conv2d/Conv3d in "
                  f"named_modules order), ups N(0, {args.up_std}^2), downs N(0, 1/r^2). merged.safetensors: the "
                  f"UNet state after the app's inject + collapse_lora + monkeypatch_remove_lora. eps: that "
                  f"UNet's output (fp32, CPU, torch {torch.__version__})."),
    }, indent=1))

    v2 = UNetModel(**dict(config, motion_cond_proj_dim=256))
    keys = {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in v2.state_dict().items()}
    (args.out / "t2v_turbo_v2_tiny.unet.json").write_text(json.dumps({
        "component": "unet3d", "official_class": "lvdm.modules.networks.openaimodel3d.UNetModel",
        "config": dict(config, motion_cond_proj_dim=256), "checkpoint_prefix": "",
        "params": sum(v.numel() for v in v2.state_dict().values()), "keys": keys}, indent=1))
    print(f"wrote {case} ({len(lora)} LoRA tensors) and the v2 key manifest")


if __name__ == "__main__":
    main()
