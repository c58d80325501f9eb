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


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """Every family's tiny bundles (seeded random weights), as ``python -m export all`` writes them."""
    from export.__main__ import tiny_bundles as exports

    root = tmp_path_factory.mktemp("tiny-bundles")
    return {name: export(root / name, seed=0, log=lambda _: None) for name, export in exports().items()}
