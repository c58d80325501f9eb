"""The AiT and ImageBind benchmark suites in quick mode on tiny bundles (figures present, finite, positive), and the
VideoCrafter sampler convergence report."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import benchmarks.__main__ as bench
from benchmarks.figures import line_plot
from benchmarks.measure import Row
from runtime.cpu import this_cpu
from runtime.families import FAMILIES


def _finite_positive(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _check_rows(rows: list[Row]) -> None:
    assert rows
    for row in rows:
        assert _finite_positive(row.runtime_ms), row
        if row.torch_ms is not None:
            assert _finite_positive(row.torch_ms) and _finite_positive(row.speedup), row
        if row.gflop is not None:
            assert _finite_positive(row.gflop) and _finite_positive(row.gflops_per_s), row


def test_every_family_has_a_suite():
    import importlib

    for family in FAMILIES:
        assert callable(importlib.import_module(f"benchmarks.{family}").bench), family


def test_ait_suite_quick(tmp_path):
    from benchmarks import ait as bench_ait

    bundles = bench.export_tiny("ait", tmp_path)
    report = bench_ait.bench(bundles, quick=True, repeats=1)
    _check_rows(report.rows)
    items = [r.item for r in report.rows]
    for name in ("image_encoder", "decoder_step", "vqvae_soft_decoder"):
        assert name in items
    assert any(i.startswith("estimate_depth") for i in items)
    assert any("steps: ORT cached vs torch uncached" in i for i in items)
    (cache,) = report.figures["decoder_cache"]
    steps = cache["steps"]
    for key in ("ort_cached_ms", "torch_cached_ms", "torch_uncached_prefix_ms"):
        assert len(cache["per_step"][key]) == steps and all(_finite_positive(v) for v in cache["per_step"][key])
        assert _finite_positive(cache["totals_ms"][key])
    (plot,) = report.plots
    assert set(plot["series"]) == {"ort cached", "torch cached", "torch uncached"}
    path = line_plot(tmp_path / plot["file"], plot["title"], plot["x_label"], plot["y_label"], plot["series"])
    assert path.stat().st_size > 0


def test_imagebind_suite_quick(tmp_path):
    from benchmarks import imagebind as bench_imagebind

    bundles = bench.export_tiny("imagebind", tmp_path)
    report = bench_imagebind.bench(bundles, quick=True, repeats=1)
    _check_rows(report.rows)
    modalities = ("vision", "text", "audio", "depth", "thermal", "imu")
    found = {(r.curve, r.x) for r in report.rows}
    assert found == {(m, b) for m in modalities for b in bench_imagebind.BATCHES["quick"]}
    assert all(r.gflop is not None for r in report.rows)
    assert len(report.plots) == len(modalities)
    assert set(report.figures["latency_vs_batch"]) == {f"tiny/{m}" for m in modalities}
    # the JSON form bench.run writes: ratios and FLOP/s included, all serialisable
    rows = [bench._row_json(r) for r in report.rows]
    json.dumps({"rows": rows, "figures": report.figures})
    assert all(_finite_positive(r["torch_over_runtime"]) and _finite_positive(r["runtime_gflops_per_s"])
               for r in rows)


def test_import_runtime_stays_torch_free():
    code = "import sys, runtime, benchmarks, benchmarks.ait, benchmarks.imagebind; " \
           "sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_sampler_convergence_on_the_tiny_t2v_bundle(tmp_path):
    from benchmarks import samplers
    from export.videocrafter1.bundle import export_bundle
    from export.videocrafter1.presets import tiny_t2v
    from runtime.videocrafter1 import VideoPipeline

    export_bundle(tiny_t2v(), tmp_path / "t2v", seed=0, log=lambda line: None)
    with VideoPipeline(tmp_path / "t2v") as pipeline:
        report = samplers.convergence(pipeline, "a corgi", repeats=1, steps=(2, 5, 10), reference_steps=80,
                                      target_steps=10)
    official, same_start = (report["tables"][k]["distance"] for k in ("official", "same_start"))
    assert set(official) == {"ddim", "dpmpp-2m", "unipc"}
    assert set(same_start) == {samplers.ORDER_1, "dpmpp-2m", "unipc"}
    for name, by_steps in same_start.items():  # discretization error alone: falls with steps
        assert by_steps[2] > by_steps[5] > by_steps[10] > 0, (name, by_steps)
    for name in ("dpmpp-2m", "unipc"):  # second order beats first at equal steps and start
        assert same_start[name][10] < same_start[samplers.ORDER_1][10], (name, same_start)
    assert report["target_distance"] == official["ddim"][10] and report["matched"]["ddim"]["steps"] == 10
    for name, matched in report["matched"].items():
        assert matched["steps"] == samplers.matching_steps(official[name], report["target_distance"])
        assert matched["steps"] is None or _finite_positive(matched["end_to_end_s"])
    lines = samplers.table("tiny-t2v", report)
    assert len(lines) == 15 and lines[5].startswith("| ddim | ")
    _check_rows(samplers.rows("tiny-t2v", report))
    assert report["baseline"]["steps"] == 10 and _finite_positive(report["baseline"]["end_to_end_s"])


def test_matching_steps_is_the_fewest_steps_within_the_target():
    from benchmarks import samplers

    assert samplers.matching_steps({10: 0.3, 15: 0.1, 20: 0.05}, 0.1) == 15
    assert samplers.matching_steps({10: 0.3}, 0.1) is None
    assert samplers.relative_distance(np.array([3.0, 4.0]), np.array([3.0, 4.5])) == pytest.approx(0.1)


def test_released_suites_score_every_backend_against_torch(tmp_path, monkeypatch):
    """The released-size code path on the tiny presets: bundles exported into the cache folder once, INT8 of
    ImageBind's vision encoder calibrated, torch first then every backend, each scored against torch."""
    import pytest

    from benchmarks import ait as bench_ait, imagebind as bench_imagebind
    from benchmarks.released import cache_dir
    from export.ait.presets import tiny_depth
    from export.imagebind.presets import tiny

    monkeypatch.setenv("EDGE_BENCH_CACHE", str(tmp_path / "cache"))
    report = bench_imagebind.bench_released(repeats=1, log=lambda _: None, preset=tiny())
    assert (cache_dir() / "imagebind-tiny" / "manifest.json").is_file()
    vision = [r for r in report.rows if r.item == "vision encoder"]
    backends = [(r.backend, r.precision) for r in vision]
    bf16 = ("bf16",) if this_cpu().bf16 else ()  # torch autocast and OpenVINO BF16 only where BF16 is native
    openvino = pytest.importorskip("openvino") and [("openvino", p) for p in ("fp32", *bf16, "int8")]
    assert backends == [("torch", "fp32"), *(("torch", p) for p in bf16), ("onnxruntime", "fp32"),
                        ("onnxruntime", "int8"), *openvino]
    for row in vision:  # like for like: a BF16 row against torch BF16, every other row against torch FP32
        torch_row = next(r for r in vision if r.backend == "torch" and r.precision == (
            "bf16" if row.precision == "bf16" else "fp32"))
        assert row.torch_ms == torch_row.runtime_ms, row
    assert {r.item for r in report.rows} == {f"{m} encoder" for m in bench_imagebind.RELEASED_MODALITIES}
    _check_rows(report.rows)
    for row in report.rows:
        # the graphs hold the torch module's weights: FP32 agrees with torch to rounding, BF16 to its 8 bits
        # (measured: FP32 about 130 dB, BF16 about 45 dB, INT8 of the tiny vision encoder 35 dB)
        cosine, snr = {"fp32": (0.99999, 60), "bf16": (0.999, 25), "int8": (0.99, 15)}[row.precision]
        assert row.cosine >= cosine and (row.backend == "torch" or row.snr_db >= snr), row
        fp32 = next(r for r in report.rows if (r.item, r.backend, r.precision) == (row.item, row.backend, "fp32"))
        assert row.backend_fp32_ms == (None if row.precision == "fp32" else fp32.runtime_ms), row

    report = bench_ait.bench_released(repeats=1, log=lambda _: None, config=tiny_depth())
    steps = [r.item for r in report.rows if r.backend == "onnxruntime"]
    last = tiny_depth().token_length - 1
    assert steps == ["image encoder (Swin V2-B + encoder)",
                     *(f"decoder step, past {p}" for p in (0, last // 2, last))]
    assert all(r.cosine >= (0.999 if r.precision == "bf16" else 0.99999) for r in report.rows), report.rows


def test_videocrafter1_released_suite_on_the_tiny_presets(tmp_path, monkeypatch):
    """The default run (T2V then I2V) with the tiny presets standing in for the released ones: each bundle
    exported into the cache, each mode's graphs timed, the UNet step fed the context its bundle was traced
    with (I2V: 77 text + image tokens) at 2 frames of the opt latent, every backend scored against torch."""
    from benchmarks import videocrafter1 as bench_vc
    from export.videocrafter1 import presets
    from runtime.bundle import Bundle

    tiny = presets.tiny_variants()
    monkeypatch.setattr(presets, "released_variants",
                        lambda: {"t2v-512": tiny["tiny-t2v"], "i2v-512": tiny["tiny-i2v"]})
    monkeypatch.setenv("EDGE_BENCH_CACHE", str(tmp_path))
    report = bench_vc.bench_released(repeats=1, log=lambda _: None)
    _check_rows(report.rows)
    torch_rows = [r.bundle for r in report.rows if r.backend == "torch" and r.precision == "fp32"]
    assert torch_rows == ["tiny-t2v"] * 3 + ["tiny-i2v"] * 3
    peak_memory = {f"generate_video, memory={m} (process peak RSS)" for m in ("normal", "low")}
    assert {r.item for r in report.rows if r.bundle == "tiny-t2v"} >= peak_memory
    assert len(report.figures["peak_memory"]) == len([r for r in report.rows if r.item in peak_memory])
    scored = [r for r in report.rows if r.item not in peak_memory]
    for row in scored:  # thresholds as in the ImageBind released test above
        cosine, snr = {"fp32": (0.99999, 60), "bf16": (0.999, 25), "int8": (0.99, 15)}[row.precision]
        assert row.cosine >= cosine and (row.backend == "torch" or row.snr_db >= snr), row
    int8 = [(r.bundle, r.item, r.backend) for r in scored if r.precision == "int8"]
    assert int8 == [("tiny-t2v", "UNet step, 2 frames", "onnxruntime"), ("tiny-t2v", "UNet step, 2 frames", "openvino")]
    for name in ("tiny-t2v", "tiny-i2v"):
        config, bundle = tiny[name], Bundle(tmp_path / f"videocrafter1-{name}")
        shapes = {r.item: r.shape for r in scored if r.bundle == name and r.backend == "torch"}
        context = bundle.component("unet").profile["context"]["opt"]  # fixed at export: text (+ image) tokens
        assert context[1] == 77 + (config.image_proj["num_queries"] if config.mode == "i2v" else 0)
        lh, lw = config.height // config.vae_factor, config.width // config.vae_factor
        # T2V: the held-out calibration record, the guided batch of 2 the pipeline runs; I2V: batch 1
        batch = 2 if config.mode == "t2v" else 1
        unet = {"UNet step, 2 frames": f"x[{batch}, 4, {bench_vc.RELEASED_UNET_FRAMES}, {lh}, {lw}] "
                                       f"context[{batch}, {context[1]}, {context[2]}]"}
        if config.mode == "t2v":
            expected = {"text encoder": "tokens[2, 77]", **unet, "VAE decoder, one frame": f"z[1, 4, {lh}, {lw}]"}
        else:
            vision = config.image_encoder["vision_cfg"]
            patches = (vision["image_size"] // vision["patch_size"]) ** 2
            expected = {"image encoder, one image": f"pixels[1, 3, {vision['image_size']}, {vision['image_size']}]",
                        "image projection (Resampler)": f"image_tokens[1, {patches + 1}, {vision['width']}]", **unet}
        assert list(shapes.items()) == list(expected.items()), name  # pipeline order


def test_released_i2v_reuses_the_t2v_text_encoder_and_vae():
    """Why the I2V-512 rows leave out the text encoder and VAE decoder: the same configs (and seeds) as T2V-512."""
    from export.videocrafter1.presets import released_variants

    variants = released_variants()
    t2v, i2v = variants["t2v-512"], variants["i2v-512"]
    assert (i2v.text, i2v.vae) == (t2v.text, t2v.vae)
    assert i2v.unet != t2v.unet and i2v.mode == "i2v"


def test_whole_video_suite_measures_each_sampler_once_and_projects_by_steps(tmp_path, monkeypatch):
    """``--preset video`` with tiny presets standing in for the released ones: one fresh process per
    (variant, sampler, backend, precision), the rows of more steps scaled from it by the step ratio."""
    from benchmarks import peak_memory, videocrafter1 as bench_vc
    from benchmarks.video import MEASURED_STEPS, rows_for
    from export.videocrafter1 import presets
    from runtime.cpu import this_cpu

    tiny, turbo = presets.tiny_variants(), presets.tiny_turbo_variants()
    monkeypatch.setattr(presets, "released_variants",
                        lambda: {"t2v-512-v2": tiny["tiny-t2v"], "t2v-turbo-vc2": turbo["tiny-t2v-turbo"]})
    monkeypatch.setenv("EDGE_BENCH_CACHE", str(tmp_path))
    children = []
    measured = peak_memory.run_child
    monkeypatch.setattr(peak_memory, "run_child", lambda *a, **k: children.append(k) or measured(*a, **k))
    report = bench_vc.bench_video(log=lambda _: None)
    rows = rows_for(this_cpu())
    bf16 = [("lcm", 4, 8, "openvino", "bf16")] if this_cpu().bf16 else []  # OpenVINO BF16 where it is native
    assert [(c["sampler"], c["steps"], c["frames"], c["backend"], c["precision"]) for c in children] == [
        ("ddim", MEASURED_STEPS[True], 8, "onnxruntime", "fp32"), ("dpmpp-2m", MEASURED_STEPS[True], 8,
                                                                   "onnxruntime", "fp32"),
        ("lcm", 4, 8, "onnxruntime", "fp32")] + bf16
    figures = report.figures["whole_video"]
    order = {"ddim": 0, "dpmpp-2m": 1, "lcm": 2}
    assert [(f["sampler"], f["steps"], f["backend"], f["precision"]) for f in figures] == sorted(
        [(r.sampler, r.steps, r.backend, r.precision) for r in rows], key=lambda s: (order[s[0]], s[2], s[3], s[1]))
    assert all(f["precision"] == "bf16" for f in figures if f["backend"] == "openvino")
    # a measured BF16 video carries its PSNR against ONNX Runtime FP32's (same seed), high but not exact
    assert [f["psnr_vs_fp32_db"] is not None for f in figures] == [
        f["backend"] == "openvino" and not f["projected"] for f in figures]
    assert all(20 < f["psnr_vs_fp32_db"] < float("inf") for f in figures if f["psnr_vs_fp32_db"] is not None)
    by = {(f["sampler"], f["steps"]): f for f in figures if f["backend"] == "onnxruntime"}
    lcm4, lcm8, ddim = by["lcm", 4], by["lcm", 8], by["ddim", 50]
    assert not lcm4["projected"] and lcm8["projected"] and ddim["projected"]
    assert (lcm4["guided"], ddim["guided"], ddim["unet_batch"]) == (False, True, 1)  # low memory: one branch a call
    # the calls not made cost the mean of the measured ones after the first
    assert math.isclose(lcm8["unet_s"], lcm4["unet_s"] + 4 * lcm4["unet_call_s"]) and lcm8["vae_s"] == lcm4["vae_s"]
    assert math.isclose(ddim["unet_s"], ddim["unet_first_call_s"] + (2 * 50 - 1) * ddim["unet_call_s"])  # 2 a step
    assert math.isclose(lcm4["unet_s"], lcm4["unet_first_call_s"] + 3 * lcm4["unet_call_s"])
    for f, row in zip(figures, report.rows):
        assert math.isclose(f["end_to_end_s"], f["text_s"] + f["unet_s"] + f["vae_s"] + f["switch_s"]
                            + f["outside_graphs_s"])
        assert row.runtime_ms == f["end_to_end_s"] * 1e3 and row.runtime_peak_mb == f["peak_rss_bytes"] / 2**20
        assert ("projected" in row.item) == f["projected"] and row.shape == "8x64x64"
    # the work of each row: the graph's count of one UNet call equals torch's own FLOP counter on the module
    from torch.utils.flop_counter import FlopCounterMode

    from export.videocrafter1.bundle import build_component
    from export.videocrafter1.graphs import UNetStep, example_unet_inputs, unet_conditions

    config = turbo["tiny-t2v-turbo"]
    feeds = example_unet_inputs(config.unet, batch=1, frames=8, height=config.height // 8, width=config.width // 8,
                                context_length=77)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        UNetStep(build_component(config, "unet", None), unet_conditions(config.unet))(
            *(torch.from_numpy(v) for v in feeds.values()))
    assert math.isclose(lcm4["unet_gflop_per_call"], counter.get_total_flops() / 1e9)
    for f, row in zip(figures, report.rows):
        calls = f["steps"] * (2 if f["guided"] else 1)
        assert math.isclose(f["gflop"], calls * f["unet_gflop_per_call"] + 8 * f["vae_gflop_per_frame"])
        assert row.gflop == f["gflop"] and f["vae_gflop_per_frame"] > 0
        assert math.isclose(f["unet_gflops_per_s"], f["unet_gflop_per_call"] / f["unet_call_s"])


def test_whole_video_rows_add_openvino_bf16_only_where_the_cpu_has_native_bf16():
    """A BF16 row on a CPU without native BF16 would be OpenVINO FP32 under another name: it is measured only where
    the flags say BF16 (Zen 4's AVX-512 BF16, AMX), and there for T2V-Turbo's LCM rows, besides every FP32 row."""
    from benchmarks.video import ROWS, rows_for
    from runtime.cpu import Cpu

    zen3 = Cpu("AMD EPYC", "x86_64", frozenset({"avx2", "fma"}))
    zen4 = Cpu("AMD EPYC", "x86_64", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
    amx = Cpu("Intel Xeon", "x86_64", frozenset({"avx512f", "amx_bf16", "amx_int8"}))
    assert rows_for(zen3) == ROWS
    for cpu in (zen4, amx):
        added = rows_for(cpu)[len(ROWS):]
        assert rows_for(cpu)[:len(ROWS)] == ROWS
        assert {(r.variant, r.sampler, r.steps, r.backend, r.precision) for r in added} == {
            ("t2v-turbo-vc2", "lcm", 4, "openvino", "bf16"), ("t2v-turbo-vc2", "lcm", 8, "openvino", "bf16")}


def test_graph_flops_count_graphs_with_external_weights_without_reading_them(tmp_path, monkeypatch):
    """A graph whose weights live in another file is counted from its shapes alone, from any folder: a 3x3 Conv
    and a MatMul, against the multiply-adds written out by hand."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from benchmarks.measure import graph_flops

    weights = [numpy_helper.from_array(np.ones((16, 8, 3, 3), np.float32), "w"),
               numpy_helper.from_array(np.ones((12, 5), np.float32), "m")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("MatMul", ["y", "m"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, "h", 12])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], weights)
    path = tmp_path / "bundle" / "g.onnx"
    path.parent.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              save_as_external_data=True, location="g.onnx.data", size_threshold=0)
    (path.parent / "g.onnx.data").write_bytes(b"")  # the weights' values are never read
    monkeypatch.chdir(tmp_path)
    count = graph_flops(path, {"x": (2, 8, 10, 12)})
    conv, matmul = 2 * (2 * 16 * 10 * 12) * 8 * 9, 2 * (2 * 16 * 10) * 12 * 5
    assert (count.flops, count.nodes, count.unresolved) == (conv + matmul, 2, [])


def test_kernel_rates_probe_builds_the_layers_it_counts():
    """``benchmarks.probes.kernel_rates``: the graph count of each layer's graph (the GFLOP its rate divides) equals
    its multiply-adds written out, its FP32 graph computes the layer (numpy), and its INT8 Q/DQ graph stays within
    30 dB of it."""
    from benchmarks.measure import graph_flops
    from benchmarks.probes.kernel_rates import layer_graph
    from runtime.backends.onnxrt import inference_session

    rng = np.random.default_rng(0)
    for op, x_shape, w_shape in (("Conv", (2, 8, 6, 10), (16, 8, 3, 3)), ("MatMul", (64, 32), (32, 24))):
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32) * 0.05
        fp32, int8 = (layer_graph(op, x_shape, w, q) for q in (False, True))
        # a same-padded, stride-1 convolution keeps the input's height and width
        by_hand = (2 * x_shape[0] * x_shape[2] * x_shape[3] * int(np.prod(w_shape)) if op == "Conv"
                   else 2 * x_shape[0] * w_shape[0] * w_shape[1])
        assert graph_flops(fp32, {"x": x_shape}).flops == by_hand
        if op == "MatMul":
            expected = x @ w
        else:  # a same-padded convolution as a sum of shifted products
            padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
            expected = sum(np.einsum("nchw,oc->nohw", padded[:, :, i:i + x_shape[2], j:j + x_shape[3]], w[:, :, i, j])
                           for i in range(3) for j in range(3))
        got, quantized = (inference_session(g).run(None, {"x": x})[0] for g in (fp32, int8))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        snr = 10 * np.log10(np.sum(expected ** 2) / np.sum((quantized - expected) ** 2))
        assert snr > 30, snr
