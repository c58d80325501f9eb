"""``python -m calibration collect|quantize|report``: INT8 calibration of a bundle."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calibration.cache import DEFAULT_TRT_VERSION
from calibration.collect import DEFAULT_IMAGES, DEFAULT_PROMPTS, collect
from calibration.quantize import METHODS, quantize
from calibration.report import format_table, report, write_json
from calibration.store import CalibrationDataError
from runtime.bundle import BundleError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calibration", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    rec = commands.add_parser("collect", help="record real component inputs while the pipeline runs")
    rec.add_argument("bundle", type=Path)
    rec.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="one prompt a line (default: %(default)s)")
    rec.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                     help="folder of images (image-conditioned VideoCrafter1, AiT, ImageBind; ImageBind also takes its .wav files) (default: %(default)s)")
    rec.add_argument("--out", type=Path, required=True, help="calibration data folder to write")
    rec.add_argument("--samples", type=int, default=8, help="pipeline runs (the last quarter is held out)")
    rec.add_argument("--steps", type=int, help="VideoCrafter1: sampler steps per run (default: the bundle's)")
    rec.add_argument("--frames", type=int, help="VideoCrafter1: frames per run (default: the bundle's)")

    quant = commands.add_parser("quantize", help="write Q/DQ INT8 graphs and TensorRT calibration caches")
    quant.add_argument("bundle", type=Path)
    quant.add_argument("--data", type=Path, required=True, help="folder written by `collect`")
    quant.add_argument("--method", choices=METHODS, default="minmax")
    quant.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                       help="glob of node names to keep in higher precision (repeatable)")
    quant.add_argument("--component", action="append", dest="components", metavar="NAME",
                       help="quantize only this component (repeatable; default: every recorded one)")
    quant.add_argument("--quantize-sensitive", action="store_true",
                       help="also quantize first/last convolutions, softmax and normalisation")
    quant.add_argument("--trt-version", default=DEFAULT_TRT_VERSION,
                       help="TensorRT version named in the cache header (default: %(default)s)")

    rep = commands.add_parser("report", help="INT8 vs FP32 accuracy on the CPU with ONNX Runtime")
    rep.add_argument("bundle", type=Path)
    rep.add_argument("--data", type=Path, help="calibration data (default: the folder the quantize step used)")
    rep.add_argument("--json", type=Path, help="also write the figures here")
    rep.add_argument("--no-end-to-end", action="store_true", help="skip the generated-video comparison")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "collect":
            index = collect(args.bundle, args.out, prompts=args.prompts, images=args.images, samples=args.samples,
                            steps=args.steps, frames=args.frames)
            print(f"wrote {index}")
        elif args.command == "quantize":
            quantize(args.bundle, args.data, method=args.method, exclude=args.exclude, components=args.components,
                     keep_sensitive=not args.quantize_sensitive, trt_version=args.trt_version)
        else:
            figures = report(args.bundle, args.data, end_to_end=not args.no_end_to_end)
            print(format_table(figures))
            if args.json:
                write_json(args.json, figures)
                print(f"wrote {args.json}")
    except (BundleError, CalibrationDataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
