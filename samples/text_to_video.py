"""Text to video with an exported VideoCrafter1 bundle: writes outputs/text_to_video.mp4.

    python samples/text_to_video.py [--bundle bundles/videocrafter1-tiny-t2v] [--prompt "..."]
"""
import argparse

import runtime

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--bundle", default="bundles/videocrafter1-tiny-t2v")
parser.add_argument("--prompt", default="a corgi running on the beach, golden hour")
parser.add_argument("--steps", type=int, help="DDIM steps (default: the bundle's)")
parser.add_argument("--seed", type=int, default=123)
parser.add_argument("--output", default="outputs/text_to_video.mp4")
args = parser.parse_args()

video = runtime.generate_video(args.prompt, bundle=args.bundle, steps=args.steps, seed=args.seed, output=args.output)
print(f"wrote {args.output}: {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}")
