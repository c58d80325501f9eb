"""ImageBind runtime against torch on the tiny preset: embeddings per modality through the full
preprocessing path, retrieval ranking, zero-shot probabilities, the released-checkpoint export path,
and clear errors for bad inputs."""
from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from export.imagebind.bundle import build_encoders, export_bundle
from export.imagebind.presets import tiny
from runtime.imagebind.pipeline import EmbeddingIndex, EmbeddingPipeline, embed, similarity, top_k, zero_shot
from runtime.imagebind.inputs import read_wav
from runtime.imagebind.preprocess import load_and_transform_audio, load_and_transform_vision
from runtime.tokenizer import ClipTokenizer
from tests.paths import ASSETS
from tests.recording import Recorder

SEED = 3


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagebind") / "imagebind-tiny"
    export_bundle(tiny(), out, seed=SEED, log=lambda _: None)
    return EmbeddingPipeline(out), build_encoders(tiny(), seed=SEED)


def test_opened_with_defaults_every_encoder_runs_on_openvino(tiny_bundle):
    """``backend="auto"`` (the default) on a CPU with OpenVINO: no encoder extends a cache (docs/backends.md)."""
    pytest.importorskip("openvino")
    pipeline = tiny_bundle[0]
    labels = {name: session.label for name, session in pipeline.sessions.items()}
    assert labels == {f"{m}_encoder": "OpenVINO" for m in pipeline.modalities}
    assert len(pipeline.modalities) == 6


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((200 + 17 * i, 260 - 9 * i, 3)) * 255).astype(np.uint8) for i in range(count)]


def _torch_embed(encoder, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return encoder(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _items_and_torch_inputs() -> dict[str, tuple[list, np.ndarray]]:
    """Per modality: the runtime items, and the official model input made by the official loaders' numpy form."""
    rng = np.random.default_rng(1)
    images = [str(ASSETS / "beach.png"), *_images(2)]
    texts = ["a dog barking", "ocean waves on a sunny beach", ""]
    short = rng.standard_normal(16000 * 3).astype(np.float32) * 0.1
    stereo = (rng.standard_normal((2, 22050 * 4)).astype(np.float32) * 0.1, 22050)
    sounds = [str(ASSETS / "chime.wav"), short, stereo]
    waves = [read_wav(ASSETS / "chime.wav"), (short, 16000), stereo]
    maps = [rng.random((224, 224)).astype(np.float32) for _ in range(2)]
    imu = [rng.standard_normal((6, 2000)).astype(np.float32) for _ in range(2)]
    return {
        "vision": (images, np.stack([load_and_transform_vision(i) for i in images])),
        "text": (texts, ClipTokenizer()(texts, context_length=77)),
        "audio": (sounds, np.stack([load_and_transform_audio(w, r) for w, r in waves])),
        "depth": (maps, np.stack(maps)[:, None]),
        "thermal": (maps[::-1], np.stack(maps[::-1])[:, None]),
        "imu": (imu, np.stack(imu)),
    }


def test_runtime_embeddings_match_torch_per_modality(tiny_bundle):
    pipeline, encoders = tiny_bundle
    cases = _items_and_torch_inputs()
    found = embed({m: items for m, (items, _) in cases.items()}, bundle=pipeline)
    for modality, (items, x) in cases.items():
        expected = _torch_embed(encoders[modality], x)
        got = found[modality]
        assert got.shape == expected.shape == (len(items), 32) and got.dtype == np.float32, modality
        cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        assert cosine.min() >= 0.9999, f"{modality}: cosine {cosine}"
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4, err_msg=modality)


def test_audio_embedding_is_mean_of_clip_embeddings_with_scale(tiny_bundle):
    pipeline, _ = tiny_bundle
    (emb,) = pipeline.embed_modality("audio", [str(ASSETS / "waves.wav")])
    assert np.linalg.norm(emb) <= pipeline.logit_scale("audio") + 1e-4
    assert pipeline.logit_scale("audio") == pytest.approx(20.0)


def test_retrieval_ranking_matches_torch(tiny_bundle, tmp_path):
    pipeline, encoders = tiny_bundle
    images = _images(6, seed=5)
    queries = ["a red square", "a photo of noise", "a beach"]
    stored = pipeline.embed_modality("vision", images)
    index = EmbeddingIndex(stored, [f"image-{i}" for i in range(6)], modality="vision")
    loaded = EmbeddingIndex.load(index.save(tmp_path / "index"))
    assert (tmp_path / "index.json").is_file() and loaded.metadata == index.metadata
    runtime_order, _ = top_k(pipeline.embed_modality("text", queries), loaded.embeddings, k=6)
    torch_images = _torch_embed(encoders["vision"], np.stack([load_and_transform_vision(i) for i in images]))
    torch_texts = _torch_embed(encoders["text"], ClipTokenizer()(queries, context_length=77))
    torch_order = np.argsort(-(torch_texts @ torch_images.T), axis=1, kind="stable")
    np.testing.assert_array_equal(runtime_order, torch_order)
    best = loaded.search(pipeline.embed_modality("text", queries[:1]), k=2)[0]
    assert [name for name, _ in best] == [f"image-{i}" for i in runtime_order[0, :2]]


def test_zero_shot_matches_torch_softmax(tiny_bundle):
    pipeline, encoders = tiny_bundle
    images, labels = _images(2, seed=7), ["dog", "car", "beach"]
    probabilities = zero_shot(images, labels, bundle=pipeline, template="a photo of a {}.")
    img = torch.from_numpy(_torch_embed(encoders["vision"], np.stack([load_and_transform_vision(i) for i in images])))
    txt = torch.from_numpy(_torch_embed(encoders["text"],
                                        ClipTokenizer()([f"a photo of a {x}." for x in labels], context_length=77)))
    expected = torch.softmax(img @ txt.T, dim=-1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)


def test_more_items_than_the_profile_takes_run_in_batches(tiny_bundle):
    pipeline, _ = tiny_bundle
    images = _images(10, seed=11)
    assert pipeline.batch_limit("vision_encoder") == 8
    with pipeline.substituted(lambda name, s: Recorder(s) if name == "vision_encoder" else None):
        batched = pipeline.embed_modality("vision", images)
        assert pipeline.sessions["vision_encoder"].batches == [8, 2]
    singles = np.concatenate([pipeline.embed_modality("vision", [image]) for image in images])
    np.testing.assert_allclose(batched, singles, atol=1e-5, rtol=1e-5)


def test_one_call_functions_take_backend_and_memory(tiny_bundle):
    pipeline, _ = tiny_bundle
    images, labels = _images(3, seed=12), ["dog", "car"]
    expected = pipeline.embed({"vision": images, "text": labels})
    found = embed({"vision": images, "text": labels}, bundle=pipeline.bundle.root, backend="onnxruntime",
                  memory="low")
    for modality in expected:
        np.testing.assert_allclose(found[modality], expected[modality], atol=1e-5, rtol=1e-5, err_msg=modality)
    np.testing.assert_allclose(zero_shot(images, labels, bundle=pipeline.bundle.root, backend="onnxruntime",
                                         memory="low"),
                               zero_shot(images, labels, bundle=pipeline), atol=1e-6)
    with pytest.raises(ValueError, match="memory must be one of normal, low, found 'none'"):
        embed({"text": labels}, bundle=pipeline.bundle.root, memory="none")


def test_released_checkpoint_path_loads_plain_state_dict(tiny_bundle, tmp_path):
    """A plain state_dict with official keys (as imagebind_huge.pth) exports per modality."""
    _, encoders = tiny_bundle
    state = {k: v for m in ("imu", "text") for k, v in encoders[m].state_dict().items()}
    torch.save(state, tmp_path / "imagebind.pth")
    out = export_bundle(tiny(), tmp_path / "bundle", checkpoint=tmp_path / "imagebind.pth", modalities=["imu"],
                        log=lambda _: None)
    x = np.random.default_rng(0).standard_normal((2, 6, 2000)).astype(np.float32)
    found = embed({"imu": list(x)}, bundle=out)["imu"]
    np.testing.assert_allclose(found, _torch_embed(encoders["imu"], x), atol=1e-5)
    with pytest.raises(ValueError, match="no keys for audio"):
        build_encoders(tiny(), ["audio"], checkpoint=tmp_path / "imagebind.pth")


def test_wav_reader_scales_like_torchaudio(tmp_path):
    pcm = np.array([[0, 16384, -32768, 32767], [1, -1, 2, -2]], dtype="<i2")
    with wave.open(str(tmp_path / "s.wav"), "wb") as f:
        f.setnchannels(2), f.setsampwidth(2), f.setframerate(8000), f.writeframes(pcm.T.tobytes())
    waveform, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000
    np.testing.assert_array_equal(waveform, pcm.astype(np.float32) / 32768)


@pytest.mark.parametrize("inputs, error, match", [
    ({"imu": [np.zeros((2000, 6), np.float32)]}, ValueError, r"expected imu of shape \(6, 2000\)"),
    ({"text": [3]}, TypeError, "expected text items to be strings"),
    ({"text": "a dog"}, TypeError, "wrap one item in a list"),
    ({"vision": []}, ValueError, "at least one vision item"),
    ({"vision": [np.zeros((64, 64), np.float32)]}, ValueError, r"expected an \(H, W, 3\) uint8"),
    ({"depth": [np.zeros((100, 100), np.float32)]}, ValueError, "expected depth of shape"),
    ({"audio": [np.zeros((2, 16000), np.float32)]}, ValueError, "expected a bare audio array to be 1-D"),
    ({"audio": ["sound.flac"]}, FileNotFoundError, "audio file not found"),
    ({"smell": [1]}, ValueError, "unknown modalities"),
])
def test_bad_inputs_are_refused_clearly(tiny_bundle, inputs, error, match):
    pipeline, _ = tiny_bundle
    with pytest.raises(error, match=match):
        pipeline.embed(inputs)


def test_flac_without_soundfile_says_so(tiny_bundle, tmp_path, monkeypatch):
    import sys

    (tmp_path / "a.flac").write_bytes(b"fLaC")
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(ImportError, match="needs the 'soundfile' package"):
        tiny_bundle[0].embed({"audio": [tmp_path / "a.flac"]})


def test_similarity_and_top_k_check_shapes():
    with pytest.raises(ValueError, match="same D"):
        similarity(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="1 <= k <= 2"):
        top_k(np.zeros((1, 3)), np.zeros((2, 3)), k=3)
