"""VideoCrafter1 entries of ``python -m benchmarks``: components, scaling of the UNet step, end to end.

The torch baseline is the export package's modules (the same architecture as the
bundle's variant, seeded random weights: timings do not depend on the values)
run eagerly on the same inputs, in the same process, right after the runtime.
torch and export are imported inside the functions: ``import runtime`` stays torch-free.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks import samplers
from benchmarks.measure import FamilyReport, Row, graph_flops, measure, time_graphs
from runtime.bundle import Bundle
from runtime.videocrafter1.sampling import denoise
from runtime.backends import open_session
from runtime.videocrafter1 import VideoPipeline
from runtime.videocrafter1.constants import VideoConstants

FAMILY = "videocrafter1"
PROMPT = "a corgi running on the beach"
UNET_FRAMES = (8, 16, 24)


def _variant_config(bundle: Bundle):
    from export.videocrafter1.presets import released_variants, tiny_variants

    variants = {**released_variants(), **tiny_variants()}
    name = bundle.manifest.variant
    if name not in variants:
        raise ValueError(f"{bundle.root}: variant {name!r} has no preset for the torch baseline; "
                         f"expected one of {', '.join(sorted(variants))}")
    return variants[name]


def _pipeline_feeds(plan) -> dict[str, dict[str, np.ndarray]]:
    """The export's example inputs, cut to what one pipeline call feeds (VAE and image graphs: one frame/image)."""
    feeds = {spec.name: dict(example) for spec, example, _ in plan}
    for name in ("vae_decoder", "vae_encoder", "image_encoder", "image_proj"):
        if name in feeds:
            feeds[name] = {k: v[:1] for k, v in feeds[name].items()}
    return feeds


def _shape_text(feeds: dict[str, np.ndarray]) -> str:
    return " ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())


def _backends(bundle: Bundle, name: str) -> list[str]:
    from runtime.backends.trt import has_engine_for, local_target

    local = local_target()
    with_trt = local is not None and has_engine_for(bundle.component(name), local)
    return ["onnxruntime", "tensorrt"] if with_trt else ["onnxruntime"]


def _component_rows(bundle: Bundle, plan, repeats: int) -> tuple[list[Row], dict[str, float]]:
    """One row per component and backend; also the GFLOP of each component at the pipeline's shapes."""
    rows, gflop = [], {}
    specs = {spec.name: spec for spec, _, _ in plan}
    for name, feeds in _pipeline_feeds(plan).items():
        count = graph_flops(bundle.component_path(name), {k: v.shape for k, v in feeds.items()})
        gflop[name] = count.flops / 1e9
        torch_time = measure(lambda: specs[name].run_torch(feeds), repeats)
        for backend in _backends(bundle, name):
            session = open_session(bundle, name, backend=backend)
            timing = measure(lambda: session.run(feeds), repeats)
            rows.append(Row(FAMILY, bundle.manifest.variant, name, _shape_text(feeds), backend,
                            timing.median_s * 1e3, torch_time.median_s * 1e3, gflop[name], timing.peak_mb,
                            torch_time.peak_mb))
    return rows, gflop


def _unet_scaling_rows(bundle: Bundle, config, unet_spec, context_length: int, repeats: int,
                       quick: bool) -> list[Row]:
    """The UNet step (guided batch of 2) at 8/16/24 frames and two latent sizes of the profile.

    The sizes are the default and the largest, or with ``quick`` the smallest and the default.
    """
    from export.videocrafter1.graphs import example_unet_inputs

    session = open_session(bundle, "unet")
    profile = bundle.component("unet").profile["x"]
    sizes = sorted({profile["min" if quick else "opt"][3], profile["opt" if quick else "max"][3]})
    rows = []
    for size in sizes:
        for frames in (f for f in UNET_FRAMES if profile["min"][2] <= f <= profile["max"][2]):
            feeds = example_unet_inputs(config.unet, batch=2, frames=frames, height=size, width=size,
                                        context_length=context_length)
            count = graph_flops(bundle.component_path("unet"), {k: v.shape for k, v in feeds.items()})
            timing = measure(lambda: session.run(feeds), repeats)
            torch_time = measure(lambda: unet_spec.run_torch(feeds), repeats)
            rows.append(Row(FAMILY, bundle.manifest.variant, f"unet step, latent {size}x{size}",
                            _shape_text({"x": feeds["x"]}), "onnxruntime", timing.median_s * 1e3,
                            torch_time.median_s * 1e3, count.flops / 1e9, timing.peak_mb, torch_time.peak_mb,
                            curve=f"latent {size}", x=frames))
    return rows


def _test_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 80, 3), dtype=np.uint8)


def _end_to_end(bundle: Bundle, config, gflop: dict[str, float], steps: int, repeats: int) -> tuple[Row, dict]:
    """generate_video against the torch pipeline, plus where the runtime's time goes."""
    import torch

    from export.videocrafter1.bundle import build_modules
    from export.videocrafter1.reference_pipeline import generate_video_torch

    pipeline = VideoPipeline(bundle, backend="onnxruntime")
    c = pipeline.constants
    image = _test_image() if pipeline.is_i2v else None
    args = dict(steps=steps, guidance_scale=c.sampling.guidance_scale, eta=c.sampling.eta, seed=0,
                frames=c.frames, height=c.height, width=c.width)
    modules = build_modules(config, None, trust=False, seed=0)
    runtime_time = measure(lambda: pipeline.generate(PROMPT, image=image, progress=False, **args), repeats)
    with torch.inference_mode():
        torch_time = measure(lambda: generate_video_torch(modules, c, PROMPT, image_rgb=image, **args), repeats)

    unet_calls = len(pipeline.make_sampler("ddim", steps, args["eta"], np.random.default_rng(0)).timesteps)
    total_gflop = (gflop["text_encoder"] + unet_calls * gflop["unet"] + c.frames * gflop["vae_decoder"]
                   + (gflop["image_encoder"] + gflop["image_proj"] if pipeline.is_i2v else 0.0))
    row = Row(FAMILY, bundle.manifest.variant, f"generate_video ({unet_calls} steps)",
              f"{c.frames}x{c.height}x{c.width}", "onnxruntime", runtime_time.median_s * 1e3,
              torch_time.median_s * 1e3, total_gflop, runtime_time.peak_mb, torch_time.peak_mb)

    breakdown = {"bundle": bundle.manifest.variant,
                 **time_graphs(pipeline, lambda: pipeline.generate(PROMPT, image=image, progress=False, **args))}
    negatives = [c.uncond_prompt] if args["guidance_scale"] != 1.0 else None
    context, uncond = pipeline.conditioning([PROMPT], negatives, image, c.height, c.width)
    predict = pipeline.predictor(context, uncond, c.fps)
    rng = np.random.default_rng(0)
    x_T = rng.standard_normal(pipeline.latent_shape(1, c.frames, c.height, c.width), dtype=np.float32)
    sampler = pipeline.make_sampler("ddim", steps, args["eta"], rng)
    sampling = time_graphs(pipeline, lambda: denoise(predict, x_T, sampler, guidance_scale=args["guidance_scale"]))
    breakdown.update(sampler_s=sampling["end_to_end_s"], sampler_unet_s=sampling["graph_s"].get("unet", 0.0),
                     sampler_numpy_s=sampling["outside_graphs_s"],
                     sampler_numpy_share=sampling["outside_graphs_share"])
    return row, breakdown


def bench(bundles: list[Path], *, quick: bool, repeats: int) -> FamilyReport:
    """Benchmark every VideoCrafter1 bundle given (tiny presets only with ``quick``)."""
    import torch

    from export.videocrafter1.bundle import build_modules
    from export.videocrafter1.graphs import component_specs

    report = FamilyReport()
    report.figures["torch_threads"] = torch.get_num_threads()
    report.notes.append("torch baseline: export's modules of the same variant, seeded random weights, eager, "
                        "torch.inference_mode for end to end; its sampler runs the two guidance branches "
                        "as two UNet calls, the runtime as one batch of 2")
    breakdowns = []
    opened = sorted((Bundle(path) for path in bundles), key=lambda b: VideoConstants.of(b).mode == "i2v")
    for bundle in opened:
        path = bundle.root
        if quick and not bundle.manifest.variant.startswith("tiny"):
            report.notes.append(f"skipped {path} ({bundle.manifest.variant}): --quick runs the tiny presets only")
            continue
        config = _variant_config(bundle)
        modules = build_modules(config, None, trust=False, seed=0)
        plan = [example for component in component_specs(config)
                for example in component.plan(modules[component.name])]
        with torch.inference_mode():
            rows, gflop = _component_rows(bundle, plan, repeats)
            report.rows += rows
            unet_spec, unet_feeds, _ = next(p for p in plan if p[0].name == "unet")
            if not report.plots:  # the scaling curves of the first bundle (the T2V one when both are there)
                scaling = _unet_scaling_rows(bundle, config, unet_spec, unet_feeds["context"].shape[1], repeats,
                                             quick)
                report.rows += scaling
                report.plots += _scaling_plots(bundle.manifest.variant, scaling)
        constants = VideoConstants.of(bundle)
        row, breakdown = _end_to_end(bundle, config, gflop, 2 if quick else constants.sampling.steps,
                                     repeats)
        report.rows.append(row)
        breakdowns.append(breakdown)
        if constants.mode != "i2v" and "sampler_convergence" not in report.figures:
            report.figures["sampler_convergence"] = _sampler_convergence(bundle, report, repeats)
    report.figures["end_to_end_breakdown"] = breakdowns
    return report


def _sampler_convergence(bundle: Bundle, report: FamilyReport, repeats: int) -> dict:
    """The samplers' convergence report on a T2V bundle: figures, table rows and the plot."""
    with VideoPipeline(bundle, backend="onnxruntime") as pipeline:
        found = samplers.convergence(pipeline, PROMPT, repeats=repeats)
    variant = bundle.manifest.variant
    report.rows += samplers.rows(variant, found)
    report.plots.append(samplers.plot(variant, found))
    return {"bundle": variant, **found}


def _scaling_plots(variant: str, rows: list[Row]) -> list[dict]:
    """Latency against frames: runtime and torch per latent size."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        series.setdefault(f"ort {row.curve}", []).append((row.x, row.runtime_ms))
        series.setdefault(f"torch {row.curve}", []).append((row.x, row.torch_ms))
    return [{"file": f"bench_{FAMILY}_{variant}_unet_frames.svg",
             "title": f"{FAMILY} {variant}: UNet step (batch 2) vs frames",
             "x_label": "frames", "y_label": "ms", "series": series}]


RELEASED_UNET_FRAMES = 2  # a released UNet step at 16 frames takes minutes on a 2-core CPU
RELEASED_CALIBRATION_STEPS = 4  # DDIM steps per calibration sample: 4 UNet records (both branches) per sample
RELEASED_VARIANTS = ("t2v-512", "i2v-512")
# Graphs also timed as INT8, per mode: their Q/DQ graph is calibrated on 6 recorded samples of 4 DDIM steps at
# RELEASED_UNET_FRAMES frames, and they run on the first held-out record (an input the ranges did not see).
RELEASED_INT8 = {"t2v": ("unet",), "i2v": ()}
# The graphs timed per mode, in pipeline order. I2V-512's text encoder and VAE are T2V-512's networks (same
# configs, same seeded weights, so the same graphs): the i2v variant times what it adds or changes.
RELEASED_GRAPHS = {"t2v": ("text_encoder", "unet", "vae_decoder"), "i2v": ("image_encoder", "image_proj", "unet")}
_RELEASED_LABELS = {"text_encoder": "text encoder", "unet": f"UNet step, {RELEASED_UNET_FRAMES} frames",
                    "vae_decoder": "VAE decoder, one frame", "image_encoder": "image encoder, one image",
                    "image_proj": "image projection (Resampler)"}


PEAK_MEMORY_STEPS = 2  # DDIM steps of the peak-memory generate (each: both guidance branches through the UNet)


def peak_memory_rows(bundle: Bundle, log=print) -> tuple[list[Row], list[dict]]:
    """``generate`` at ``RELEASED_UNET_FRAMES`` frames, the variant's size and ``PEAK_MEMORY_STEPS`` steps with
    guidance, in a fresh process per backend (ONNX Runtime, OpenVINO FP32 when installed) and memory mode:
    one row each (the process's peak RSS in the peak column) and the child's figures."""
    from benchmarks.peak_memory import describe, run_child
    from runtime.backends.base import MEMORY_MODES, backend_class

    backends = ["onnxruntime"] + (["openvino"] if backend_class("openvino").usable(bundle, "unet", {}) else [])
    rows, figures = [], []
    for backend in backends:
        for memory in MEMORY_MODES:
            found = run_child(bundle.root, prompt=PROMPT, memory=memory, backend=backend, frames=RELEASED_UNET_FRAMES,
                              steps=PEAK_MEMORY_STEPS)
            log(f"  {describe(found)}")
            figures.append(found)
            rows.append(Row(FAMILY, found["bundle"], f"generate_video, memory={memory} (process peak RSS)",
                            f"{found['frames']}x{found['height']}x{found['width']}, {found['steps']} steps, "
                            f"UNet batch {found['unet_batch']}", backend, found["end_to_end_s"] * 1e3,
                            runtime_peak_mb=found["peak_rss_bytes"] / 2**20, precision=found["precision"]))
    return rows, figures


def bench_released(*, repeats: int, log=print, config=None) -> FamilyReport:
    """t2v-512 then i2v-512 (or only ``config``). T2V first measures the peak memory of ``generate`` in both
    memory modes (:func:`peak_memory_rows`, before this process holds any weights); then each variant at
    batch 1, one graph at a time (:data:`RELEASED_GRAPHS`):
    the text encoder on the prompt and the empty prompt, one UNet step at the variant's latent size but 2
    frames (I2V: its context of 77 text + image tokens, and fps), the VAE decoder on one frame (as the
    pipeline decodes), the image encoder on one 224x224 image and the Resampler on its tokens."""
    from export.videocrafter1.presets import released_variants

    report = FamilyReport()
    for variant in [config] if config else [released_variants()[name] for name in RELEASED_VARIANTS]:
        _bench_released_variant(variant, report, repeats, log)
    return report


def _bench_released_variant(config, report: FamilyReport, repeats: int, log) -> None:
    """The rows of one variant into ``report``; its bundle exported into the cache first when missing."""
    import gc

    import torch

    from benchmarks.released import cached_bundle, calibrated, heldout_feeds, item_rows
    from export.videocrafter1.bundle import export_bundle

    bundle = cached_bundle(f"{FAMILY}-{config.name}", lambda out: export_bundle(config, out, log=log), log)
    if config.mode == "t2v":  # each child opens the bundle's graphs alone, while this process holds no weights
        rows, report.figures["peak_memory"] = peak_memory_rows(bundle, log)
        report.rows += rows
        report.notes.append(f"videocrafter1 peak memory: generate_video in a fresh process per backend and memory "
                            f"mode ({RELEASED_UNET_FRAMES} frames, {PEAK_MEMORY_STEPS} DDIM steps, guidance on); its "
                            "'rt peak MB' is the process's VmHWM (not a rise), 'runtime ms' the generate call")
    report.notes.append(f"videocrafter1 released: {config.name} with seeded random weights (seed 0, as exported); "
                        f"UNet step at {RELEASED_UNET_FRAMES} frames instead of {config.frames}")
    int8 = RELEASED_INT8[config.mode]
    if int8:
        bundle = calibrated(bundle, list(int8), log, steps=RELEASED_CALIBRATION_STEPS, frames=RELEASED_UNET_FRAMES)
        report.notes.append(f"videocrafter1 released: {config.name} {', '.join(int8)} on a held-out calibration "
                            "record, also as INT8")
    for name in RELEASED_GRAPHS[config.mode]:
        item = _released_item(config, name, heldout_feeds(bundle, name) if name in int8 else None)
        with torch.inference_mode():
            report.rows += item_rows(FAMILY, bundle, item, repeats, log)
        del item  # one component's torch weights in memory at a time
        gc.collect()


def _released_item(config, name: str, recorded: dict | None = None):
    """The :class:`~benchmarks.released.Item` of graph ``name``: its torch module (seeded as the export
    seeds it) on ``recorded`` feeds, or else the export's example inputs at the opt shape, cut to batch 1
    (the text encoder keeps the prompt and the empty prompt; the UNet step runs :data:`RELEASED_UNET_FRAMES`
    frames)."""
    from benchmarks.released import Item
    from export.videocrafter1.bundle import build_component
    from export.videocrafter1.graphs import component_spec, example_unet_inputs

    component = "vae" if name == "vae_decoder" else name
    module = build_component(config, component, None, seed=0)
    spec, feeds = next((spec, feeds) for spec, feeds, _ in component_spec(config, component).plan(module)
                       if spec.name == name)
    if recorded is not None:
        return Item(name, _RELEASED_LABELS[name], recorded, spec.run_torch,
                    shown=("x", "context") if name == "unet" else None)
    if name == "unet":
        f = config.vae_factor
        feeds = example_unet_inputs(config.unet, batch=1, frames=RELEASED_UNET_FRAMES, height=config.height // f,
                                    width=config.width // f, context_length=feeds["context"].shape[1])
        return Item(name, _RELEASED_LABELS[name], feeds, spec.run_torch, shown=("x", "context"))
    if name != "text_encoder":
        feeds = {k: v[:1] for k, v in feeds.items()}
    return Item(name, _RELEASED_LABELS[name], feeds, spec.run_torch)


def bench_video(*, log=print) -> FamilyReport:
    """Whole 16-frame videos at released size (:mod:`benchmarks.video`); each variant's bundle exported into the
    cache first when missing."""
    from benchmarks.released import cached_bundle
    from benchmarks.video import MEMORY, video_rows
    from export.videocrafter1.bundle import export_bundle
    from export.videocrafter1.presets import released_variants

    variants = released_variants()

    def bundle(name: str) -> Bundle:
        return cached_bundle(f"{FAMILY}-{name}", lambda out: export_bundle(variants[name], out, log=log), log)

    report = FamilyReport()
    report.rows, report.figures["whole_video"] = video_rows(bundle, log=log)
    report.notes.append(f"videocrafter1 whole video: one 16-frame video per measurement in a fresh process, "
                        f"memory={MEMORY}; 'runtime ms' is the generate call, 'rt peak MB' the process's peak RSS "
                        "(VmHWM, not a rise); rows marked projected add the UNet calls not made at the measured "
                        "per-call time after the first")
    return report
