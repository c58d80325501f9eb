"""``python -m export ait`` and AiT's tiny bundles for ``python -m export all``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

FAMILY = "ait"
VARIANTS = ("swinv2b_480reso_depthonly", "swinv2b_640reso_inssegonly", "tiny-depth", "tiny-insseg")


def tiny_bundles() -> dict[str, Callable[..., Path]]:
    """``{bundle folder: export(out, seed=, log=)}`` for the tiny presets (seeded random weights)."""
    from export.ait.bundle import export_bundle
    from export.ait.presets import tiny_variants

    return {f"{FAMILY}-{name}": (lambda out, c=config, **kw: export_bundle(c, out, **kw))
            for name, config in tiny_variants().items()}


def run(args: argparse.Namespace) -> int:
    from export.ait.bundle import export_bundle
    from export.ait.presets import variant

    if args.checkpoint is None and args.vqvae is None:
        print(f"No --checkpoint: exporting {args.variant} with seeded random weights (seed {args.seed}).")
    out = Path(args.out or f"bundles/{FAMILY}-{args.variant}")
    export_bundle(variant(args.variant), out, checkpoint=args.checkpoint, vqvae_checkpoint=args.vqvae,
                  trust=args.trust_checkpoint, seed=args.seed)
    return 0


def add_command(sub) -> None:
    p = sub.add_parser(FAMILY, help="export an AiT task solver (Swin V2 + AR transformer + depth or instance-mask VQVAE)")
    p.add_argument("--variant", default=VARIANTS[0], choices=VARIANTS)
    p.add_argument("--checkpoint", type=Path, help="released AiT checkpoint (keys backbone., transformer., "
                   "depth_head.vqvae. or insseg_head.vqvae.; omit for random weights)")
    p.add_argument("--vqvae", type=Path,
                   help="standalone vqvae_depth.pt / vqvae_insseg.pt (its 'weights' entry) for the VQVAE")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full pickle loading (runs code from the file; only for checkpoints you trust)")
    p.add_argument("--out", help=f"bundle folder (default: bundles/{FAMILY}-VARIANT)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
