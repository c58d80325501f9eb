"""The generated benchmark page (docs/hooks/benchmark_pages.py): tables and SVG plots drawn from the suites' JSON."""
from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ElementTree

import pytest

from benchmarks.figures import HEIGHT, WIDTH, svg_line_plot
from tests.paths import REPO

SVG = "{http://www.w3.org/2000/svg}"


def _hook():
    spec = importlib.util.spec_from_file_location("benchmark_pages", REPO / "docs" / "hooks" / "benchmark_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_svg_plot_puts_each_point_where_its_values_say():
    series = {"ddim": [(2, 4.0), (10, 1.0)], "unipc": [(2, 2.0), (10, 0.5)]}
    root = ElementTree.fromstring(svg_line_plot("error vs steps", "steps", "max error", series))
    assert (root.get("width"), root.get("height")) == (str(WIDTH), str(HEIGHT))
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2 and len({line.get("stroke") for line in lines}) == 2
    ddim = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    unipc = [tuple(map(float, p.split(","))) for p in lines[1].get("points").split()]
    assert ddim[0][0] == unipc[0][0] < ddim[1][0] == unipc[1][0]  # the same x at the same steps
    assert ddim[0][1] < unipc[0][1] < unipc[1][1]  # higher values are higher up (smaller SVG y)
    floor = ddim[1][1] + (ddim[1][1] - ddim[0][1]) / 3  # y = 0 lies below 1.0 by a third of the 1.0 -> 4.0 span
    assert unipc[1][1] == pytest.approx((ddim[1][1] + floor) / 2, abs=0.1)  # 0.5 halfway between 0 and 1.0
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"error vs steps", "steps", "max error", "ddim", "unipc"} <= set(texts)
    with pytest.raises(ValueError, match="expected at least one point, found none"):
        svg_line_plot("empty", "x", "y", {"a": []})


def test_results_page_shows_rows_and_plots_of_every_json(tmp_path):
    hook = _hook()
    plot = {"file": "bench_x_convergence.svg", "title": "max error vs steps", "x_label": "steps",
            "y_label": "max error", "series": {"ddim": [[2, 0.5], [4, 0.25]]}}
    result = {"date": "2026-12-07T00:00:00+00:00", "device": {"cpu": "Test CPU", "cpu_class": "AVX2"},
              "families": {"videocrafter1": {"rows": [{"bundle": "tiny", "item": "unet", "runtime_ms": 2.0,
                                                       "torch_ms": 3.0}], "plots": [plot, {"title": "broken"}]}}}
    (tmp_path / "run.json").write_text(json.dumps(result), encoding="utf-8")
    drawn = []
    page = hook.render(tmp_path, "results", drawn)
    assert "| tiny | unet |" in page and "Test CPU" in page
    assert "![max error vs steps](plots/run-bench_x_convergence.svg)" in page
    assert [name for name, _ in drawn] == ["benchmarks/plots/run-bench_x_convergence.svg"]
    assert ElementTree.fromstring(drawn[0][1]).findall(f"{SVG}polyline")


def test_whole_video_figures_show_their_rates_and_psnr_and_older_files_dashes():
    hook = _hook()
    base = {"variant": "t2v-turbo-vc2", "sampler": "lcm", "steps": 4, "guided": False, "backend": "onnxruntime",
            "precision": "fp32", "text_s": 0.5, "unet_s": 300.0, "vae_s": 140.0, "switch_s": 10.0,
            "end_to_end_s": 450.0, "peak_rss_bytes": 8.5 * 2**30}
    new = {**base, "backend": "openvino", "precision": "bf16", "unet_gflops_per_s": 373.4, "vae_gflops_per_s": 390.0,
           "psnr_vs_fp32_db": 31.26}
    lines = hook.breakdown_lines("videocrafter1", {"whole_video": [base, new]})
    older, newer = (next(line for line in lines if f"| {b} | {p} |" in line) for b, p in
                    (("onnxruntime", "fp32"), ("openvino", "bf16")))
    assert newer.endswith("| 450 | 8.50 | 373 | 390 | 31.3 |")
    assert older.endswith("| 450 | 8.50 | - | - | - |")  # a file from before the rates and the PSNR


def test_a_soak_result_shows_its_load_table(tmp_path):
    hook = _hook()
    soak = {"seconds": 120.4, "clients": 4, "servers": 2, "retried": 1, "errors": [],
            "rows": [{"workload": "all", "requests": 776, "errors": 0, "requests/s": 6.42, "p50 ms": 346.0,
                      "p95 ms": 2046.0, "p99 ms": 2670.0}],
            "server_rss_mb": {"start": 2821.1, "end": 2853.3, "growth_per_1000_requests": 41.5}}
    (tmp_path / "soak.json").write_text(json.dumps({"date": "2026-12-07", "device": {"cpu": "Test CPU"},
                                                    "soak": soak}), encoding="utf-8")
    page = hook.render(tmp_path, "results", [])
    assert "Soak: 120 s, 4 clients, 2 server(s)" in page
    assert "| all | 776 | 0 | 6.42 | 346.0 | 2046.0 | 2670.0 |" in page
    assert "2821.1 MB at the start, 2853.3 MB at the end: 41.5 MB per 1000 requests" in page

