"""Instance segmentation with an exported AiT insseg bundle: writes outputs/instances.png (mask overlay + boxes).

    python samples/instances.py [--bundle bundles/ait-tiny-insseg] [--image samples/assets/beach.png] [--seed 0]
                                [--top-p 0]

The official inference keeps every one of its ``num_query`` objects; like mmdet's ``show_result``,
the overlay draws only those scoring at least ``--score-thr``.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

import runtime
from runtime.images import load_rgb


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="bundles/ait-tiny-insseg")
    parser.add_argument("--image", default="samples/assets/beach.png", help="a png/jpg path (any size)")
    parser.add_argument("--seed", type=int, default=0, help="top-p sampling seed")
    parser.add_argument("--top-p", type=float, default=None,
                        help="nucleus mass in [0, 1] (default: the bundle's, released 0.3; 0: deterministic)")
    parser.add_argument("--score-thr", type=float, default=0.3)
    parser.add_argument("--output", default="outputs/instances.png")
    args = parser.parse_args(argv)

    rgb = load_rgb(args.image)
    result = runtime.segment_instances(rgb, bundle=args.bundle, seed=args.seed, top_p=args.top_p)
    keep = np.nonzero(result.scores >= args.score_thr)[0]
    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    colours = np.random.default_rng(0).integers(64, 256, (len(keep), 3))
    for i, colour in zip(keep, colours):
        canvas[result.masks[i]] = 0.5 * canvas[result.masks[i]] + 0.5 * colour
    canvas = np.uint8(np.clip(canvas, 0, 255))
    for i, colour in zip(keep, colours):
        x1, y1, x2, y2 = (int(round(v)) for v in result.boxes[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour.tolist(), 1)
        cv2.putText(canvas, f"{result.classes[i]}: {result.scores[i]:.2f}", (x1, max(y1 - 2, 8)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour.tolist(), 1)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.output, canvas)
    print(f"wrote {args.output}: {len(keep)} of {len(result.scores)} objects scoring >= {args.score_thr}, "
          f"{int(result.masks[keep].any(0).sum())} mask pixels")


if __name__ == "__main__":
    main()
