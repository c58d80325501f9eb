"""The backend layer: the registry, ``auto``, session lifecycle (close, ``with``) and backend memory settings."""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime import heap
from runtime.backends import OrtSession, auto_backend, open_session
from runtime.backends.auto import growing_caches
from runtime.backends.base import BACKENDS, backend_class
from runtime.cpu import this_cpu
from runtime.bundle import Bundle, BundleError, BundleWriter, Component, Manifest, TensorSpec, write_manifest


STEP = Component(
    "step", "step.onnx",
    (TensorSpec("token", "float32", ("batch", 4)), TensorSpec("cache", "float32", ("batch", "past", 4))),
    (TensorSpec("logits", "float32", ("batch", 4)), TensorSpec("new_cache", "float32", ("batch", "past_plus_one", 4))),
    {"token": {"min": (1, 4), "opt": (1, 4), "max": (2, 4)},
     "cache": {"min": (1, 0, 4), "opt": (1, 2, 4), "max": (2, 8, 4)}})


@pytest.fixture
def step_bundle(tmp_path) -> Bundle:
    """One component ``step``, a token-by-token step: new_cache = cache with the token appended, logits = token."""
    nodes = [helper.make_node("Identity", ["token"], ["logits"]),
             helper.make_node("Unsqueeze", ["token", "axis"], ["row"]),
             helper.make_node("Concat", ["cache", "row"], ["new_cache"], axis=1)]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("token", TensorProto.FLOAT, ["batch", 4]),
                               helper.make_tensor_value_info("cache", TensorProto.FLOAT, ["batch", "past", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4]),
                               helper.make_tensor_value_info("new_cache", TensorProto.FLOAT,
                                                             ["batch", "past_plus_one", 4])],
                              [helper.make_tensor("axis", TensorProto.INT64, [1], [1])])
    with BundleWriter(tmp_path / "s") as root:
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "step.onnx"))
        write_manifest(root, Manifest("test", "tiny", {"step": STEP}, {}, files={"step.onnx": {}}))
    return Bundle(tmp_path / "s")


def test_a_cache_each_call_extends_is_read_from_the_manifest():
    assert growing_caches(STEP) == ("cache",)
    # the same shapes, but the axis cannot start empty: an image-like axis resized, not a cache
    sized = replace(STEP, profile={**STEP.profile, "cache": {**STEP.profile["cache"], "min": (1, 1, 4)}})
    assert growing_caches(sized) == ()
    # an output with the same symbol (a UNet's eps like its x) or differing in two axes (an upsampler)
    same = replace(STEP, outputs=(TensorSpec("new_cache", "float32", ("batch", "past", 4)),))
    wider = replace(STEP, outputs=(TensorSpec("new_cache", "float32", ("batch", "past_plus_one", 8)),))
    assert growing_caches(same) == () and growing_caches(wider) == ()


def test_auto_runs_a_cache_step_on_onnx_runtime_and_a_named_backend_as_asked(step_bundle, tmp_path, monkeypatch):
    """The rule (docs/backends.md): a step that extends a cache runs on ONNX Runtime on a CPU, even where
    OpenVINO is installed and even when a precision only OpenVINO takes is asked (it is dropped)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    token, cache = np.ones((1, 4), np.float32), np.arange(8, dtype=np.float32).reshape(1, 2, 4)
    assert auto_backend(step_bundle, "step", {}) == "onnxruntime"
    for options in ({}, {"precision": "bf16"}, {"threads": 1}):
        with open_session(step_bundle, "step", backend="auto", **options) as session:
            assert type(session) is OrtSession and session.label == "ONNX Runtime"
            out = session.run({"token": token, "cache": cache})
            np.testing.assert_array_equal(out["new_cache"], np.concatenate([cache, token[:, None]], axis=1))
    pytest.importorskip("openvino")
    with open_session(step_bundle, "step", backend="openvino") as session:  # asked by name: never overridden
        assert session.label == "OpenVINO"
        np.testing.assert_array_equal(session.run({"token": token, "cache": cache})["logits"], token)


def test_registry_names_every_backend_and_refuses_others(double_bundle):
    assert BACKENDS == ("onnxruntime", "tensorrt", "triton", "triton-bls", "openvino", "auto")
    assert backend_class("onnxruntime") is OrtSession
    assert backend_class("tensorrt").__name__ == "TensorRTSession"
    assert backend_class("triton").__name__ == "TritonSession"
    assert backend_class("openvino").__name__ == "OpenVINOSession"
    with pytest.raises(BundleError, match="unknown backend 'ov'; expected one of onnxruntime, tensorrt, triton, "
                                          "triton-bls, openvino, auto"):
        open_session(double_bundle, "double", backend="ov")


def test_auto_takes_openvino_fp32_on_a_cpu_unless_told_otherwise(double_bundle, monkeypatch, tmp_path):
    """No NVIDIA GPU here: TensorRT is not usable, OpenVINO (FP32) is when installed, else ONNX Runtime."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert auto_backend(double_bundle, "double", {}) == "openvino"
    with open_session(double_bundle, "double", backend="auto") as session:
        assert session.label == "OpenVINO" and session.precision == "fp32"
        np.testing.assert_array_equal(session.run({"x": x})["y"], 2 * x)
    with open_session(double_bundle, "double", backend="auto", precision="bf16") as session:  # BF16 where it is native
        assert type(session).__name__ == "OpenVINOSession"
        assert session.precision == ("bf16" if this_cpu().bf16 else "fp32")
    # asked for what OpenVINO does not do: ONNX Runtime providers, or a TensorRT precision
    assert type(open_session(double_bundle, "double", backend="auto", providers=["CPUExecutionProvider"])) is OrtSession
    assert type(open_session(double_bundle, "double", backend="auto", precision="int8")) is OrtSession
    assert type(open_session(double_bundle, "double", backend="onnxruntime")) is OrtSession  # asked by name
    monkeypatch.setitem(sys.modules, "openvino", None)  # not installed: import fails
    assert type(open_session(double_bundle, "double", backend="auto")) is OrtSession


def test_session_is_a_context_manager_and_refuses_to_run_closed(double_bundle):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with open_session(double_bundle, "double") as session:
        np.testing.assert_array_equal(session.run({"x": x})["y"], 2 * x)
    with pytest.raises(BundleError, match="double: the ONNX Runtime session is closed"):
        session.run({"x": x})


def test_memory_option_reaches_the_backends_that_take_it(double_bundle):
    with open_session(double_bundle, "double") as normal, open_session(double_bundle, "double", memory="low") as low:
        assert normal._session.get_session_options().enable_mem_pattern
        assert not low._session.get_session_options().enable_mem_pattern
        assert normal._session.get_session_options().enable_cpu_mem_arena  # both keep the arena
        assert low._session.get_session_options().enable_cpu_mem_arena
    with pytest.raises(ValueError, match="memory must be one of normal, low, found 'none'"):
        open_session(double_bundle, "double", memory="none")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_trim_hands_freed_heap_pages_back():
    """Blocks below glibc's mmap threshold stay resident after free() until trimmed."""
    import ctypes

    def rss_kb() -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 * 1024) for _ in range(4096)]  # 256 MiB in heap-sized blocks, touched
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    before = rss_kb()
    for block in blocks[:-1]:  # the last one pins the top of the heap: free() alone cannot shrink it
        libc.free(block)
    freed = rss_kb()
    assert heap.trim()
    trimmed = rss_kb()
    libc.free(blocks[-1])
    assert freed > before - 64 * 1024  # most of the 256 MiB still resident after free()
    assert trimmed < freed - 192 * 1024  # trim gave at least 192 MiB of it back


def test_onnx_runtime_int8_sums_are_exact_on_every_cpu(tmp_path):
    """A Q/DQ MatMul whose u8 x s8 pairs pass int16 (2 x 255 x 127 > 32767) wherever the activations match the
    weights' signs: the runtime's ONNX Runtime session gives the exact integer result on every CPU (on an x86
    CPU without VNNI, ONNX Runtime's default kernels were off by 77 of 206 here; runtime.cpu.int8_saturates)."""
    from onnx import numpy_helper

    from runtime.backends.onnxrt import inference_session

    k, n, sx, sw = 64, 8, np.float32(0.02), np.float32(0.01)
    rng = np.random.default_rng(0)
    w = rng.choice(np.array([-127, 127], np.int8), size=(k, n))
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    constants = [numpy_helper.from_array(np.array(sx), "sx"), numpy_helper.from_array(np.array(0, np.int8), "zx"),
                 numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(n, sw), "sw"),
                 numpy_helper.from_array(np.zeros(n, np.int8), "zw")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])], constants)
    path = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    levels = np.stack([np.sign(w[:, 0]) * 127, np.full(k, 127), np.full(k, -128), rng.integers(-128, 128, k)])
    x = (levels * sx).astype(np.float32)
    exact = levels.astype(np.float64) @ w.astype(np.float64) * float(sx) * float(sw)
    found = inference_session(path).run(None, {"x": x})[0]
    np.testing.assert_allclose(found, exact, rtol=1e-6, atol=1e-5)


def test_auto_picks_per_cpu_class_from_measured_figures_and_says_why(double_bundle, step_bundle, monkeypatch, tmp_path):
    """A released component measured faster on ONNX Runtime on this CPU's class runs there; the same component
    of another variant (a tiny bundle) or on another class follows the structural rule; every choice says why."""
    from runtime.backends.auto import GRAPH_ORDER, MARGIN, MEASURED, ORT_FIRST, STEP_ORDER, auto_choice
    from runtime.cpu import parse_cpuinfo

    zen3, zen4 = (parse_cpuinfo(f"model name\t: AMD EPYC\nflags\t\t: avx2 {extra}\n", "x86_64")
                  for extra in ("", "avx512f avx512_vnni avx512_bf16"))
    audio = replace(double_bundle.component("double"), name="audio_encoder")
    ort_ms, ov_ms = MEASURED["AVX2"][("imagebind", "imagebind_huge", "audio_encoder")]
    assert ov_ms >= MARGIN * ort_ms
    measured = auto_choice(audio, "imagebind", "imagebind_huge", zen3)
    assert measured.order == ORT_FIRST and f"ONNX Runtime {ort_ms:g} ms, OpenVINO {ov_ms:g} ms" in measured.why
    assert "measured on AVX2" in measured.why
    others = (auto_choice(audio, "imagebind", "tiny", zen3), auto_choice(audio, "imagebind", "imagebind_huge", zen4))
    for choice in others:
        assert choice.order == GRAPH_ORDER and "OpenVINO first" in choice.why
    depth = replace(audio, name="depth_encoder")  # measured on AVX2 too, OpenVINO the faster: the rule holds
    found = auto_choice(depth, "imagebind", "imagebind_huge", zen3)
    assert found.order == GRAPH_ORDER and "measured on AVX2: OpenVINO 112.1 ms" in found.why
    step = auto_choice(step_bundle.component("step"), "test", "tiny", zen3)
    assert step.order == STEP_ORDER and "extends a cache on every call (cache)" in step.why
    fused = replace(audio, name="unet", ort_graph="unet.ort.onnx")  # ONNX Runtime's graph: the rule on every class
    for cpu in (zen3, zen4):
        choice = auto_choice(fused, "videocrafter1", "t2v-turbo-vc2", cpu)
        assert choice.order == ORT_FIRST and "ONNX Runtime graph with fused attention (unet.ort.onnx)" in choice.why
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with open_session(step_bundle, "step", backend="auto") as session:
        assert session.auto_reason == step.why
    with open_session(step_bundle, "step", backend="onnxruntime") as session:
        assert session.auto_reason is None
    with open_session(double_bundle, "double", backend="auto", providers=["CPUExecutionProvider"]) as session:
        assert type(session) is OrtSession  # OpenVINO first by the rule, but it takes no providers
        assert session.auto_reason.endswith("but openvino is not usable here (not installed, or an option asked "
                                            "is not one of its)")
