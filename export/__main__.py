"""``python -m export``: write bundles and verify modules against the official references.

  python -m export all [--out bundles] [--seed 0]
  python -m export videocrafter1 --variant t2v-512 --checkpoint model.ckpt [--config x.yaml] --out DIR
  python -m export imagebind --checkpoint imagebind_huge.pth [--modalities vision text ...] --out DIR
  python -m export ait --variant swinv2b_480reso_depthonly --checkpoint ait_depth.pth [--vqvae vqvae_depth.pt]
  python -m export ait --variant swinv2b_640reso_inssegonly --checkpoint ait_insseg.pth [--vqvae vqvae_insseg.pt]
  python -m export verify-reference CASE_DIR [CASE_DIR ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.checkpoint import CheckpointError
from runtime.bundle import BundleError


def _tiny_exports():
    """(bundle folder name, export function) for the tiny preset of every family."""
    from export.videocrafter1.bundle import export_bundle as export_videocrafter1
    from export.videocrafter1.presets import tiny_variants

    for name, config in tiny_variants().items():
        yield f"videocrafter1-{name}", lambda out, seed, c=config: export_videocrafter1(c, out, seed=seed)
    from export.imagebind.bundle import export_bundle as export_imagebind
    from export.imagebind.presets import tiny as imagebind_tiny

    yield "imagebind-tiny", lambda out, seed: export_imagebind(imagebind_tiny(), out, seed=seed)
    from export.ait.bundle import export_bundle as export_ait
    from export.ait.presets import tiny_variants as ait_tiny

    for name, config in ait_tiny().items():
        yield f"ait-{name}", lambda out, seed, c=config: export_ait(c, out, seed=seed)


def cmd_all(args: argparse.Namespace) -> int:
    exports = list(_tiny_exports())
    print(f"No checkpoint given: exporting the tiny preset of every family with seeded random weights "
          f"(seed {args.seed}) to {args.out}/ ({len(exports)} bundles).")
    for folder, run in exports:
        run(Path(args.out) / folder, args.seed)
    return 0


def cmd_videocrafter1(args: argparse.Namespace) -> int:
    from export.videocrafter1.bundle import export_bundle
    from export.videocrafter1.presets import from_yaml, released_variants, tiny_variants

    variants = {**released_variants(), **tiny_variants()}
    config = variants[args.variant]
    if args.config:
        config = from_yaml(args.config, config)
    if args.checkpoint is None:
        print(f"No --checkpoint: exporting {args.variant} with seeded random weights (seed {args.seed}).")
    out = Path(args.out or f"bundles/videocrafter1-{args.variant}")
    export_bundle(config, out, checkpoint=args.checkpoint, trust=args.trust_checkpoint, seed=args.seed)
    return 0


def cmd_imagebind(args: argparse.Namespace) -> int:
    from export.imagebind.bundle import export_bundle
    from export.imagebind.presets import presets

    if args.checkpoint is None:
        print(f"No --checkpoint: exporting {args.preset} with seeded random weights (seed {args.seed}).")
    out = Path(args.out or f"bundles/imagebind-{args.preset}")
    export_bundle(presets()[args.preset], out, checkpoint=args.checkpoint, modalities=args.modalities, seed=args.seed)
    return 0


def cmd_ait(args: argparse.Namespace) -> int:
    from export.ait.bundle import export_bundle
    from export.ait.presets import variant

    if args.checkpoint is None and args.vqvae is None:
        print(f"No --checkpoint: exporting {args.variant} with seeded random weights (seed {args.seed}).")
    out = Path(args.out or f"bundles/ait-{args.variant}")
    export_bundle(variant(args.variant), out, checkpoint=args.checkpoint, vqvae_checkpoint=args.vqvae,
                  trust=args.trust_checkpoint, seed=args.seed)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from export.verify import main

    return main(args.cases)


def parser() -> argparse.ArgumentParser:
    from export.videocrafter1.presets import released_variants, tiny_variants

    top = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("all", help="export the tiny preset of every family (seeded random weights)")
    p.add_argument("--out", default="bundles", help="parent folder of the bundles (default: bundles)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_all)

    p = sub.add_parser("videocrafter1", help="export a VideoCrafter1 variant")
    p.add_argument("--variant", required=True, choices=sorted({**released_variants(), **tiny_variants()}))
    p.add_argument("--checkpoint", type=Path, help="released model.ckpt or .safetensors (omit for random weights)")
    p.add_argument("--config", type=Path, help="official inference yaml overriding the variant's model configs")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full pickle loading (runs code from the file; only for checkpoints you trust)")
    p.add_argument("--out", help="bundle folder (default: bundles/videocrafter1-VARIANT)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_videocrafter1)

    p = sub.add_parser("imagebind", help="export ImageBind encoders (one graph per modality)")
    p.add_argument("--checkpoint", type=Path, help="released imagebind_huge.pth (plain state_dict, read with "
                   "weights_only=True; omit for random weights)")
    p.add_argument("--preset", default="imagebind_huge", choices=["imagebind_huge", "tiny"])
    p.add_argument("--modalities", nargs="+", choices=["vision", "text", "audio", "depth", "thermal", "imu"],
                   help="encoders to export (default: all six)")
    p.add_argument("--out", help="bundle folder (default: bundles/imagebind-PRESET)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_imagebind)

    p = sub.add_parser("ait", help="export an AiT task solver (Swin V2 + AR transformer + depth or instance-mask VQVAE)")
    p.add_argument("--variant", default="swinv2b_480reso_depthonly",
                   choices=["swinv2b_480reso_depthonly", "swinv2b_640reso_inssegonly", "tiny-depth", "tiny-insseg"])
    p.add_argument("--checkpoint", type=Path, help="released AiT checkpoint (keys backbone., transformer., "
                   "depth_head.vqvae. or insseg_head.vqvae.; omit for random weights)")
    p.add_argument("--vqvae", type=Path,
                   help="standalone vqvae_depth.pt / vqvae_insseg.pt (its 'weights' entry) for the VQVAE")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full pickle loading (runs code from the file; only for checkpoints you trust)")
    p.add_argument("--out", help="bundle folder (default: bundles/ait-VARIANT)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_ait)

    p = sub.add_parser("verify-reference", help="check modules against golden cases (torch and ONNX)")
    p.add_argument("cases", nargs="+", help="golden case folders (or folders of them)")
    p.set_defaults(run=cmd_verify)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (CheckpointError, BundleError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
