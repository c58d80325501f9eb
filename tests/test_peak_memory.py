"""The peak-memory measurement of ``generate`` (``python -m benchmarks.peak_memory``) on the tiny T2V bundle: one
fresh process per backend and memory mode, figures consistent with the files and with each other."""
from __future__ import annotations

import json
import math

import pytest

import benchmarks.__main__ as bench
from benchmarks.peak_memory import describe
from benchmarks.videocrafter1 import PEAK_MEMORY_STEPS, RELEASED_UNET_FRAMES, peak_memory_rows
from export.videocrafter1.bundle import export_bundle
from export.videocrafter1.presets import tiny_t2v
from runtime.bundle import Bundle

_USED = {"text_encoder", "unet", "vae_decoder"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = export_bundle(tiny_t2v(), tmp_path_factory.mktemp("peak") / "t2v", seed=0, log=lambda _: None)
    with pytest.MonkeyPatch.context() as patch:  # the OpenVINO child caches its compiled models here, not in ~
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        rows, figures = peak_memory_rows(Bundle(root), log=lambda _: None)
    return root, rows, figures


def test_one_row_per_backend_and_memory_mode(measured):
    _, rows, figures = measured
    modes = [(f["backend"], f["memory"]) for f in figures]
    assert modes[:2] == [("onnxruntime", "normal"), ("onnxruntime", "low")]
    assert modes[2:] in ([], [("openvino", "normal"), ("openvino", "low")])
    for row, found in zip(rows, figures):
        assert (row.backend, row.item) == (found["backend"], f"generate_video, memory={found['memory']} "
                                                             "(process peak RSS)")
        assert row.runtime_peak_mb == found["peak_rss_bytes"] / 2**20
        assert row.runtime_ms == found["end_to_end_s"] * 1e3
        assert (found["frames"], found["steps"]) == (RELEASED_UNET_FRAMES, PEAK_MEMORY_STEPS)
        assert found["unet_batch"] == {"normal": 2, "low": 1}[found["memory"]]  # guided: two latents per step
    json.dumps([bench._row_json(r) for r in rows] + figures)  # what --json writes
    table = bench.table(rows)
    assert len(table.splitlines()) == len(rows) + 2 and "memory=low" in table


def test_weights_are_the_bundle_files(measured):
    root, _, figures = measured
    for found in figures:
        on_disk = {name: sum(p.stat().st_size for p in root.glob(f"{name}.onnx*")) for name in _USED}
        assert found["weight_bytes"] == on_disk
        assert found["largest_weight_bytes"] == max(on_disk.values()) == on_disk[found["largest_component"]]
        assert found["all_weight_bytes"] == sum(on_disk.values())
        assert found["peak_over_largest"] == found["peak_rss_bytes"] / found["largest_weight_bytes"]


def test_memory_figures_are_consistent(measured):
    _, _, figures = measured
    for found in figures:
        peak, sample = found["peak_rss_bytes"], found["at_peak_sample"]
        assert peak >= found["largest_weight_bytes"]  # every mode opens the largest graph at some point
        assert found["baseline_rss_bytes"] < peak and found["rss_after_close_bytes"] <= peak
        assert peak == max(found["vm_hwm_bytes"], sample["rss_bytes"])
        assert found["ru_maxrss_bytes"] >= found["vm_hwm_bytes"]
        assert sample["anon_bytes"] + sample["file_bytes"] <= sample["rss_bytes"]
        assert sample["anon_bytes"] <= found["max_rss_anon_bytes"]
        assert sample["file_bytes"] <= found["max_rss_file_bytes"]
        assert found["rss_samples"] >= 1


def test_time_split_adds_up(measured):
    _, _, figures = measured
    for found in figures:
        graphs, switching = found["graph_s"], found["switch_s"]
        assert set(graphs) == _USED and all(v > 0 for v in graphs.values())
        # a low-memory pipeline opens each graph inside its first run; a normal one before generate
        assert set(switching) == (_USED if found["memory"] == "low" else set())
        parts = sum(graphs.values()) + sum(switching.values()) + found["outside_graphs_s"]
        assert math.isclose(parts, found["end_to_end_s"], rel_tol=1e-9)
        assert 0 < found["outside_graphs_share"] < 1
        assert math.isclose(found["outside_graphs_share"], found["outside_graphs_s"] / found["end_to_end_s"])
        assert found["process_wall_s"] > found["open_s"] + found["end_to_end_s"]
        assert describe(found).startswith(f"tiny-t2v generate_video {RELEASED_UNET_FRAMES}x")
