"""``python -m export imagebind`` and ImageBind's tiny bundle for ``python -m export all``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

FAMILY = "imagebind"
MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")


def tiny_bundles() -> dict[str, Callable[..., Path]]:
    """``{bundle folder: export(out, seed=, log=)}`` for the tiny preset (seeded random weights)."""
    from export.imagebind.bundle import export_bundle
    from export.imagebind.presets import tiny

    return {f"{FAMILY}-tiny": lambda out, **kw: export_bundle(tiny(), out, **kw)}


def run(args: argparse.Namespace) -> int:
    from export.imagebind.bundle import export_bundle
    from export.imagebind.presets import presets

    if args.checkpoint is None:
        print(f"No --checkpoint: exporting {args.preset} with seeded random weights (seed {args.seed}).")
    out = Path(args.out or f"bundles/{FAMILY}-{args.preset}")
    export_bundle(presets()[args.preset], out, checkpoint=args.checkpoint, modalities=args.modalities, seed=args.seed)
    return 0


def add_command(sub) -> None:
    p = sub.add_parser(FAMILY, help="export ImageBind encoders (one graph per modality)")
    p.add_argument("--checkpoint", type=Path, help="released imagebind_huge.pth (plain state_dict, read with "
                   "weights_only=True; omit for random weights)")
    p.add_argument("--preset", default="imagebind_huge", choices=["imagebind_huge", "tiny"])
    p.add_argument("--modalities", nargs="+", choices=MODALITIES, help="encoders to export (default: all six)")
    p.add_argument("--out", help=f"bundle folder (default: bundles/{FAMILY}-PRESET)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)
