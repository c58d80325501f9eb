"""Build the released-size VideoCrafter1 UNet with random weights, export it to ONNX, report time and memory.

    python benchmarks/export_released_unet.py [--variant t2v-512] [--batch 1] [--frames 4] [--out /tmp/unet-released]
        [--check]   # also run torch and the graph once under ONNX Runtime (needs about 2x more memory)

Prints wall time per phase and the process's peak resident memory (ru_maxrss), and
the graph and external-data sizes. Batch, frames and latent size are symbolic in the
graph, so the traced shape (default: batch 1, 4 frames, the variant's latent size)
only sets the cost of the one traced forward; on a 2-core CPU a forward at the
bundle's opt shape (batch 2 x 16 frames) takes many minutes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from export.graphs import compare_outputs
from export.onnx_io import export_onnx, run_onnx
from export.phases import peak_rss_gib as peak_gib
from export.random_init import randomize_
from export.videocrafter1 import components as vc
from export.videocrafter1.presets import released_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="t2v-512", choices=sorted(released_variants()))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("/tmp/unet-released"))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    config = released_variants()[args.variant]
    figures: dict[str, float | int | str] = {"variant": args.variant, "batch": args.batch, "frames": args.frames}

    start = time.perf_counter()
    unet = randomize_(vc.build_unet(config.unet), seed=0).eval()
    figures["params"] = sum(p.numel() for p in unet.parameters())
    figures["build_s"] = round(time.perf_counter() - start, 1)
    figures["peak_after_build_gib"] = round(peak_gib(), 2)
    print(f"built {figures['params']:,} parameters in {figures['build_s']} s, peak {figures['peak_after_build_gib']} GiB",
          flush=True)

    f = config.vae_factor
    feeds = vc.example_unet_inputs(config.unet, batch=args.batch, frames=args.frames, height=config.height // f,
                                   width=config.width // f, context_length=77)
    spec = vc.unet_spec(unet, bool(config.unet.get("fps_cond")))
    start = time.perf_counter()
    path = export_onnx(spec.module, [torch.from_numpy(feeds[n]) for n in spec.inputs], args.out / "unet.onnx",
                       input_names=spec.inputs, output_names=spec.outputs, dynamic_axes=spec.dynamic_axes)
    figures["export_s"] = round(time.perf_counter() - start, 1)
    figures["peak_after_export_gib"] = round(peak_gib(), 2)
    figures["graph_mib"] = round(path.stat().st_size / 1024**2, 1)
    data = path.with_name(path.name + ".data")
    figures["external_data_gib"] = round(data.stat().st_size / 1024**3, 2) if data.exists() else 0.0
    print(f"exported in {figures['export_s']} s, peak {figures['peak_after_export_gib']} GiB, graph "
          f"{figures['graph_mib']} MiB + external data {figures['external_data_gib']} GiB", flush=True)

    if args.check:
        start = time.perf_counter()
        reference = spec.run_torch(feeds)
        figures["torch_step_s"] = round(time.perf_counter() - start, 1)
        graph_feeds = {n: feeds[n] for n in spec.inputs}
        del unet, spec
        start = time.perf_counter()
        found = run_onnx(path, graph_feeds)
        max_abs, cosine = compare_outputs(reference, found)
        figures.update(ort_step_s=round(time.perf_counter() - start, 1), ort_max_abs=max_abs, ort_cosine=cosine,
                       peak_after_check_gib=round(peak_gib(), 2))
        print(f"onnxruntime vs torch: max abs {max_abs:.2e}, cosine {cosine:.8f}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
