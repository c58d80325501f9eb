"""Hardening: odd prompts and images, NaN outputs, damaged graphs, wrong checkpoints, threads."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from safetensors.torch import save_file

import runtime
from export.__main__ import main as export_main
from export.videocrafter1.bundle import build_modules, export_bundle
from export.videocrafter1.graphs import PREFIXES
from export.videocrafter1.presets import tiny_i2v
from runtime.bundle import Bundle, BundleError, BundleWriter, Component, Manifest, TensorSpec, write_manifest
from runtime.videocrafter1.image_conditioning import conditioning_pixels
from runtime.backends import NonFiniteOutputError, OrtSession
from runtime.tokenizer import ClipTokenizer

FAST = dict(steps=2, frames=2, progress=False)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "videocrafter1-tiny-i2v"
    export_bundle(tiny_i2v(), out, seed=0, log=lambda line: None)
    return runtime.VideoPipeline(out, backend="onnxruntime")  # the tests reach into ONNX Runtime's session


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)


def test_tokenizer_warns_how_many_tokens_were_dropped():
    with pytest.warns(UserWarning, match="25 of its 100 tokens dropped"):
        tokens = ClipTokenizer()("word " * 100)
    assert tokens.shape == (1, 77) and tokens[0, -1] == ClipTokenizer().end_id


def test_empty_and_over_long_prompts_generate(pipeline):
    empty = runtime.generate_video("", bundle=pipeline, image=_image(), **FAST)
    with pytest.warns(UserWarning, match="tokens dropped"):
        long = runtime.generate_video("a corgi " * 60, bundle=pipeline, image=_image(), **FAST)
    for video in (empty, long):
        assert video.shape == (2, 64, 64, 3) and video.dtype == np.uint8
    assert not np.array_equal(empty, long)


@pytest.mark.parametrize("image", [
    np.full((37, 53), 128, np.uint8),  # grayscale, odd size
    np.random.default_rng(1).integers(0, 256, (300, 211, 4), dtype=np.uint8),  # RGBA, larger than the video
    np.random.default_rng(2).integers(0, 65536, (9, 700, 3), dtype=np.uint16),  # 16-bit, extreme aspect
    np.zeros((1, 1), np.uint8),  # a single pixel
], ids=["gray", "rgba", "uint16", "1x1"])
def test_images_of_any_size_and_mode_generate(pipeline, image):
    video = runtime.generate_video("a corgi", bundle=pipeline, image=image, **FAST)
    assert video.shape == (2, 64, 64, 3)


def test_16_bit_png_file_matches_its_8_bit_array(pipeline, tmp_path):
    deep = np.random.default_rng(3).integers(0, 65536, (30, 50, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep[:, :, ::-1])  # OpenCV writes BGR
    from_file = runtime.generate_video("x", bundle=pipeline, image=tmp_path / "deep.png", **FAST)
    from_array = runtime.generate_video("x", bundle=pipeline, image=deep, **FAST)
    np.testing.assert_array_equal(from_file, from_array)


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 400), width=st.integers(1, 400), channels=st.sampled_from([None, 3, 4]),
       deep=st.booleans(), seed=st.integers(0, 2**16))
def test_conditioning_pixels_are_finite_and_bounded_for_any_image(height, width, channels, deep, seed):
    shape = (height, width) if channels is None else (height, width, channels)
    dtype, top = (np.uint16, 65536) if deep else (np.uint8, 256)
    image = np.random.default_rng(seed).integers(0, top, shape, dtype=dtype)
    pixels = conditioning_pixels(image, height=64, width=64, size=224, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))
    assert pixels.shape == (1, 3, 224, 224) and pixels.dtype == np.float32
    # [0, 1] after the mapping, up to bicubic overshoot, then normalised
    assert np.isfinite(pixels).all() and np.abs(pixels).max() < 4.0


def _one_graph_bundle(tmp_path, graph_bytes: bytes, name: str = "vae_decoder"):
    component = Component(name=name, file=f"{name}.onnx", inputs=(TensorSpec("z", "float32", (1, 4)),),
                          outputs=(TensorSpec("decoded", "float32", (1, 4)),), profile={})
    out = tmp_path / "bundle"
    with BundleWriter(out) as root:
        (root / component.file).write_bytes(graph_bytes)
        write_manifest(root, Manifest("videocrafter1", "test", {name: component}, {}, files={component.file: {}}))
    return Bundle(out)


def _sqrt_graph() -> bytes:
    node = helper.make_node("Sqrt", ["z"], ["decoded"])
    graph = helper.make_graph([node], "sqrt", [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("decoded", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_nan_output_names_the_component(tmp_path):
    session = OrtSession(_one_graph_bundle(tmp_path, _sqrt_graph()), "vae_decoder")
    assert np.allclose(session.run({"z": np.full((1, 4), 4.0, np.float32)})["decoded"], 2.0)
    with pytest.raises(NonFiniteOutputError, match=r"vae_decoder: output 'decoded' has 2 NaN/Inf values of 4"):
        session.run({"z": np.array([[1.0, -1.0, -2.0, 9.0]], np.float32)})


def test_nan_from_the_unet_stops_generation(pipeline, monkeypatch):
    unet = pipeline.sessions["unet"]
    real = unet._session

    class Overflowing:
        def run(self, names, feeds):
            return [np.full_like(feeds["x"], np.inf)]

    monkeypatch.setattr(unet, "_session", Overflowing())
    with pytest.raises(NonFiniteOutputError, match="unet: output 'eps'"):
        runtime.generate_video("a corgi", bundle=pipeline, image=_image(), **FAST)
    monkeypatch.setattr(unet, "_session", real)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=2000) | st.binary(max_size=200).map(lambda tail: _sqrt_graph()[:40] + tail))
def test_random_bytes_as_onnx_file_give_bundle_error(tmp_path_factory, data):
    bundle = _one_graph_bundle(tmp_path_factory.mktemp("fuzz"), data)
    with pytest.raises(BundleError, match=r"vae_decoder: ONNX Runtime could not load .*vae_decoder\.onnx"):
        OrtSession(bundle, "vae_decoder")


def test_checkpoint_of_another_variant_lists_the_mismatch(tmp_path, capsys):
    modules = build_modules(tiny_i2v(), None, trust=False, seed=0)
    state = {PREFIXES["unet"] + k: v.contiguous() for k, v in modules["unet"].state_dict().items()}
    save_file(state, tmp_path / "i2v-unet.safetensors")
    code = export_main(["videocrafter1", "--variant", "tiny-t2v", "--checkpoint", str(tmp_path / "i2v-unet.safetensors"),
                        "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "out").exists()
    assert "checkpoint does not fit tiny-t2v unet" in error
    assert "missing keys" in error and "unexpected keys" in error
    assert "--variant/--config" in error


def test_two_threads_share_one_pipeline(pipeline):
    jobs = [("a corgi on the beach", 1), ("a red car at night", 2)]
    alone = [runtime.generate_video(p, bundle=pipeline, image=_image(s), seed=s, **FAST) for p, s in jobs]
    together: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        prompt, seed = jobs[index]
        together[index] = runtime.generate_video(prompt, bundle=pipeline, image=_image(seed), seed=seed, **FAST)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, video in enumerate(alone):
        np.testing.assert_array_equal(together[index], video)
    assert not np.array_equal(alone[0], alone[1])
