"""Shared fixtures: the golden reference folders and the GPU marker."""
from __future__ import annotations

from pathlib import Path

import pytest
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
