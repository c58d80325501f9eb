"""``python -m export``: write bundles and verify modules against the official references.

  python -m export all [--out bundles] [--seed 0]
  python -m export videocrafter1 --variant t2v-512 --checkpoint model.ckpt [--config x.yaml] --out DIR
  python -m export videocrafter1 --variant t2v-512-v2 --checkpoint videocrafter2.ckpt --out DIR   (VideoCrafter2)
  python -m export imagebind --checkpoint imagebind_huge.pth [--modalities vision text ...] --out DIR
  python -m export ait --variant swinv2b_480reso_depthonly --checkpoint ait_depth.pth [--vqvae vqvae_depth.pt]
  python -m export ait --variant swinv2b_640reso_inssegonly --checkpoint ait_insseg.pth [--vqvae vqvae_insseg.pt]
  python -m export verify-reference CASE_DIR [CASE_DIR ...]

Each family's command and tiny bundles live in ``export/<family>/cli.py``; the
families come from ``runtime.families``. Exports run in bounded memory: checkpoints are
memory-mapped and become the weights of modules built without storage, one component at
a time, traced at a small shape (``export/phases.py`` logs each phase's time and peak RSS).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.checkpoint import CheckpointError
from runtime.bundle import BundleError
from runtime.families import family_modules


def tiny_bundles() -> dict:
    """``{bundle folder: export(out, seed=, log=)}`` for the tiny preset of every family."""
    return {folder: export for cli in family_modules("export", "cli").values()
            for folder, export in cli.tiny_bundles().items()}


def cmd_all(args: argparse.Namespace) -> int:
    exports = tiny_bundles()
    print(f"No checkpoint given: exporting the tiny preset of every family with seeded random weights "
          f"(seed {args.seed}) to {args.out}/ ({len(exports)} bundles).")
    for folder, export in exports.items():
        export(Path(args.out) / folder, seed=args.seed)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from export.verify import main

    return main(args.cases)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m export", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("all", help="export the tiny preset of every family (seeded random weights)")
    p.add_argument("--out", default="bundles", help="parent folder of the bundles (default: bundles)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_all)

    for cli in family_modules("export", "cli").values():
        cli.add_command(sub)

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
