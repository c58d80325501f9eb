"""``python -m benchmarks.gpu [--json FILE] [--family NAME]``: the torch CUDA FP16 baseline of every released
component, the reference any TensorRT figure is compared with. Run by ``benchmarks/gpu.sh`` on a machine with
an NVIDIA GPU; it has not run yet (no GPU where the project is developed).

Each component is the export package's module of the released configuration (seeded random weights: timings
do not depend on the values), cast to FP16 on the GPU, run eagerly under ``torch.inference_mode`` on the
export's example inputs (the shapes its bundle's profile takes as ``opt``: batch 2 of guidance for the UNet,
the variant's frames and latent size); median of 5 calls after 2 warm-ups, with ``torch.cuda.synchronize``.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from benchmarks.measure import write_json

WARMUP, REPEATS = 2, 5


def _videocrafter1() -> Iterator[tuple[str, object, dict]]:
    from export.videocrafter1.bundle import build_modules
    from export.videocrafter1.graphs import component_specs
    from export.videocrafter1.presets import released_variants

    for name, config in released_variants().items():
        modules = build_modules(config, None, trust=False, seed=0)
        for component in component_specs(config):
            for spec, feeds, _ in component.plan(modules[component.name]):
                yield f"videocrafter1 {name}", spec, feeds
        del modules
        gc.collect()


def _ait() -> Iterator[tuple[str, object, dict]]:
    from export.ait.bundle import build_modules
    from export.ait.graphs import component_specs
    from export.ait.presets import released_variants

    for name, config in released_variants().items():
        (solver,) = component_specs(config)
        for spec, feeds, _ in solver.plan(build_modules(config, None, trust=False, seed=0)):
            yield f"ait {name}", spec, feeds


def _imagebind() -> Iterator[tuple[str, object, dict]]:
    from export.imagebind.bundle import build_encoders
    from export.imagebind.graphs import EncoderSpec
    from export.imagebind.presets import imagebind_huge

    preset = imagebind_huge()
    for modality, encoder in build_encoders(preset, seed=0).items():
        component = EncoderSpec(modality, preset.config)
        spec, feeds, _ = component.plan(encoder, component.shape_ranges()["batch"]["opt"])[0]  # at the opt batch
        yield f"imagebind {preset.name}", spec, feeds


SUITES = {"videocrafter1": _videocrafter1, "ait": _ait, "imagebind": _imagebind}


def time_fp16(spec, feeds: dict[str, np.ndarray]) -> list[float]:
    """Seconds per call of ``spec.module`` in FP16 on cuda:0 (inputs moved once, before timing)."""
    import torch

    module = spec.module.half().cuda().eval()
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).cuda() for n in spec.inputs]
    args = [a.half() if a.is_floating_point() else a for a in args]
    runs = []
    with torch.inference_mode():
        for index in range(WARMUP + REPEATS):
            torch.cuda.synchronize()
            start = time.perf_counter()
            module(*args)
            torch.cuda.synchronize()
            if index >= WARMUP:
                runs.append(time.perf_counter() - start)
    spec.module.cpu()
    del module, args
    torch.cuda.empty_cache()
    return runs


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", nargs="+", choices=list(SUITES), default=list(SUITES))
    parser.add_argument("--json", type=Path, help="also write the rows (and the GPU, versions) to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("python -m benchmarks.gpu needs an NVIDIA GPU with a CUDA build of torch; none found", file=sys.stderr)
        return 2
    rows = []
    for family in args.family:
        for bundle, spec, feeds in SUITES[family]():
            runs = time_fp16(spec, feeds)
            shape = " ".join(f"{k}{list(np.shape(v))}" for k, v in feeds.items())
            rows.append({"bundle": bundle, "item": spec.name, "shape": shape, "backend": "torch cuda",
                         "precision": "fp16", "runtime_ms": statistics.median(runs) * 1e3,
                         "runs_ms": [r * 1e3 for r in runs]})
            print(f"{bundle} | {spec.name} | {shape} | fp16 {rows[-1]['runtime_ms']:.2f} ms", flush=True)
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "statistic": f"median of {REPEATS} after {WARMUP} warm-ups", "rows": rows}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
