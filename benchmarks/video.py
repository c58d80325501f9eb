"""The whole video at released size: ``python -m benchmarks --preset video`` (VideoCrafter1's full-video suite).

One row per (variant, sampler, steps, backend, precision) of :func:`rows_for` this CPU: one video of the bundle's
size (16 frames of 320x512 for the released variants) from ``generate`` (its guidance as the official
code runs it), in a fresh process per measurement (:func:`benchmarks.peak_memory.run_child`), split
into text encoder, UNet, VAE decoder, opening/freeing graphs and numpy outside them, with the
process's peak RSS. The bundles are the
released configurations with seeded random weights (cost does not depend on the values), exported
once into the cache of :mod:`benchmarks.released`.

A UNet call costs the same at every step (batch 1 without guidance, 2 with) except the first of a
session (its allocations: up to a seventh slower), so a sampler's cost grows only with its steps. A
2-core CPU needs over an hour for DDIM-50 with guidance, so each (variant, sampler, backend,
precision) is measured once at ``measured_steps`` (:data:`MEASURED_STEPS`: one guided step, i.e.
two UNet calls of batch 1 in low memory, or four steps without guidance) and every row of it is
that run with the UNet calls it did not make added at the mean of its calls after the first (and
the numpy between calls scaled by the steps): the row says ``projected`` when its steps are not the
measured ones. Text, VAE and opening time and the peak RSS are those of the run (they do not depend
on steps).

Each figure also carries the floating-point work of its UNet calls and decoded frames (multiply-adds of the
convolutions and matrix products, :func:`benchmarks.measure.graph_flops` on the exported graphs) and the rate
each graph ran at, so a row says how close a CPU came to its arithmetic limit. Where the CPU has native BF16 the
T2V-Turbo rows are measured again on OpenVINO BF16 (:func:`rows_for`); such a row's video (same seed) carries its
PSNR against ONNX Runtime FP32's.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.measure import Row
from runtime.arrays import psnr
from runtime.cpu import Cpu, this_cpu
from runtime.videocrafter1.constants import VideoConstants
from runtime.videocrafter1.sampling import GUIDANCE_FREE

FAMILY = "videocrafter1"
PROMPT = "a corgi running on the beach"
MEMORY = "low"  # one graph in memory at a time: the mode that fits a 16-frame released UNet in 12 GiB
MEASURED_STEPS = {True: 1, False: 4}  # guided (two UNet calls a step in low memory) / guidance-free
REFERENCE = ("onnxruntime", "fp32")  # the (backend, precision) other rows' videos are compared with


@dataclass(frozen=True)
class VideoRow:
    """One row asked for: ``sampler`` at ``steps`` on the released ``variant``, ``backend`` in ``precision``."""

    variant: str
    sampler: str
    steps: int
    backend: str = "onnxruntime"
    precision: str = "fp32"

    @property
    def measurement(self) -> tuple[str, str, str, str]:
        return self.variant, self.sampler, self.backend, self.precision


# VideoCrafter2's official sampling (DDIM 50 with guidance), the fastest solver it offers here (DPM-Solver++ 20,
# with guidance), and T2V-Turbo v1's LCM at 4 (its app's default) and 8 steps, without guidance branch.
ROWS = (VideoRow("t2v-512-v2", "ddim", 50), VideoRow("t2v-512-v2", "dpmpp-2m", 20),
        VideoRow("t2v-turbo-vc2", "lcm", 4), VideoRow("t2v-turbo-vc2", "lcm", 8))
# where the CPU has native BF16: T2V-Turbo's rows again on OpenVINO BF16 (elsewhere OpenVINO runs a BF16 request in
# FP32, so the row would repeat an FP32 one under another name)
BF16_ROWS = (VideoRow("t2v-turbo-vc2", "lcm", 4, "openvino", "bf16"),
             VideoRow("t2v-turbo-vc2", "lcm", 8, "openvino", "bf16"))


def rows_for(cpu: Cpu) -> tuple[VideoRow, ...]:
    """The rows the suite measures on ``cpu``: :data:`ROWS`, and :data:`BF16_ROWS` where it has native BF16."""
    return ROWS + (BF16_ROWS if cpu.bf16 else ())


def graph_gflop(bundle, name: str, dims: dict[str, int]) -> float:
    """GFLOP of one call of the component ``name`` of ``bundle`` with its symbolic input dims set to ``dims``."""
    from benchmarks.measure import graph_flops

    shapes = {t.name: tuple(dims[d] if isinstance(d, str) else d for d in t.shape)
              for t in bundle.component(name).inputs}
    return graph_flops(bundle.component_path(name), shapes).flops / 1e9


def video_gflop(bundle, found: dict[str, Any]) -> dict[str, float]:
    """GFLOP of one UNet call and of one decoded frame in a run like ``found`` of ``bundle``."""
    c = VideoConstants.of(bundle)
    dims = {"batch": found["unet_batch"], "frames": found["frames"], "latent_height": found["height"] // c.vae_factor,
            "latent_width": found["width"] // c.vae_factor, "context_length": c.context_length}
    return {"unet_gflop_per_call": graph_gflop(bundle, "unet", dims),
            "vae_gflop_per_frame": graph_gflop(bundle, "vae_decoder", {**dims, "frames": 1})}


def project(found: dict[str, Any], steps: int) -> dict[str, Any]:
    """The figures of a :func:`~benchmarks.peak_memory.measure_generate` run at ``found["steps"]`` brought to
    ``steps``: the UNet calls it made, plus those it did not at the mean of its calls after the first; numpy
    outside the graphs times ``steps / found["steps"]``; the rest as measured. Also the GFLOP of those UNet calls
    and decoded frames and the GFLOP/s each graph ran at (``found`` carries :func:`video_gflop`)."""
    factor = steps / found["steps"]
    made = found["graph_calls_s"]["unet"]
    steady = made[1:] or made
    call_s = sum(steady) / len(steady)
    calls = unet_calls(found, steps)
    graphs = dict(found["graph_s"])
    graphs["unet"] = sum(made) + (calls - len(made)) * call_s
    outside = found["outside_graphs_s"] * factor
    switch = sum(found["switch_s"].values())
    total = sum(graphs.values()) + switch + outside
    unet_gflop, vae_gflop = found["unet_gflop_per_call"], found["vae_gflop_per_frame"]
    return {"variant": found["bundle"], "sampler": found["sampler"], "steps": steps, "measured_steps": found["steps"],
            "projected": steps != found["steps"], "guided": found["guided"],
            "guidance_scale": found["guidance_scale"], "backend": found["backend"], "precision": found["precision"],
            "memory": found["memory"], "frames": found["frames"], "height": found["height"], "width": found["width"],
            "unet_batch": found["unet_batch"], "text_s": graphs.get("text_encoder", 0.0), "unet_s": graphs["unet"],
            "vae_s": graphs.get("vae_decoder", 0.0), "switch_s": switch, "outside_graphs_s": outside,
            "end_to_end_s": total, "unet_call_s": call_s, "unet_first_call_s": made[0],
            "peak_rss_bytes": found["peak_rss_bytes"], "open_s": found["open_s"],
            "unet_gflop_per_call": unet_gflop, "vae_gflop_per_frame": vae_gflop,
            "gflop": calls * unet_gflop + found["frames"] * vae_gflop, "unet_gflops_per_s": unet_gflop / call_s,
            "vae_gflops_per_s": vae_gflop * found["frames"] / found["graph_s"]["vae_decoder"]}


def unet_calls(found: dict[str, Any], steps: int) -> int:
    """UNet calls of a run like ``found`` at ``steps``: one per step and guidance branch, the branches together
    when its batch allows."""
    return steps * (2 if found["guided"] else 1) // found["unet_batch"]


def video_rows(bundles: Callable[[str], Any], rows: tuple[VideoRow, ...] | None = None, log=print
               ) -> tuple[list[Row], list[dict]]:
    """Measure each (variant, sampler, backend, precision) of ``rows`` (default: :func:`rows_for` this CPU) once and
    project its rows; ``bundles(variant)`` is the released bundle of a variant. The table rows and the figures
    (:func:`project`) of each; a measured row in another backend or precision than ONNX Runtime FP32 also carries
    its video's PSNR against ONNX Runtime FP32's of the same sampler and steps (:func:`compare_videos`)."""
    from benchmarks.peak_memory import describe, run_child

    rows = rows_for(this_cpu()) if rows is None else rows
    table, figures, videos, work = [], [], {}, {}
    with tempfile.TemporaryDirectory(prefix="whole-video-") as folder:
        for key, group in groupby(sorted(rows, key=lambda r: (r.measurement, r.steps)), key=lambda r: r.measurement):
            group = list(group)
            variant, sampler, backend, precision = key
            bundle = bundles(variant)
            guided = sampler not in GUIDANCE_FREE
            steps = min(group[0].steps, MEASURED_STEPS[guided])
            log(f"{variant}: one video, {sampler} {steps} steps, {backend} {precision} (fresh process)")
            video = videos[bundle.manifest.variant, sampler, backend, precision] = Path(folder) / f"{len(videos)}.npy"
            found = run_child(bundle.root, prompt=PROMPT, memory=MEMORY, backend=backend, precision=precision,
                              frames=VideoConstants.of(bundle).frames, sampler=sampler, steps=steps, video=video)
            shape = (bundle.manifest.variant, found["unet_batch"], found["frames"], found["height"], found["width"])
            if shape not in work:  # counted once per variant and shape, not per backend (a released UNet: ~10 s)
                work[shape] = video_gflop(bundle, found)
            found.update(work[shape])
            log(f"  {describe(found)}")
            for row in group:
                figure = project(found, row.steps)
                figures.append(figure)
                label = f"whole video: {sampler} {row.steps} steps" + (
                    f", guidance {figure['guidance_scale']:g}" if figure["guided"] else ", no guidance branch") + (
                    f" (projected from {figure['measured_steps']} measured)" if figure["projected"] else "")
                table.append(Row(FAMILY, variant, label, f"{figure['frames']}x{figure['height']}x{figure['width']}",
                                 backend, figure["end_to_end_s"] * 1e3, gflop=figure["gflop"],
                                 runtime_peak_mb=figure["peak_rss_bytes"] / 2**20, precision=precision))
        compare_videos(figures, videos)
    return table, figures


def compare_videos(figures: list[dict[str, Any]], videos: dict[tuple[str, str, str, str], Path]) -> None:
    """Set ``psnr_vs_fp32_db`` on each measured (not projected) figure whose backend or precision is not
    :data:`REFERENCE`: the PSNR of its video (``videos`` by the figures' variant, sampler, backend and precision)
    against the reference's of the same variant and sampler (same seed and steps); None elsewhere."""
    for figure in figures:
        key = (figure["variant"], figure["sampler"], figure["backend"], figure["precision"])
        reference = (*key[:2], *REFERENCE)
        figure["psnr_vs_fp32_db"] = None
        if key[2:] != REFERENCE and not figure["projected"] and reference in videos:
            figure["psnr_vs_fp32_db"] = psnr(np.load(videos[reference]), np.load(videos[key]))


def describe_video(figure: dict[str, Any]) -> str:
    """One line of the summary for a :func:`project` figure."""
    projected = f" (UNet projected from {figure['measured_steps']} measured steps)" if figure["projected"] else ""
    return (f"{figure['variant']} {figure['sampler']} {figure['steps']} steps, {figure['backend']} "
            f"{figure['precision']}: {figure['end_to_end_s']:.0f} s = text {figure['text_s']:.1f} + UNet "
            f"{figure['unet_s']:.0f} (first call {figure['unet_first_call_s']:.1f} s, then "
            f"{figure['unet_call_s']:.1f} s "
            f"a call of batch {figure['unet_batch']}, {figure['unet_gflops_per_s']:.0f} GFLOP/s) + VAE "
            f"{figure['vae_s']:.0f} ({figure['vae_gflops_per_s']:.0f} GFLOP/s) + "
            f"opening/freeing {figure['switch_s']:.0f} + numpy {figure['outside_graphs_s']:.2f}; peak RSS "
            f"{figure['peak_rss_bytes'] / 2**30:.2f} GiB{projected}")
