"""ImageBind entries of ``python -m benchmarks``: each modality encoder against batch size.

The torch baseline is the export package's encoder of the same preset (seeded random
weights: timings do not depend on the values) run eagerly on the same feeds, in the
same process, right after the runtime. Feeds are the export's seeded example inputs
(token ids for text) at batch 1, 2, 4, 8 (``quick``: 1, 4), within each graph's profile.
torch and export are imported inside the functions: ``import runtime`` stays torch-free.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.measure import FamilyReport, Row, graph_flops, measure
from runtime.bundle import Bundle
from runtime.backends import open_session
from runtime.imagebind.constants import ImageBindConstants

FAMILY = "imagebind"
BATCHES = {"quick": (1, 4), "full": (1, 2, 4, 8)}


def _preset(bundle: Bundle):
    from export.imagebind.presets import presets

    name = bundle.manifest.variant
    if name not in presets():
        raise ValueError(f"{bundle.root}: preset {name!r} has no torch baseline; expected one of "
                         f"{', '.join(sorted(presets()))}")
    return presets()[name]


def _modality_rows(bundle: Bundle, preset, modality: str, batches, repeats: int) -> list[Row]:
    """The modality's encoder graph vs its torch module at each batch size the graph's profile allows."""
    from export.imagebind.bundle import build_encoders
    from export.imagebind.graphs import encoder_graph, example_input

    spec_m = ImageBindConstants.of(bundle).modalities[modality]
    component = spec_m.component
    spec = encoder_graph(modality).spec(build_encoders(preset, [modality], seed=0)[modality])
    session = open_session(bundle, component)
    profile = bundle.component(component).profile.get(spec_m.input)
    largest = profile["max"][0] if profile else max(batches)
    rows = []
    for batch in (b for b in batches if b <= largest):
        feeds = {spec_m.input: example_input(modality, preset.config, batch=batch)}
        gflop = graph_flops(bundle.component_path(component), {k: v.shape for k, v in feeds.items()}).flops / 1e9
        timing = measure(lambda: session.run(feeds), repeats)
        torch_time = measure(lambda: spec.run_torch(feeds), repeats)
        rows.append(Row(FAMILY, bundle.manifest.variant, f"{component}, batch {batch}",
                        " ".join(f"{k}{list(v.shape)}" for k, v in feeds.items()), "onnxruntime",
                        timing.median_s * 1e3, torch_time.median_s * 1e3, gflop, timing.peak_mb, torch_time.peak_mb,
                        curve=modality, x=batch))
    return rows


def bench(bundles: list[Path], *, quick: bool, repeats: int) -> FamilyReport:
    """Benchmark every ImageBind bundle given (tiny preset only with ``quick``)."""
    import torch

    report = FamilyReport()
    report.figures["torch_threads"] = torch.get_num_threads()
    batches = BATCHES["quick" if quick else "full"]
    report.figures["batches"] = list(batches)
    report.notes.append("imagebind torch baseline: export's encoder of the same preset, seeded random weights, "
                        "eager under torch.inference_mode, on the same feeds (graph inputs, no preprocessing)")
    per_ms: dict[str, dict] = {}
    for path in bundles:
        bundle = Bundle(path)
        variant = bundle.manifest.variant
        if quick and not variant.startswith("tiny"):
            report.notes.append(f"skipped {path} ({variant}): --quick runs the tiny preset only")
            continue
        preset = _preset(bundle)
        for modality in ImageBindConstants.of(bundle).modalities:
            with torch.inference_mode():
                rows = _modality_rows(bundle, preset, modality, batches, repeats)
            report.rows += rows
            per_ms[f"{variant}/{modality}"] = {
                "batch": [r.x for r in rows], "runtime_ms": [r.runtime_ms for r in rows],
                "torch_ms": [r.torch_ms for r in rows],
                "runtime_ms_per_item": [r.runtime_ms / r.x for r in rows]}
            report.plots.append({
                "file": f"bench_{FAMILY}_{variant}_{modality}_batch.svg",
                "title": f"{FAMILY} {variant}: {modality} encoder vs batch", "x_label": "batch", "y_label": "ms",
                "series": {"ort": [(r.x, r.runtime_ms) for r in rows], "torch": [(r.x, r.torch_ms) for r in rows]}})
    report.figures["latency_vs_batch"] = per_ms
    return report


RELEASED_MODALITIES = ("vision", "text", "audio", "depth")


def bench_released(*, repeats: int, log=print, preset=None) -> FamilyReport:
    """imagebind_huge (or ``preset``), one call per modality on a held-out calibration input (audio: one
    file's 3 clips); the vision encoder also as INT8 (its Q/DQ graph from 6 recorded samples)."""
    import gc

    import torch

    from benchmarks.released import Item, cached_bundle, calibrated, heldout_feeds, item_rows
    from export.imagebind.bundle import build_encoders, export_bundle
    from export.imagebind.graphs import encoder_graph
    from export.imagebind.presets import imagebind_huge

    preset = preset or imagebind_huge()
    bundle = cached_bundle(f"{FAMILY}-{preset.name}", lambda out: export_bundle(
        preset, out, modalities=RELEASED_MODALITIES, log=log), log)
    bundle = calibrated(bundle, ["vision_encoder"], log)
    report = FamilyReport()
    report.notes.append(f"imagebind released: {preset.name} with seeded random weights (seed 0, as exported); inputs "
                        "are the first held-out calibration record of each encoder (samples/assets)")
    for modality in RELEASED_MODALITIES:
        component = ImageBindConstants.of(bundle).modalities[modality].component
        spec = encoder_graph(modality).spec(build_encoders(preset, [modality], seed=0)[modality])
        item = Item(component, f"{modality} encoder", heldout_feeds(bundle, component), spec.run_torch)
        with torch.inference_mode():
            report.rows += item_rows(FAMILY, bundle, item, repeats, log)
        del spec, item
        gc.collect()
    return report
