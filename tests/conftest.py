"""Shared fixtures: the golden reference folders, the GPU marker, every family's tiny bundles and a one-graph bundle."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from runtime.bundle import Bundle, BundleWriter, Component, Manifest, TensorSpec, write_manifest
from tests.paths import REFERENCE


def _has_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
        import torch

        return torch.cuda.is_available()
    except Exception:  # no TensorRT or no CUDA: the gpu tests do not apply here
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with TensorRT")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"golden reference data not found at {REFERENCE} (set EDGE_REFERENCE)")
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """Every family's tiny bundles (seeded random weights), as ``python -m export all`` writes them."""
    from export.__main__ import tiny_bundles as exports

    root = tmp_path_factory.mktemp("tiny-bundles")
    return {name: export(root / name, seed=0, log=lambda _: None) for name, export in exports().items()}


@pytest.fixture
def double_bundle(tmp_path) -> Bundle:
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
