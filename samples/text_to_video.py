"""Text to video with an exported VideoCrafter1 bundle: writes outputs/text_to_video.mp4.

    python samples/text_to_video.py [--bundle bundles/videocrafter1-tiny-t2v] [--prompt "..."]
        [--sampler dpmpp-2m --steps 20]
"""
import argparse

import runtime
from runtime.videocrafter1.sampling import SAMPLERS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="bundles/videocrafter1-tiny-t2v")
    parser.add_argument("--prompt", default="a corgi running on the beach, golden hour")
    parser.add_argument("--sampler", choices=list(SAMPLERS),
                        help="default: the bundle's (ddim, official); or an ODE solver that needs fewer steps")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the bundle's, 50 for the released variants)")
    parser.add_argument("--negative-prompt", help="the unconditional prompt of guidance (default: the official one)")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--output", default="outputs/text_to_video.mp4")
    args = parser.parse_args(argv)

    video = runtime.generate_video(args.prompt, bundle=args.bundle, sampler=args.sampler, steps=args.steps,
                                   negative_prompt=args.negative_prompt, seed=args.seed, output=args.output)
    print(f"wrote {args.output}: {video.shape[0]} frames of {video.shape[2]}x{video.shape[1]}")


if __name__ == "__main__":
    main()
