"""The OpenVINO backend against ONNX Runtime on every component of each family's tiny bundle.

Thresholds. FP32: both backends compute in FP32 and differ only in kernel order and
fusions; measured on the tiny bundles the largest difference is 2e-6 of the output's
largest magnitude (cosine 1 - 1e-9), so an error of 1e-5 of that magnitude (about 80
FP32 ulps) or a cosine below 1 - 1e-6 is a real difference, not rounding. BF16: 8
mantissa bits (unit roundoff 2^-8 = 3.9e-3) over the whole network; measured cosines
are >= 0.9999, so 0.999 leaves ten times the margin on 1 - cosine, and a difference
below 1e-4 of the magnitude would mean BF16 was not used at all.
"""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from runtime.arrays import agreement
from runtime.backends import OrtSession, open_session
from runtime.backends.ov import (CacheReloadWarning, OpenVINOSession, PrecisionFallbackWarning, default_cache_dir,
                                 partial_shapes)
from runtime.bundle import Bundle, BundleError
from runtime.cpu import this_cpu

pytest.importorskip("openvino")

TINY = {"videocrafter1": "videocrafter1-tiny-i2v", "ait": "ait-tiny-insseg", "imagebind": "imagebind-tiny"}
FP32_REL, FP32_COS, BF16_COS, BF16_MIN_REL = 1e-5, 1 - 1e-6, 0.999, 1e-4


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Bundle]:
    """One tiny bundle of each family (the i2v one has every VideoCrafter component), seeded random weights."""
    import importlib

    root = tmp_path_factory.mktemp("ov")
    found = {}
    for family, folder in TINY.items():
        export = importlib.import_module(f"export.{family}.cli").tiny_bundles()[folder]
        found[family] = Bundle(export(root / folder, log=lambda _: None))
    return found


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "ov-cache"


def opt_feeds(component, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds at the profile's opt shape: N(0, 1) floats, integers in 0..7 (valid token ids, timesteps, indices)."""
    rng = np.random.default_rng(seed)
    return {t.name: (rng.integers(0, 8, size=component.profile[t.name]["opt"]) if t.dtype.startswith("int")
                     else rng.standard_normal(component.profile[t.name]["opt"]).astype(np.float32))
            for t in component.inputs}


def _compare(found: dict, reference: dict) -> list[tuple[str, float, float]]:
    """(output, max abs difference / max |reference|, cosine) per output."""
    assert sorted(found) == sorted(reference)
    rows = []
    for name, ref in reference.items():
        assert found[name].dtype == ref.dtype and found[name].shape == ref.shape
        score = agreement(ref, found[name])
        rows.append((name, score.max_abs / max(float(np.abs(ref).max()), 1e-12), score.cosine))
    return rows


def ran_as(precision: str) -> str:
    """What OpenVINO runs a request of ``precision`` in on this CPU (:mod:`runtime.cpu`): BF16 only with native
    BF16; FP16 only with FP16 arithmetic, else as BF16 where that is native (OpenVINO 2026.4), else FP32."""
    cpu = this_cpu()
    if precision == "f16" and cpu.fp16:
        return "f16"
    return "bf16" if precision in ("bf16", "f16") and cpu.bf16 else "fp32"


def _check_against_onnx_runtime(name, ran, found, reference):
    for output, rel, cosine in _compare(found, reference):
        if ran == "fp32":
            assert rel <= FP32_REL and cosine >= FP32_COS, (name, ran, output, rel, cosine)
        elif reference[output].dtype.kind == "f":
            assert cosine >= BF16_COS, (name, ran, output, cosine)
            assert rel >= BF16_MIN_REL, (name, ran, output, rel)


@pytest.mark.parametrize("family", TINY)
def test_every_precision_in_turn_on_one_cache_folder_matches_onnx_runtime(bundles, family, cache):
    """fp32, bf16, f16, fp32 opened in that order on one cache root, every component: each is right (on an AMX
    CPU, one OpenVINO cache folder shared by the precisions gave NaN or cosine 0.25 in BF16 after FP32), each
    reports what it ran in and warns where that is not what was asked, and the second fp32 loads its blob."""
    bundle = bundles[family]
    for name, component in bundle.manifest.components.items():
        feeds = opt_feeds(component)
        with OrtSession(bundle, name) as ort:
            reference = ort.run(feeds)
        folders = []
        for precision in ("fp32", "bf16", "f16", "fp32"):
            ran = ran_as(precision)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with open_session(bundle, name, backend="openvino", precision=precision, cache_dir=cache) as session:
                    found = session.run(feeds)
            assert session.precision == ran, (name, precision)
            fallbacks = [w for w in caught if issubclass(w.category, PrecisionFallbackWarning)]
            assert len(fallbacks) == (ran != precision), (name, precision, [str(w.message) for w in caught])
            if fallbacks:
                assert f"runs {ran}, not the {precision} asked" in str(fallbacks[0].message)
            assert not [w for w in caught if issubclass(w.category, CacheReloadWarning)], name
            _check_against_onnx_runtime(name, ran, found, reference)
            folders.append(session.cache_folder)
        assert folders[0] == folders[3] and len(set(folders)) == 3 and folders[0].parent.parent.parent == cache


def test_symbolic_axes_are_bounded_by_the_profile_and_out_of_profile_is_refused(bundles, cache):
    bundle = bundles["ait"]
    component = bundle.component("decoder_step")
    with OpenVINOSession(bundle, "decoder_step", cache_dir=cache) as session:
        declared = {p.get_any_name(): [(d.get_min_length(), d.get_max_length()) for d in p.get_partial_shape()]
                    for p in session._compiled.inputs}
        # profile min (2, 1, 4, 0, 8), max (2, 8, 4, 62, 8)
        assert declared["self_k"] == [(2, 2), (1, 8), (4, 4), (0, 62), (8, 8)]
        assert declared["token_embedding"] == [(1, 8), (1, 1), (32, 32)]
        assert partial_shapes(component)["token_embedding"] == [(1, 8), 1, 32]
        feeds = opt_feeds(component)
        feeds["self_k"] = feeds["self_v"] = np.zeros((2, 1, 4, 63, 8), np.float32)
        with pytest.raises(BundleError, match=r"self_k' past is 63, but this bundle supports 0\.\.62"):
            session.run(feeds)
        with pytest.raises(RuntimeError):  # OpenVINO itself refuses it too, below our check
            session._infer(feeds)
    with pytest.raises(BundleError, match="decoder_step: the OpenVINO session is closed"):
        session.run(opt_feeds(component))


def test_bad_precision_is_refused(bundles, cache):
    with pytest.raises(BundleError, match="precision 'int4' is not supported; expected one of fp32, bf16, f16"):
        OpenVINOSession(bundles["imagebind"], "text_encoder", precision="int4", cache_dir=cache)


def test_compiled_models_are_cached_reloaded_and_compiled_again_when_damaged(bundles, cache, monkeypatch):
    bundle = bundles["imagebind"]
    feeds = opt_feeds(bundle.component("depth_encoder"))
    with OpenVINOSession(bundle, "depth_encoder", cache_dir=cache) as first:
        expected = first.run(feeds)
    blobs = sorted(first.cache_folder.glob("*.blob"))
    assert len(blobs) == 1
    stamp = blobs[0].stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good blob loads without a word
        with OpenVINOSession(bundle, "depth_encoder", cache_dir=cache) as second:
            np.testing.assert_array_equal(second.run(feeds)["embedding"], expected["embedding"])
    assert sorted(first.cache_folder.glob("*.blob")) == blobs and blobs[0].stat().st_mtime_ns == stamp  # loaded
    data = blobs[0].read_bytes()
    blobs[0].write_bytes(data[: len(data) // 2])  # a damaged blob: compiled again, said, and replaced
    with pytest.warns(CacheReloadWarning, match=r"depth_encoder: OpenVINO could not load the compiled model "
                                                r".*\.blob in .* and compiled the graph again"):
        with OpenVINOSession(bundle, "depth_encoder", cache_dir=cache) as third:
            np.testing.assert_array_equal(third.run(feeds)["embedding"], expected["embedding"])
    assert blobs[0].stat().st_size > len(data) // 2
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent / "xdg"))
    assert default_cache_dir() == cache.parent / "xdg" / "edge-deploy" / "openvino"


def test_a_damaged_graph_is_refused_with_the_file_named(bundles, tmp_path, cache):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(BundleError, match="depth_encoder: OpenVINO could not read .*broken.onnx"):
        OpenVINOSession(bundles["imagebind"], "depth_encoder", graph=bad, cache_dir=cache)


def test_without_openvino_the_backend_says_how_to_install_it(bundles, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BundleError, match=r"depth_encoder: backend 'openvino' needs the openvino package"):
        OpenVINOSession(bundles["imagebind"], "depth_encoder")


def test_one_session_serves_several_threads(bundles, cache):
    from concurrent.futures import ThreadPoolExecutor

    bundle = bundles["imagebind"]
    feeds = [opt_feeds(bundle.component("depth_encoder"), seed) for seed in range(4)]
    with OpenVINOSession(bundle, "depth_encoder", cache_dir=cache) as session:
        expected = [session.run(f)["embedding"] for f in feeds]
        with ThreadPoolExecutor(4) as pool:
            found = list(pool.map(lambda f: session.run(f)["embedding"], feeds * 3))
    for index, result in enumerate(found):
        np.testing.assert_array_equal(result, expected[index % 4])


def test_auto_on_a_cpu_puts_the_decoder_step_and_fused_attention_on_onnx_runtime(bundles, cache):
    """The rule of docs/backends.md on every component of the tiny bundles: the AiT decoder step (the one
    component that extends a KV cache per call) and the components with an ONNX Runtime graph (VideoCrafter's
    UNet: fused attention) on ONNX Runtime, every other component on OpenVINO FP32."""
    chosen, fused = {}, set()
    for family, bundle in bundles.items():
        for name, component in bundle.manifest.components.items():
            with open_session(bundle, name, backend="auto", cache_dir=cache) as session:
                chosen[family, name] = session.label
            if component.ort_graph:
                fused.add((family, name))
    assert ("videocrafter1", "unet") in fused
    on_ort = {("ait", "decoder_step")} | fused
    assert {key for key, label in chosen.items() if label == "ONNX Runtime"} == on_ort
    assert {label for key, label in chosen.items() if key not in on_ort} == {"OpenVINO"}
