"""What the golden-case generators share: seeded, non-zero weights for an official UNet (torch only)."""
import math

import torch


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
