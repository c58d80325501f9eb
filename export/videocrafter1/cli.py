"""``python -m export videocrafter1`` and VideoCrafter1's tiny bundles for ``python -m export all``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

FAMILY = "videocrafter1"


def tiny_bundles() -> dict[str, Callable[..., Path]]:
    """``{bundle folder: export(out, seed=, log=)}`` for the tiny presets (seeded random weights). The tiny
    T2V-Turbo presets are left out (about 20 s each on 2 cores, for every test session): export them by name."""
    from export.videocrafter1.bundle import export_bundle
    from export.videocrafter1.presets import tiny_turbo_variants, tiny_variants

    return {f"{FAMILY}-{name}": (lambda out, c=config, **kw: export_bundle(c, out, **kw))
            for name, config in tiny_variants().items() if name not in tiny_turbo_variants()}


def run(args: argparse.Namespace) -> int:
    from export.videocrafter1.bundle import export_bundle
    from export.videocrafter1.presets import from_yaml, released_variants, tiny_variants
    from export.videocrafter1.turbo_weights import TurboWeights

    config = {**released_variants(), **tiny_variants()}[args.variant]
    if args.config:
        config = from_yaml(args.config, config)
    if args.checkpoint is None:
        print(f"No --checkpoint: exporting {args.variant} with seeded random weights (seed {args.seed}).")
    out = Path(args.out or f"bundles/{FAMILY}-{args.variant}")
    turbo = TurboWeights(lora=args.lora, unet=args.unet, time_cond_proj=args.time_cond_proj)
    export_bundle(config, out, checkpoint=args.checkpoint, trust=args.trust_checkpoint, seed=args.seed, turbo=turbo)
    return 0


def add_command(sub) -> None:
    from export.videocrafter1.presets import released_variants, tiny_variants

    p = sub.add_parser(FAMILY, help="export a VideoCrafter1 variant")
    p.add_argument("--variant", required=True, choices=sorted({**released_variants(), **tiny_variants()}))
    p.add_argument("--checkpoint", type=Path, help="released model.ckpt or .safetensors (omit for random weights)")
    p.add_argument("--config", type=Path, help="official inference yaml overriding the variant's model configs")
    p.add_argument("--lora", type=Path,
                   help="t2v-turbo-vc2: T2V-Turbo v1's unet_lora.pt, merged into --checkpoint's UNet at export")
    p.add_argument("--time-cond-proj", type=Path,
                   help="t2v-turbo-vc2: a saved time_cond_proj base weight (default: nn.Linear's init drawn "
                        "under a fixed seed; the official app draws it unseeded)")
    p.add_argument("--unet", type=Path,
                   help="t2v-turbo-v2: T2V-Turbo v2's unet_mg.pt or unet_no_mg.pt, replacing --checkpoint's UNet")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full pickle loading of every file given (runs code from it; only for files you trust)")
    p.add_argument("--out", help=f"bundle folder (default: bundles/{FAMILY}-VARIANT)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
