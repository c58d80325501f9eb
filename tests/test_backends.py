"""The backend layer: the registry, session lifecycle (close, ``with``) and pipelines closing what they open."""
from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime.backends import OrtSession, OwnsSessions, open_session, pipeline_for
from runtime import heap
from runtime.backends import base
from runtime.backends.base import BACKENDS, backend_class
from runtime.bundle import Bundle, BundleError, BundleWriter, Component, Manifest, TensorSpec, write_manifest


@pytest.fixture
def bundle(tmp_path) -> Bundle:
    """One component ``double``: y = 2 x for x of shape (batch 1..4, 3)."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    with BundleWriter(tmp_path / "b") as root:
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "double.onnx"))
        component = Component("double", "double.onnx", (TensorSpec("x", "float32", ("batch", 3)),),
                              (TensorSpec("y", "float32", ("batch", 3)),),
                              {"x": {"min": (1, 3), "opt": (2, 3), "max": (4, 3)}})
        write_manifest(root, Manifest("test", "tiny", {"double": component}, {}, files={"double.onnx": {}}))
    return Bundle(tmp_path / "b")


def test_registry_names_every_backend_and_refuses_others(bundle):
    assert BACKENDS == ("onnxruntime", "tensorrt", "triton", "triton-bls", "openvino", "auto")
    assert backend_class("onnxruntime") is OrtSession
    assert backend_class("tensorrt").__name__ == "TensorRTSession"
    assert backend_class("triton").__name__ == "TritonSession"
    assert backend_class("openvino").__name__ == "OpenVINOSession"
    with pytest.raises(BundleError, match="unknown backend 'ov'; expected one of onnxruntime, tensorrt, triton, "
                                          "triton-bls, openvino, auto"):
        open_session(bundle, "double", backend="ov")


def test_auto_takes_openvino_fp32_on_a_cpu_unless_told_otherwise(bundle, monkeypatch, tmp_path):
    """No NVIDIA GPU here: TensorRT is not usable, OpenVINO (FP32) is when installed, else ONNX Runtime."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with open_session(bundle, "double", backend="auto") as session:
        assert type(session).__name__ == "OpenVINOSession" and session.precision == "fp32"
        np.testing.assert_array_equal(session.run({"x": x})["y"], 2 * x)
    with open_session(bundle, "double", backend="auto", precision="bf16") as session:
        assert type(session).__name__ == "OpenVINOSession" and session.precision == "bf16"
    # asked for what OpenVINO does not do: ONNX Runtime providers, or a TensorRT precision
    assert type(open_session(bundle, "double", backend="auto", providers=["CPUExecutionProvider"])) is OrtSession
    assert type(open_session(bundle, "double", backend="auto", precision="int8")) is OrtSession
    monkeypatch.setitem(sys.modules, "openvino", None)  # not installed: import fails
    assert type(open_session(bundle, "double", backend="auto")) is OrtSession


def test_session_is_a_context_manager_and_refuses_to_run_closed(bundle):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with open_session(bundle, "double") as session:
        np.testing.assert_array_equal(session.run({"x": x})["y"], 2 * x)
    with pytest.raises(BundleError, match="double: the ONNX Runtime session is closed"):
        session.run({"x": x})


class _Pipeline(OwnsSessions):
    def __init__(self, bundle):
        self.first = self._open(bundle, "double", "onnxruntime")
        self.second = self._open(bundle, "double", "onnxruntime")


def _is_closed(session) -> bool:
    try:
        session.run({"x": np.zeros((1, 3), np.float32)})
    except BundleError:
        return True
    return False


def test_pipeline_for_closes_only_the_pipelines_it_opened(bundle):
    with pipeline_for(bundle, _Pipeline) as opened:
        assert not _is_closed(opened.first)
    assert _is_closed(opened.first) and _is_closed(opened.second)
    mine = _Pipeline(bundle)
    with pipeline_for(mine, _Pipeline) as given:
        assert given is mine
    assert not _is_closed(mine.first)  # the caller's pipeline stays open
    mine.close()
    assert _is_closed(mine.first) and _is_closed(mine.second)


class _LowMemory(OwnsSessions):
    def __init__(self, bundle, memory="low"):
        self.first = self._open(bundle, "double", "onnxruntime", memory)
        self.second = self._open(bundle, "double", "onnxruntime", memory)


def test_low_memory_sessions_open_on_use_one_at_a_time(bundle, monkeypatch):
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    trims = []
    monkeypatch.setattr(base, "trim", lambda: trims.append(1) or True)
    with _LowMemory(bundle) as pipeline:
        assert not pipeline.first.is_open and not pipeline.second.is_open  # nothing opened up front
        assert pipeline.first.component.name == "double"
        np.testing.assert_array_equal(pipeline.first.run({"x": x})["y"], 2 * x)
        np.testing.assert_array_equal(pipeline.first.run({"x": x})["y"], 2 * x)
        assert pipeline.first.is_open and not pipeline.second.is_open
        assert not pipeline.first._session._session.get_session_options().enable_cpu_mem_arena  # low-memory ORT
        assert trims == []
        np.testing.assert_array_equal(pipeline.second.run({"x": x})["y"], 2 * x)
        assert pipeline.second.is_open and not pipeline.first.is_open  # the first was freed
        assert trims == [1]  # and its heap pages handed back
        assert pipeline.first.switch_s > 0 and pipeline.second.switch_s > 0
    assert not pipeline.second.is_open and trims == [1, 1]
    with pytest.raises(ValueError, match="memory must be one of normal, low, found 'tiny'"):
        _LowMemory(bundle, memory="tiny")


def test_memory_option_reaches_the_backends_that_take_it(bundle):
    with open_session(bundle, "double") as normal, open_session(bundle, "double", memory="low") as low:
        assert normal._session.get_session_options().enable_cpu_mem_arena
        assert not low._session.get_session_options().enable_cpu_mem_arena
    with pytest.raises(ValueError, match="memory must be one of normal, low, found 'none'"):
        open_session(bundle, "double", memory="none")


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
