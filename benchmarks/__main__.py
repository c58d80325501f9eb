"""``python -m benchmarks --preset tiny|released [--family NAME] [--json FILE] [--bundle-dir DIR]``: the runtime
against torch eager.

Every registered family (``runtime.families``) has a suite ``benchmarks.<family>``
(``bench(bundles, quick=, repeats=) -> FamilyReport``); when no bundle of the
family is found, its tiny presets are exported for the run (``export.<family>.cli``).
``--preset released`` runs the suites' ``bench_released(repeats=)`` instead: released
configurations, seeded random weights, exported once into a cache folder
(``benchmarks.released``), torch eager then every backend and precision on the same
inputs. ``--preset video`` runs ``bench_video()``: whole 16-frame videos at released size, one
row per sampler, steps, backend and precision (``benchmarks.video``; VideoCrafter1 only). The table and the JSON show the same figures; the JSON adds the device, the
library versions and the ONNX Runtime settings.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import samplers
from benchmarks.figures import line_plot
from benchmarks.measure import FamilyReport, Row, write_json
from benchmarks.peak_memory import describe
from benchmarks.released import cache_dir
from benchmarks.video import describe_video
from runtime.bundle import MANIFEST, Bundle
from runtime.cpu import this_cpu
from runtime.families import FAMILIES, family_modules

PRESETS = ("tiny", "released", "video")
REPEATS = 3
_COLUMNS = ("bundle", "item", "shape", "backend", "precision", "runtime ms", "torch ms", "torch/rt", "fp32/this",
            "cosine", "SNR dB", "GFLOP", "rt GFLOP/s", "rt peak MB", "torch peak MB")
_DERIVED = ("torch_over_runtime", "runtime_gflops_per_s", "fp32_over_this")


def find_bundles(parent: Path) -> dict[str, list[Path]]:
    """Bundle folders directly under ``parent``, by family."""
    found: dict[str, list[Path]] = {}
    if parent.is_dir():
        for path in sorted(p for p in parent.iterdir() if (p / MANIFEST).is_file()):
            found.setdefault(Bundle(path).manifest.family, []).append(path)
    return found


def ort_settings() -> dict:
    """The ONNX Runtime settings every benchmarked session uses (those of ``runtime.backends.OrtSession``)."""
    import onnxruntime as ort

    return {"graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": "0 (one per physical core)",
            "providers": ["CPUExecutionProvider"], "available_providers": ort.get_available_providers(),
            "transformers_fusions": "not applied (no onnxruntime.transformers optimizer for these graphs)"}


def _openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.get_version()


def environment() -> dict:
    import cv2
    import numpy
    import onnx
    import onnxruntime
    import torch

    cpu = this_cpu()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu.model, "cpu_class": cpu.isa, "cpu_bf16": cpu.bf16, "cpu_int8_dot": cpu.int8_dot,
            "cpu_count": os.cpu_count(), "gpu": gpu, "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "numpy": numpy.__version__,
                         "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__, "torch": torch.__version__,
                         "opencv": cv2.__version__, "openvino": _openvino_version()}}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(rows: list[Row]) -> str:
    cells = [_COLUMNS] + [(r.bundle, r.item, r.shape, r.backend, r.precision or "-", _fmt(r.runtime_ms),
                           _fmt(r.torch_ms), _fmt(r.speedup), _fmt(r.over_fp32),
                           "-" if r.cosine is None else f"{r.cosine:.5f}", _fmt(r.snr_db), _fmt(r.gflop),
                           _fmt(r.gflops_per_s), _fmt(r.runtime_peak_mb), _fmt(r.torch_peak_mb)) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _row_json(row: Row) -> dict:
    return {**asdict(row), "torch_over_runtime": row.speedup, "runtime_gflops_per_s": row.gflops_per_s,
            "fp32_over_this": row.over_fp32}


def export_tiny(family: str, parent: Path) -> list[Path]:
    """Export ``family``'s tiny presets (seeded random weights) under ``parent``; the bundle folders."""
    cli = importlib.import_module(f"export.{family}.cli")
    return [export(parent / folder, log=lambda line: None) for folder, export in cli.tiny_bundles().items()]


def run(bundle_dir: Path, *, preset: str, outputs: Path, families: tuple[str, ...] = FAMILIES, log=print) -> dict:
    """Benchmark ``families``; returns the report (as written to JSON) and writes the plots."""
    quick = preset == "tiny"
    found = find_bundles(bundle_dir)
    suites = family_modules("benchmarks")
    reports: dict[str, FamilyReport] = {}
    exported_to = None
    with tempfile.TemporaryDirectory(prefix="bench-bundles-") as scratch:
        for family in families:
            if preset != "tiny":
                suite = getattr(suites[family], f"bench_{preset}", None)
                if suite is None:
                    log(f"{family}: no {preset} benchmark; skipped")
                else:
                    reports[family] = suite(log=log) if preset == "video" else suite(repeats=REPEATS, log=log)
                continue
            bundles = found.get(family, [])
            if not bundles:
                log(f"No {family} bundle under {bundle_dir}: exporting its tiny presets (seeded random weights) "
                    f"into {scratch} for this run.")
                bundles = export_tiny(family, Path(scratch))
                exported_to = scratch
            reports[family] = suites[family].bench(bundles, quick=quick, repeats=REPEATS)
    plots = []
    for report in reports.values():
        for plot in report.plots:
            plots.append(str(line_plot(outputs / plot["file"], plot["title"], plot["x_label"], plot["y_label"],
                                       plot["series"])))
    return {
        "command": f"python -m benchmarks --preset {preset} --family {' '.join(families)}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "repeats": REPEATS, "statistic": "median", "bundle_dir": str(bundle_dir), "exported_tiny_to": exported_to,
        "released_cache": str(cache_dir()) if preset != "tiny" else None,
        "device": environment(), "onnxruntime_settings": ort_settings(), "plots": plots,
        "families": {family: {"rows": [_row_json(r) for r in report.rows], "figures": report.figures,
                              "plots": report.plots, "notes": report.notes} for family, report in reports.items()},
    }


def summary(result: dict) -> str:
    rows = [Row(**{k: v for k, v in r.items() if k not in _DERIVED})
            for family in result["families"].values() for r in family["rows"]]
    device, ort = result["device"], result["onnxruntime_settings"]
    lines = [f"device: {device['cpu']} ({device['cpu_class']}, {device['cpu_count']} CPUs), GPU: {device['gpu'] or 'none'}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in device["versions"].items()),
             f"onnxruntime: {ort['graph_optimization_level']}, intra-op threads {ort['intra_op_num_threads']}, "
             f"{', '.join(ort['providers'])}; transformers fusions {ort['transformers_fusions']}",
             f"median of {result['repeats']} runs after 1 warm-up; torch/rt above 1 = runtime faster; "
             "peak MB = resident-set high-water mark above the resident set before the runs",
             "", table(rows), ""]
    for name, family in result["families"].items():
        for b in family["figures"].get("end_to_end_breakdown", []):
            graphs = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in b["graph_s"].items())
            lines.append(f"{name} {b['bundle']}: end to end {b['end_to_end_s'] * 1e3:.1f} ms = graphs ({graphs}) + "
                         f"outside graphs {b['outside_graphs_s'] * 1e3:.1f} ms ({b['outside_graphs_share']:.1%})")
            lines.append(f"{name} {b['bundle']}: sampler {b['sampler_s'] * 1e3:.1f} ms, of which numpy outside the "
                         f"UNet {b['sampler_numpy_s'] * 1e3:.2f} ms ({b['sampler_numpy_share']:.2%})")
        lines += [f"{name} peak memory: {describe(found)}" for found in family["figures"].get("peak_memory", [])]
        lines += [f"{name} whole video: {describe_video(found)}" for found in family["figures"].get("whole_video", [])]
        convergence = family["figures"].get("sampler_convergence")
        if convergence:
            lines += samplers.table(convergence["bundle"], convergence)
        lines += [f"note: {n}" for n in family["notes"]]
    lines += [f"plot: {p}" for p in result["plots"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="tiny",
                        help="tiny: the tiny presets, 3 repeats (minutes on a 2-core CPU); released: the released "
                             "configurations (exported once into $EDGE_BENCH_CACHE, default "
                             "~/.cache/edge-deploy/released-bundles; needs about 14 GiB of free memory); video: "
                             "whole 16-frame videos at released size (about an hour on a 2-core CPU)")
    parser.add_argument("--family", nargs="+", choices=FAMILIES, default=list(FAMILIES),
                        help="families to benchmark (default: all)")
    parser.add_argument("--json", type=Path, help="also write every figure (and device, versions) to this file")
    parser.add_argument("--bundle-dir", type=Path, default=Path("bundles"),
                        help="folder of bundles (default: bundles; tiny presets are exported when empty)")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="folder for the SVG plots")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run(args.bundle_dir, preset=args.preset, outputs=args.outputs, families=tuple(args.family))
    result["wall_s"] = time.perf_counter() - start
    print(summary(result))
    print(f"wall time: {result['wall_s']:.1f} s")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
