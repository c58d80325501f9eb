"""What the golden-case generators (and ``benchmarks.probes.turbo_official``) share: the stubs the official modules
need to import, seeded non-zero weights for an official UNet, random values for its injected LoRA (torch only)."""
import math
import sys
import types

import torch


def stub_training_imports():
    """torchvision and pytorch_lightning: imported by the official modules for things never used here. Call it
    before importing them (and after diffusers, which probes for torchvision itself)."""
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    utils = types.ModuleType("torchvision.utils")
    utils.make_grid = None
    sys.modules.setdefault("torchvision.utils", utils)
    lightning = types.ModuleType("pytorch_lightning")
    lightning.LightningModule = torch.nn.Module
    sys.modules.setdefault("pytorch_lightning", lightning)


def randomize_lora(unet, generator, up_std):
    """Values for the (zero-initialised) LoRA of an official UNet after ``inject_trainable_lora_extended``: ups
    N(0, up_std²), downs N(0, 1/rank²)."""
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("lora_up.weight"):
                p.copy_(up_std * torch.randn(p.shape, generator=generator))
            elif name.endswith("lora_down.weight"):
                p.copy_(torch.randn(p.shape, generator=generator) / p.shape[0])


def randomize(unet, generator):
    """Non-zero weights (the official init zeroes out/proj_out); time_cond_proj keeps its default init."""
    with torch.no_grad():
        for name, p in sorted(unet.named_parameters()):
            if name == "time_cond_proj.weight":
                continue
            noise = torch.randn(p.shape, generator=generator)
            if p.dim() == 1:
                p.copy_(1.0 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.02 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
