"""End to end at released size: the runtime on a released-size bundle against the torch modules of the same
checkpoint, at a reduced shape inside the bundle's profile. Prints figures; not a CI test (minutes, GiBs).

    nice /usr/bin/time -v python -m benchmarks.probes.parity videocrafter1 BUNDLE CHECKPOINT \
        [--steps 2 --frames 4 --size 256 256]
    nice /usr/bin/time -v python -m benchmarks.probes.parity ait BUNDLE CHECKPOINT
    nice /usr/bin/time -v python -m benchmarks.probes.parity imagebind BUNDLE CHECKPOINT

* videocrafter1: ``generate_video`` against ``export.videocrafter1.reference_pipeline.generate_video_torch``
  (the official DDIM maths in torch) with the same prompt, seed and noise; PSNR of the uint8 videos.
* ait: ``estimate_depth`` (TTA windows and flips, soft tokens) against the same numpy pre/post-processing
  with torch's backbone, cached decoder loop and soft VQVAE decode; max abs and relative error of the depth.
* imagebind: ``embed`` of every modality against the torch encoder on the same preprocessed input; max abs
  error and cosine of the embeddings.

The runtime runs first and is closed before the torch modules are built (from the memory-mapped
checkpoint), so the two never hold their weights at once.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np

from runtime.arrays import agreement, psnr

PROMPT = "a corgi running on the beach at sunset"


def videocrafter1(bundle: Path, checkpoint: Path, args: argparse.Namespace) -> dict:
    import runtime
    from export.videocrafter1.bundle import build_modules
    from export.videocrafter1.presets import released_variants, tiny_variants
    from runtime.bundle import Bundle
    from runtime.videocrafter1.constants import VideoConstants

    opened = Bundle(bundle)
    manifest, constants = opened.manifest, VideoConstants.of(opened)
    height, width = args.size
    kwargs = dict(steps=args.steps, guidance_scale=constants.sampling.guidance_scale,
                  eta=constants.sampling.eta, seed=args.seed, frames=args.frames, height=height, width=width)
    image = np.asarray(__import__("PIL.Image").Image.open(args.image).convert("RGB")) if args.image else None
    start = time.perf_counter()
    video = runtime.generate_video(PROMPT, bundle=bundle, image=image, progress=False, backend="onnxruntime",
                                   **kwargs)
    runtime_s = time.perf_counter() - start
    gc.collect()
    start = time.perf_counter()
    config = {**released_variants(), **tiny_variants()}[manifest.variant]
    modules = build_modules(config, checkpoint, trust=False, seed=0)
    from export.videocrafter1.reference_pipeline import generate_video_torch

    reference = generate_video_torch(modules, constants, PROMPT, image_rgb=image, **kwargs)
    torch_s = time.perf_counter() - start
    return {"variant": manifest.variant, **kwargs, "psnr_db": psnr(reference, video),
            "max_abs_levels": int(np.abs(video.astype(int) - reference.astype(int)).max()),
            "video_std": float(video.std()), "runtime_s": runtime_s, "torch_s": torch_s}


def ait(bundle: Path, checkpoint: Path, args: argparse.Namespace) -> dict:
    from benchmarks.ait import _test_image, _torch_solve
    from export.ait.bundle import build_modules
    from export.ait.presets import variant
    from runtime.ait.depth import DepthPipeline

    image = _test_image(args.seed)
    start = time.perf_counter()
    with DepthPipeline(bundle, backend="onnxruntime") as pipeline:
        depth = pipeline.estimate(image, progress=False)
        config_name, c = pipeline.bundle.manifest.variant, pipeline.constants
        raw = pipeline.sliding_flip(pipeline.pixels(image, *c.test_size), soft=True, progress=False)
    runtime_s = time.perf_counter() - start
    gc.collect()
    start = time.perf_counter()
    reference_pipeline = DepthPipeline(bundle, backend="onnxruntime")
    modules = build_modules(variant(config_name), checkpoint, seed=0)
    reference_pipeline.solve = _torch_solve(modules, c.token_length)  # same numpy pre/post, torch graphs
    reference = reference_pipeline.estimate(image, progress=False)
    raw_reference = reference_pipeline.sliding_flip(reference_pipeline.pixels(image, *c.test_size), soft=True,
                                                    progress=False)
    torch_s = time.perf_counter() - start

    def errors(found: np.ndarray, expected: np.ndarray) -> dict:
        error = np.abs(found - expected)
        return {"max_abs_m": float(error.max()), "max_rel": float((error / np.maximum(np.abs(expected), 1e-6)).max()),
                "range_m": [float(expected.min()), float(expected.max())]}

    # estimate_depth clips at min_depth; random weights put much of the map there, so the TTA depth before
    # clipping is compared as well.
    return {"variant": config_name, "image": list(image.shape), "estimate_depth": errors(depth, reference),
            "tta_depth_before_clip": errors(raw, raw_reference), "runtime_s": runtime_s, "torch_s": torch_s}


def imagebind_items(seed: int) -> dict[str, list]:
    """A few items of every modality: the sample beach image and random ones, prompts, noise, maps, IMU."""
    rng = np.random.default_rng(seed)
    images = [str(Path(__file__).resolve().parents[2] / "samples" / "assets" / "beach.png"),
              (rng.random((200, 260, 3)) * 255).astype(np.uint8)]
    maps = [rng.random((224, 224)).astype(np.float32) for _ in range(2)]
    return {"vision": images, "text": ["a dog barking", "ocean waves on a sunny beach"],
            "audio": [rng.standard_normal(16000 * 3).astype(np.float32) * 0.1], "depth": maps, "thermal": maps[::-1],
            "imu": [rng.standard_normal((6, 2000)).astype(np.float32) for _ in range(2)]}


def imagebind(bundle: Path, checkpoint: Path, args: argparse.Namespace) -> dict:
    from export.checkpoint import read_checkpoint
    from export.imagebind.bundle import build_one
    from export.imagebind.graphs import encoder_graph
    from export.imagebind.presets import presets
    from runtime.imagebind.inputs import prepare
    from runtime.imagebind.pipeline import EmbeddingPipeline, average_clips

    figures = {}
    for modality, items in imagebind_items(args.seed).items():
        with EmbeddingPipeline(bundle, modalities=[modality], backend="onnxruntime") as pipeline:
            found = pipeline.embed_modality(modality, items)
            spec = pipeline.constants.modalities[modality]
            feed, counts = prepare(modality, items, spec.preprocess, pipeline.tokenizer)
            preset = presets()[pipeline.bundle.manifest.variant]
        gc.collect()
        encoder = build_one(preset, modality, read_checkpoint(checkpoint), source=checkpoint)
        spec = encoder_graph(modality).spec(encoder)  # the exported graph's torch module, fed the runtime's input
        expected = average_clips(spec.run_torch({spec.inputs[0]: feed})[spec.outputs[0]], counts)
        del encoder, spec
        gc.collect()
        score = agreement(expected, found)
        figures[modality] = {"items": len(items), "max_abs": score.max_abs, "cosine": score.cosine}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=["videocrafter1", "ait", "imagebind"])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--image", type=Path, help="I2V conditioning image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run = {"videocrafter1": videocrafter1, "ait": ait, "imagebind": imagebind}[args.family]
    from export.phases import peak_rss_gib

    figures = run(args.bundle, args.checkpoint, args)
    print(json.dumps({"family": args.family, **figures, "peak_rss_gib": peak_rss_gib()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
