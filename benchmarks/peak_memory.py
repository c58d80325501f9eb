"""``python -m benchmarks.peak_memory BUNDLE [--memory normal|low] [--backend NAME] [--precision P] [--frames F]
[--sampler NAME] [--steps S] [--guidance-scale W] [--int8 COMPONENT] [--video OUT.npy]``: the peak resident memory
and the time split of one VideoCrafter1 ``generate`` in a fresh process, printed as JSON.

A high-water mark covers a process's whole life, so each measurement is a process of
its own (:func:`run_child` starts one and reads its JSON). It reports ``VmHWM`` of
``/proc/self/status`` and ``ru_maxrss``, and from a thread that reads the status every
20 ms the highest ``RssAnon`` (heap: copies of weights, activations, allocator arenas)
and ``RssFile`` (pages of mapped files, e.g. weights a backend maps from the bundle:
resident, but the kernel can drop them without swap), and the split at the highest
sample. The peak is the higher of ``VmHWM`` and that sample (the kernel updates
``VmHWM`` lazily); ``ru_maxrss`` is only informative: Linux carries it across ``exec``,
so it includes the parent process this child was forked from. Beside it: the largest
component's weight bytes (graph file and external data, as the manifest lists them)
and the peak over them (issue 13's goal for ``memory="low"``: at most 1.25), the
resident set after the imports (``baseline``), the pipeline's opening time and where
the generate's time went (:func:`benchmarks.measure.time_graphs`: graphs,
opening/freeing, numpy outside them).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import time_graphs
from runtime.backends.base import MEMORY_MODES, Backend
from runtime.bundle import Bundle
from runtime.videocrafter1 import VideoPipeline
from runtime.videocrafter1.sampling import GUIDANCE_FREE, SAMPLERS

_STATUS_KEYS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
_BACKEND_LIBRARIES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
REPO = Path(__file__).resolve().parents[1]


def status_kb() -> dict[str, int]:
    """The resident-set figures of this process (kB) from ``/proc/self/status``."""
    found = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key = line.split(":", 1)[0]
            if key in _STATUS_KEYS:
                found[key] = int(line.split()[1])
    return found


class RssSampler:
    """While its ``with`` block runs, reads :func:`status_kb` every ``interval_s`` and keeps the highs.

    ``RssFile`` and ``RssAnon`` peak at different moments; ``at_peak`` is the split of the sample
    with the highest ``VmRSS``. A sample can miss a spike shorter than the interval: ``VmHWM`` cannot.
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.max_anon_kb = self.max_file_kb = 0
        self.at_peak: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def read(self) -> dict[str, int]:
        """One sample (also taken by the thread): :func:`status_kb`, the highs updated."""
        found = status_kb()
        self.samples += 1
        self.max_anon_kb = max(self.max_anon_kb, found["RssAnon"])
        self.max_file_kb = max(self.max_file_kb, found["RssFile"])
        if found["VmRSS"] > self.at_peak.get("VmRSS", -1):
            self.at_peak = found
        return found

    def _sample(self) -> None:
        while True:
            self.read()
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _cache_files() -> int | None:
    """How many files OpenVINO's compiled-model cache holds (None when it has no folder yet)."""
    from runtime.backends.ov import default_cache_dir

    folder = default_cache_dir()
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else None


def measure_generate(bundle_root: str | Path, *, prompt: str, memory: str, backend: str, frames: int, steps: int,
                     sampler: str = "ddim", guidance_scale: float | None = None, precision: str = "fp32",
                     int8: tuple[str, ...] = (), video: str | Path | None = None) -> dict[str, Any]:
    """Open the pipeline and run one ``generate`` of ``prompt`` here: ``sampler`` at ``steps``, the bundle's size,
    and its guidance scale unless ``guidance_scale`` is given; ``precision`` is OpenVINO's (ONNX Runtime: fp32);
    ``int8``: components run from their INT8 Q/DQ graph (the backend's ``int8`` option).
    ``video``: also save the video (uint8, seed 0) there with ``np.save``, to compare backends and precisions."""
    importlib.import_module(_BACKEND_LIBRARIES.get(backend, "onnxruntime"))
    bundle = Bundle(bundle_root)
    baseline = status_kb()["VmRSS"]
    cached_before = _cache_files() if backend == "openvino" else None
    chosen = Backend(backend, **({"precision": precision} if backend == "openvino" else {}), int8=list(int8))
    with RssSampler() as rss:
        start = time.perf_counter()
        pipeline = VideoPipeline(bundle, backend=chosen, memory=memory)
        open_s = time.perf_counter() - start
        with pipeline:
            c = pipeline.constants
            scale = c.sampling.guidance_scale if guidance_scale is None else guidance_scale
            made = []
            split = time_graphs(pipeline, lambda: made.append(pipeline.generate(
                prompt, frames=frames, sampler=sampler, steps=steps, guidance_scale=scale, progress=False)))
            names = list(pipeline.sessions)
            precisions = {name: "int8" if name in int8 else  # ONNX Runtime: the graph as exported
                          getattr(session, "precision", None) or "fp32" for name, session in pipeline.sessions.items()}
        after_close = rss.read()["VmRSS"]
    if video is not None:
        np.save(video, made[0])
    status = status_kb()
    weights = {name: bundle.weight_bytes(name) for name in names}
    largest = max(weights, key=weights.get)
    # the kernel raises VmHWM lazily (on unmapping, exit), so memory freed without unmapping can peak above it
    peak_bytes = max(status["VmHWM"], rss.at_peak["VmRSS"]) * 1024
    guided = scale != 1.0 and sampler not in GUIDANCE_FREE
    return {
        "bundle": bundle.manifest.variant, "memory": memory, "backend": backend, "precision": precision,
        "graph_precisions": precisions, "frames": frames, "sampler": sampler, "steps": steps, "height": c.height,
        "width": c.width, "guidance_scale": scale, "guided": guided,
        "unet_batch": min(pipeline.unet_batch or 2, 2 if guided else 1),
        "peak_rss_bytes": peak_bytes, "vm_hwm_bytes": status["VmHWM"] * 1024,
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_rss_bytes": baseline * 1024, "rss_after_close_bytes": after_close * 1024,
        "max_rss_anon_bytes": rss.max_anon_kb * 1024, "max_rss_file_bytes": rss.max_file_kb * 1024,
        "at_peak_sample": {"rss_bytes": rss.at_peak["VmRSS"] * 1024,
                           "anon_bytes": rss.at_peak["RssAnon"] * 1024,
                           "file_bytes": rss.at_peak["RssFile"] * 1024},
        "rss_samples": rss.samples,
        "weight_bytes": weights, "largest_component": largest, "largest_weight_bytes": weights[largest],
        "all_weight_bytes": sum(weights.values()), "peak_over_largest": peak_bytes / weights[largest],
        "open_s": open_s, **split,
        "openvino_cache_files_added": (_cache_files() or 0) - (cached_before or 0) if backend == "openvino" else None,
    }


def run_child(bundle_root: str | Path, *, prompt: str, memory: str, backend: str, frames: int, steps: int,
              sampler: str = "ddim", guidance_scale: float | None = None, precision: str = "fp32",
              int8: tuple[str, ...] = (), video: str | Path | None = None) -> dict[str, Any]:
    """:func:`measure_generate` in a fresh Python process (this checkout's packages); its JSON."""
    command = [sys.executable, "-m", "benchmarks.peak_memory", str(bundle_root), "--prompt", prompt,
               "--memory", memory, "--backend", backend, "--precision", precision, "--frames", str(frames),
               "--sampler", sampler, "--steps", str(steps)]
    if guidance_scale is not None:
        command += ["--guidance-scale", str(guidance_scale)]
    for name in int8:
        command += ["--int8", name]
    if video is not None:
        command += ["--video", str(video)]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": path})
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - start
    return result


def describe(found: dict[str, Any]) -> str:
    """One line of the summary for a :func:`measure_generate` result."""
    gb = 1e9
    peak = found["at_peak_sample"]
    graphs = ", ".join(f"{k} {v:.1f} s" for k, v in found["graph_s"].items())
    switching = sum(found["switch_s"].values())
    return (f"{found['bundle']} generate_video {found['frames']}x{found['height']}x{found['width']}, "
            f"{found['steps']} {found['sampler']} steps, {found['backend']} {found['precision']}, "
            f"memory={found['memory']}: "
            f"peak RSS {found['peak_rss_bytes'] / gb:.2f} GB (highest sample: anon {peak['anon_bytes'] / gb:.2f} + "
            f"file-backed {peak['file_bytes'] / gb:.2f} GB; after imports {found['baseline_rss_bytes'] / gb:.2f} GB) = "
            f"{found['peak_over_largest']:.2f}x the largest component ({found['largest_component']} "
            f"{found['largest_weight_bytes'] / gb:.2f} GB; all {found['all_weight_bytes'] / gb:.2f} GB); "
            f"opening {found['open_s']:.1f} s, generate {found['end_to_end_s']:.1f} s = graphs ({graphs}) + "
            f"opening/freeing {switching:.1f} s + outside graphs {found['outside_graphs_s'] * 1e3:.0f} ms "
            f"({found['outside_graphs_share']:.2%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peak_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="a VideoCrafter1 bundle folder")
    parser.add_argument("--prompt", default="a corgi running on the beach")
    parser.add_argument("--memory", choices=MEMORY_MODES, default="low")
    parser.add_argument("--backend", choices=tuple(_BACKEND_LIBRARIES), default="onnxruntime")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="OpenVINO's inference precision (ONNX Runtime runs the graphs as exported)")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--sampler", choices=tuple(SAMPLERS), default="ddim")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps")
    parser.add_argument("--guidance-scale", type=float, help="default: the bundle's")
    parser.add_argument("--int8", action="append", default=[], metavar="COMPONENT",
                        help="run this component from its INT8 Q/DQ graph (repeatable; `python -m calibration`)")
    parser.add_argument("--video", type=Path, help="also save the video (uint8 .npy) here")
    args = parser.parse_args(argv)
    result = measure_generate(args.bundle, prompt=args.prompt, memory=args.memory, backend=args.backend,
                              frames=args.frames, steps=args.steps, sampler=args.sampler,
                              guidance_scale=args.guidance_scale, precision=args.precision, int8=tuple(args.int8),
                              video=args.video)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
