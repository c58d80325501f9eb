"""The bundle contract: atomic writes, size and sha256 checks, shape ranges, clean errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.bundle import MANIFEST, Bundle, BundleError, BundleWriter, Component, Manifest, TensorSpec, write_manifest


def _component() -> Component:
    return Component(
        name="unet", file="unet.onnx",
        inputs=(TensorSpec("x", "float32", ("batch", 4, "frames")),),
        outputs=(TensorSpec("eps", "float32", ("batch", 4, "frames")),),
        profile={"x": {"min": (1, 4, 2), "opt": (2, 4, 8), "max": (2, 4, 16)}},
    )


def _write(tmp_path, payload=b"graph bytes"):
    out = tmp_path / "bundle"
    with BundleWriter(out) as root:
        (root / "unet.onnx").write_bytes(payload)
        write_manifest(root, Manifest("videocrafter1", "test", {"unet": _component()}, {"fps": 8},
                                      files={"unet.onnx": {}}))
    return out


def test_roundtrip_and_hash(tmp_path):
    out = _write(tmp_path)
    bundle = Bundle(out, verify_hashes=True)
    assert bundle.component("unet").profile["x"]["max"] == (2, 4, 16)
    assert bundle.pipeline == {"fps": 8}
    assert bundle.component_path("unet") == out / "unet.onnx"


def test_interrupted_writer_leaves_nothing(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt):
        with BundleWriter(out) as root:
            (root / "unet.onnx").write_bytes(b"half")
            raise KeyboardInterrupt
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_rewrite_replaces_old_bundle(tmp_path):
    _write(tmp_path, b"one")
    out = _write(tmp_path, b"two two")
    assert (out / "unet.onnx").read_bytes() == b"two two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_truncated_file_refused_on_open(tmp_path):
    out = _write(tmp_path)
    (out / "unet.onnx").write_bytes(b"graph")
    with pytest.raises(BundleError, match="is 5 bytes, the manifest says 11"):
        Bundle(out)


def test_tampered_file_refused_on_first_use(tmp_path):
    out = _write(tmp_path)
    (out / "unet.onnx").write_bytes(b"graph BYTES")
    bundle = Bundle(out)  # same size: passes the fast check
    with pytest.raises(BundleError, match="tampered"):
        bundle.component_path("unet")


def test_missing_file_and_manifest(tmp_path):
    out = _write(tmp_path)
    (out / "unet.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle(out)
    with pytest.raises(BundleError, match="not a bundle"):
        Bundle(tmp_path / "elsewhere")


def test_unknown_component_lists_known(tmp_path):
    with pytest.raises(BundleError, match="has: unet"):
        Bundle(_write(tmp_path)).component("vae")


@pytest.mark.parametrize("shape, message", [
    ((2, 4, 20), r"frames is 20, but this bundle supports 2..16"),
    ((3, 4, 8), r"batch is 3, but this bundle supports 1..2"),
    ((2, 5, 8), r"axis 1 is 5, but this bundle supports 4"),
    ((2, 4), r"rank 2"),
])
def test_shapes_outside_profile(shape, message):
    with pytest.raises(BundleError, match=message):
        _component().check_shapes({"x": shape})


def test_shape_inside_profile_passes():
    _component().check_shapes({"x": np.zeros((1, 4, 2)).shape})


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_as_manifest_give_bundle_error(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("fuzz")
    (root / MANIFEST).write_bytes(data)
    with pytest.raises(BundleError):
        Bundle(root)


@settings(max_examples=40, deadline=None)
@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12))
def test_random_json_as_manifest_gives_bundle_error(tmp_path_factory, value):
    root = tmp_path_factory.mktemp("fuzz")
    payload = {"format": "edge-bundle/1", "family": value, "variant": "x", "components": value, "pipeline": value,
               "files": value}
    (root / MANIFEST).write_text(json.dumps(payload))
    try:
        Bundle(root)
    except BundleError:
        pass
