"""AiT entries of ``python -m benchmarks``: components, the decoder with and without the KV cache, end to end.

The torch baseline is the export package's modules (same variant, seeded random
weights: timings do not depend on the values) run eagerly on the same inputs, in the
same process, right after the runtime. The cache figure times, at every step of the
token sequence, the runtime's ``decoder_step`` graph with a self-attention cache of that
past length against torch's uncached ``decode_full`` over the whole prefix (what a
decoder without a cache recomputes), plus torch's own cached ``decode_step`` so the
cache's effect can be read within one backend too.
torch and export are imported inside the functions: ``import runtime`` stays torch-free.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.ait.constants import DepthConstants, task_of
from runtime.ait.depth import DepthPipeline, window_starts
from benchmarks.measure import FamilyReport, Row, graph_flops, measure, time_graphs
from runtime.bundle import Bundle
from runtime.backends import open_session

FAMILY = "ait"
_COMPONENTS = ("image_encoder", "decoder_step", "vqvae_soft_decoder")


def _shape_text(feeds: dict[str, np.ndarray], names=None) -> str:
    return " ".join(f"{k}{list(v.shape)}" for k, v in feeds.items() if names is None or k in names)


def _gflop(bundle: Bundle, name: str, feeds: dict[str, np.ndarray]) -> float:
    return graph_flops(bundle.component_path(name), {k: v.shape for k, v in feeds.items()}).flops / 1e9


def _component_rows(bundle: Bundle, plan, repeats: int) -> list[Row]:
    """One row per component at the export's example shapes (batch 2; decoder step at past length 3)."""
    rows = []
    for spec, feeds, _ in plan:
        if spec.name not in _COMPONENTS:
            continue
        session = open_session(bundle, spec.name)
        timing = measure(lambda: session.run(feeds), repeats)
        torch_time = measure(lambda: spec.run_torch(feeds), repeats)
        shown = ("token_embedding", "self_k") if spec.name == "decoder_step" else None
        rows.append(Row(FAMILY, bundle.manifest.variant, spec.name, _shape_text(feeds, shown), "onnxruntime",
                        timing.median_s * 1e3, torch_time.median_s * 1e3, _gflop(bundle, spec.name, feeds),
                        timing.peak_mb, torch_time.peak_mb))
    return rows


def _cache_scaling(bundle: Bundle, modules, step_feeds: dict[str, np.ndarray], repeats: int
                   ) -> tuple[list[Row], dict, dict]:
    """Per step s of the sequence: ORT cached step (past s) vs torch uncached prefix (s + 1) vs torch cached step.

    Median of at least 7 runs per point (each is sub-millisecond at the tiny preset).
    """
    import torch

    transformer = modules["transformer"]
    repeats = max(repeats, 7)  # sub-millisecond calls: more runs for a steadier median, still cheap
    session = open_session(bundle, "decoder_step")
    steps = DepthConstants.of(bundle).token_length
    cross_k, cross_v = step_feeds["cross_k"], step_feeds["cross_v"]
    layers, batch, heads, _, head_dim = step_feeds["self_k"].shape
    d_model = step_feeds["token_embedding"].shape[-1]
    rng = np.random.default_rng(0)
    tk, tv = torch.from_numpy(cross_k), torch.from_numpy(cross_v)
    per_step = {"step": [], "ort_cached_ms": [], "torch_cached_ms": [], "torch_uncached_prefix_ms": []}
    with torch.inference_mode():
        for s in range(steps):
            cache = (layers, batch, heads, s, head_dim)
            feeds = {"token_embedding": rng.standard_normal((batch, 1, d_model), dtype=np.float32),
                     "step_index": np.array([s], np.int64),
                     "self_k": rng.standard_normal(cache, dtype=np.float32),
                     "self_v": rng.standard_normal(cache, dtype=np.float32), "cross_k": cross_k, "cross_v": cross_v}
            targs = [torch.from_numpy(feeds[n]) for n in ("token_embedding", "step_index", "self_k", "self_v")]
            prefix = torch.from_numpy(rng.standard_normal((batch, s + 1, d_model), dtype=np.float32))
            ort_t = measure(lambda: session.run(feeds), repeats)
            cached_t = measure(lambda: transformer.decode_step(*targs, tk, tv), repeats)
            full_t = measure(lambda: transformer.decode_full(prefix, tk, tv), repeats)
            per_step["step"].append(s)
            per_step["ort_cached_ms"].append(ort_t.median_s * 1e3)
            per_step["torch_cached_ms"].append(cached_t.median_s * 1e3)
            per_step["torch_uncached_prefix_ms"].append(full_t.median_s * 1e3)
    # The step graph's FLOPs are affine in the past length (attention over s keys): two counts give all steps.
    flops_at = {}
    for s in (0, steps - 1):
        shapes = {**step_feeds, "self_k": np.empty((layers, batch, heads, s, head_dim), np.float32)}
        shapes["self_v"] = shapes["self_k"]
        flops_at[s] = _gflop(bundle, "decoder_step", shapes)
    slope = (flops_at[steps - 1] - flops_at[0]) / max(steps - 1, 1)
    gflop = [flops_at[0] + slope * s for s in range(steps)]
    variant = bundle.manifest.variant
    rows = []
    for s in sorted({0, steps // 2, steps - 1}):
        rows.append(Row(FAMILY, variant, f"decoder step {s}: ORT cached vs torch uncached",
                        f"B{batch} past {s} / prefix {s + 1}", "onnxruntime", per_step["ort_cached_ms"][s],
                        per_step["torch_uncached_prefix_ms"][s], gflop[s], curve="per step", x=s))
    totals = {k: float(sum(v)) for k, v in per_step.items() if k != "step"}
    rows.append(Row(FAMILY, variant, f"decoder, {steps} steps: ORT cached vs torch uncached",
                    f"B{batch} T{steps}", "onnxruntime", totals["ort_cached_ms"], totals["torch_uncached_prefix_ms"],
                    float(sum(gflop))))
    rows.append(Row(FAMILY, variant, f"decoder, {steps} steps: torch cached vs torch uncached",
                    f"B{batch} T{steps}", "torch", totals["torch_cached_ms"], totals["torch_uncached_prefix_ms"]))
    figure = {"bundle": variant, "batch": batch, "steps": steps, "per_step": per_step,
              "totals_ms": totals, "decoder_step_gflop": gflop,
              "uncached_over_cached_torch": totals["torch_uncached_prefix_ms"] / totals["torch_cached_ms"],
              "uncached_torch_over_cached_ort": totals["torch_uncached_prefix_ms"] / totals["ort_cached_ms"]}
    plot = {"file": f"bench_{FAMILY}_{variant}_decoder_steps.svg",
            "title": f"{FAMILY} {variant}: decoder latency per step (B{batch})", "x_label": "step",
            "y_label": "ms", "series": {
                "ort cached": list(zip(per_step["step"], per_step["ort_cached_ms"])),
                "torch cached": list(zip(per_step["step"], per_step["torch_cached_ms"])),
                "torch uncached": list(zip(per_step["step"], per_step["torch_uncached_prefix_ms"]))}}
    return rows, figure, plot


def _test_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 120, 3), dtype=np.uint8)


def _torch_solve(modules, steps: int):
    """``DepthPipeline.solve`` with the torch modules: backbone -> forward_depth (cached loop) -> soft decode."""
    import torch

    from export.ait.graphs import VQVAESoftDecoder

    backbone, transformer = modules["backbone"], modules["transformer"]
    decoder = VQVAESoftDecoder(modules["vqvae"]).eval()

    def solve(images: np.ndarray, *, soft: bool = True, progress: bool = False) -> np.ndarray:
        with torch.inference_mode():
            logits, _ = transformer.forward_depth(backbone(torch.from_numpy(images))[-1], steps, soft=True)
            return decoder(logits).numpy()

    return solve


def _end_to_end(bundle: Bundle, modules, repeats: int) -> tuple[Row, dict]:
    """estimate_depth (TTA windows + flips, soft) on the runtime vs the same code path with torch graphs."""
    pipeline = DepthPipeline(bundle, backend="onnxruntime")
    c = pipeline.constants
    image = _test_image()
    torch_pipeline = DepthPipeline(bundle, backend="onnxruntime")
    torch_pipeline.solve = _torch_solve(modules, c.token_length)  # same numpy pre/post, torch graphs
    runtime_time = measure(lambda: pipeline.estimate(image, progress=False), repeats)
    torch_time = measure(lambda: torch_pipeline.estimate(image, progress=False), repeats)

    h, w = c.test_size
    windows = len(window_starts(w, h, c.shift_size)) * (2 if c.flip_test else 1)
    size, steps = c.image_size, c.token_length
    dec = c.decoder
    k_depth = c.vocabulary.depth_slice[1] - c.vocabulary.depth_slice[0]
    image_feeds = {"image": np.empty((windows, 3, size, size), np.float32)}
    cross = np.empty((dec.layers, windows, dec.heads, c.feature_side ** 2, dec.head_dim), np.float32)
    step_gflop = []
    for s in (0, steps - 1):
        cache = np.empty((dec.layers, windows, dec.heads, s, dec.head_dim), np.float32)
        step_gflop.append(_gflop(bundle, "decoder_step", {
            "token_embedding": np.empty((windows, 1, dec.d_model), np.float32),
            "step_index": np.empty((1,), np.int64), "self_k": cache, "self_v": cache, "cross_k": cross,
            "cross_v": cross}))
    total_gflop = (_gflop(bundle, "image_encoder", image_feeds) + steps * (step_gflop[0] + step_gflop[1]) / 2
                   + _gflop(bundle, "vqvae_soft_decoder",
                            {"code_logits": np.empty((windows, steps, k_depth), np.float32)}))
    row = Row(FAMILY, bundle.manifest.variant, f"estimate_depth (TTA {windows} windows, {steps} steps)",
              f"{image.shape[0]}x{image.shape[1]} -> {h}x{w}", "onnxruntime", runtime_time.median_s * 1e3,
              torch_time.median_s * 1e3, total_gflop, runtime_time.peak_mb, torch_time.peak_mb)

    breakdown = {"bundle": bundle.manifest.variant,
                 **time_graphs(pipeline, lambda: pipeline.estimate(image, progress=False))}
    return row, breakdown


def bench(bundles: list[Path], *, quick: bool, repeats: int) -> FamilyReport:
    """Benchmark every AiT bundle given (tiny presets only with ``quick``)."""
    import torch

    from export.ait.bundle import build_modules
    from export.ait.graphs import component_specs
    from export.ait.presets import variant

    report = FamilyReport()
    report.figures["torch_threads"] = torch.get_num_threads()
    report.notes.append("ait torch baseline: export's modules of the same variant, seeded random weights, eager; "
                        "end to end runs the runtime's own numpy TTA code with its solve() swapped for torch "
                        "(backbone, forward_depth's cached loop, soft VQVAE decode)")
    caches, breakdowns = [], []
    for path in bundles:
        bundle = Bundle(path)
        if task_of(bundle) != "depth":
            report.notes.append(f"skipped {path} ({bundle.manifest.variant}): only AiT depth bundles are benchmarked")
            continue
        if quick and not bundle.manifest.variant.startswith("tiny"):
            report.notes.append(f"skipped {path} ({bundle.manifest.variant}): --quick runs the tiny presets only")
            continue
        config = variant(bundle.manifest.variant)
        modules = build_modules(config, None, trust=False, seed=0)
        (solver,) = component_specs(config)
        plan = solver.plan(modules)
        with torch.inference_mode():
            report.rows += _component_rows(bundle, plan, repeats)
        step_feeds = next(feeds for spec, feeds, _ in plan if spec.name == "decoder_step")
        rows, figure, plot = _cache_scaling(bundle, modules, step_feeds, repeats)
        report.rows += rows
        report.plots.append(plot)
        caches.append(figure)
        t = figure["totals_ms"]
        report.notes.append(
            f"ait {figure['bundle']}: decoder over {figure['steps']} steps (B{figure['batch']}): ORT cached "
            f"{t['ort_cached_ms']:.1f} ms, torch cached {t['torch_cached_ms']:.1f} ms, torch uncached prefix "
            f"recomputation {t['torch_uncached_prefix_ms']:.1f} ms ({figure['uncached_over_cached_torch']:.2f}x "
            "torch cached)")
        row, breakdown = _end_to_end(bundle, modules, repeats)
        report.rows.append(row)
        breakdowns.append(breakdown)
        graphs = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in breakdown["graph_s"].items())
        report.notes.append(f"ait {breakdown['bundle']}: estimate_depth {breakdown['end_to_end_s'] * 1e3:.1f} ms = "
                            f"graphs ({graphs}) + outside graphs (numpy AR loop, TTA, resize) "
                            f"{breakdown['outside_graphs_s'] * 1e3:.1f} ms ({breakdown['outside_graphs_share']:.1%})")
    report.figures["decoder_cache"] = caches
    report.figures["estimate_depth_breakdown"] = breakdowns
    return report


def bench_released(*, repeats: int, log=print, config=None) -> FamilyReport:
    """swinv2b_480reso_depthonly (or ``config``) at batch 1: the image encoder (Swin V2-B + encoder) on a
    480x480 image and the decoder step at the first, middle and last past length (0, 112, 224 of 225 tokens)."""
    import torch

    from benchmarks.released import Item, cached_bundle, item_rows
    from export.ait.bundle import build_modules, export_bundle
    from export.ait.graphs import component_specs
    from export.ait.presets import swinv2b_480reso_depthonly

    config = config or swinv2b_480reso_depthonly()
    bundle = cached_bundle(f"{FAMILY}-{config.name}", lambda out: export_bundle(config, out, log=log), log)
    modules = build_modules(config, None, trust=False, seed=0)
    (solver,) = component_specs(config)
    plan = {spec.name: (spec, feeds) for spec, feeds, _ in solver.plan(modules)}
    report = FamilyReport()
    report.notes.append(f"ait released: {config.name} with seeded random weights (seed 0, as exported); "
                        "export's example inputs at batch 1, decoder caches random")
    encoder, image_feeds = plan["image_encoder"]
    items = [Item("image_encoder", "image encoder (Swin V2-B + encoder)", {"image": image_feeds["image"][:1]},
                  encoder.run_torch)]
    step, step_feeds = plan["decoder_step"]
    rng = np.random.default_rng(0)
    last = config.token_length - 1
    for past in sorted({0, last // 2, last}):
        layers, _, heads, _, head_dim = step_feeds["self_k"].shape
        cache = (layers, 1, heads, past, head_dim)
        feeds = {"token_embedding": step_feeds["token_embedding"][:1], "step_index": np.array([past], np.int64),
                 "self_k": rng.standard_normal(cache, dtype=np.float32),
                 "self_v": rng.standard_normal(cache, dtype=np.float32),
                 "cross_k": step_feeds["cross_k"][:, :1], "cross_v": step_feeds["cross_v"][:, :1]}
        items.append(Item("decoder_step", f"decoder step, past {past}", feeds, step.run_torch,
                          shown=("token_embedding", "self_k")))
    with torch.inference_mode():
        for item in items:
            report.rows += item_rows(FAMILY, bundle, item, repeats, log)
    return report
