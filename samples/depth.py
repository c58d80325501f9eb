"""Monocular depth with an exported AiT bundle: writes outputs/depth.png (coloured, near = warm).

    python samples/depth.py [--bundle bundles/ait-tiny-depth] [--image samples/assets/beach.png] [--hard] [--no-tta]
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

import runtime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="bundles/ait-tiny-depth")
    parser.add_argument("--image", default="samples/assets/beach.png", help="a png/jpg path (any size)")
    parser.add_argument("--hard", action="store_true", help="hard (argmax) tokens instead of the released soft tokens")
    parser.add_argument("--no-tta", action="store_true", help="one pass instead of sliding windows + flips")
    parser.add_argument("--output", default="outputs/depth.png")
    args = parser.parse_args(argv)

    depth = runtime.estimate_depth(args.image, bundle=args.bundle, soft=not args.hard, tta=not args.no_tta)
    near, far = float(depth.min()), float(depth.max())
    scaled = np.uint8(255 * (far - depth) / max(far - near, 1e-6))  # near = 255
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.output, cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO))
    print(f"wrote {args.output}: {depth.shape[1]}x{depth.shape[0]}, depth {near:.3f} .. {far:.3f} m")


if __name__ == "__main__":
    main()
