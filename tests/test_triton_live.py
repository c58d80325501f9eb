"""Every pipeline against a live Triton Inference Server (the ``tritonserver`` binary of nvidia-pytriton,
started here from ``.venv-triton``; ``make test`` makes it) serving the tiny bundles' repository:
the same results as local ONNX Runtime through the component models (HTTP and gRPC) and through the
pipeline models, 16 concurrent clients with batched executions, and clear errors that do not hang."""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import runtime
from engines.triton_repo import write_repository
from engines.triton_server import LocalServer
from runtime import Backend, Bundle, BundleError
from runtime.arrays import psnr
from runtime.backends.onnxrt import OrtSession
from runtime.backends.triton import ServerUnavailable, TritonSession
from runtime.images import load_rgb
from tests.paths import ASSETS, REPO

pytestmark = pytest.mark.triton

SERVER_PYTHON = Path(os.environ.get("EDGE_TRITON_PYTHON", REPO / ".venv-triton" / "bin" / "python"))
PROMPT = "a red balloon over the sea"
IMAGE = (np.random.default_rng(0).random((61, 83, 3)) * 255).astype(np.uint8)
BEACH = load_rgb(ASSETS / "beach.png")
TEXTS = ["a dog", "a cat on a mat", "waves"]


def _items() -> dict[str, list]:
    rng = np.random.default_rng(1)
    return {"text": TEXTS, "vision": [BEACH, IMAGE], "audio": [rng.standard_normal(16000).astype(np.float32) * 0.1],
            "depth": [rng.random((224, 224), dtype=np.float32) * 5], "thermal": [rng.random((224, 224), np.float32)],
            "imu": [rng.standard_normal((6, 2000)).astype(np.float32)]}


@pytest.fixture(scope="module")
def server(tiny_bundles, tmp_path_factory):
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no Triton server environment at {SERVER_PYTHON}: run `make .venv-triton/.server` "
                    "(or set EDGE_TRITON_PYTHON to a Python with nvidia-pytriton)")
    repo = tmp_path_factory.mktemp("triton-repo")
    for bundle in tiny_bundles.values():
        write_repository(bundle, repo, platform="python", max_queue_delay_us=20000, log=lambda _: None)
    with LocalServer(repo, SERVER_PYTHON) as running:
        yield running


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_pipeline_through_the_component_models_equals_local(server, tiny_bundles, protocol):
    backend = Backend("triton", url=getattr(server, f"{protocol}_url"))
    for name, image in (("videocrafter1-tiny-t2v", None), ("videocrafter1-tiny-i2v", BEACH)):
        local = runtime.generate_video(PROMPT, bundle=tiny_bundles[name], image=image, steps=2, seed=1,
                                       progress=False, backend="onnxruntime")
        served = runtime.generate_video(PROMPT, bundle=tiny_bundles[name], image=image, steps=2, seed=1,
                                        progress=False, backend=backend)
        assert psnr(local, served) >= 60, name

    with runtime.DepthPipeline(tiny_bundles["ait-tiny-depth"]) as here, \
            runtime.DepthPipeline(tiny_bundles["ait-tiny-depth"], backend=backend) as there:
        pixels = here.pixels(IMAGE, 128, 128)
        (logits, codes), (local_logits, local_codes) = there.tokens(pixels), here.tokens(pixels)
        np.testing.assert_array_equal(codes, local_codes)
        np.testing.assert_allclose(logits, local_logits, atol=1e-5)
        np.testing.assert_allclose(runtime.estimate_depth(IMAGE, bundle=there, progress=False),
                                   runtime.estimate_depth(IMAGE, bundle=here, progress=False), atol=1e-5)

    with runtime.InstancePipeline(tiny_bundles["ait-tiny-insseg"]) as here, \
            runtime.InstancePipeline(tiny_bundles["ait-tiny-insseg"], backend=backend) as there:
        local, served = here.segment(IMAGE, seed=4, progress=False), there.segment(IMAGE, seed=4, progress=False)
        np.testing.assert_array_equal(served.classes, local.classes)
        np.testing.assert_array_equal(served.boxes, local.boxes)  # boxes are the sampled tokens, scaled
        np.testing.assert_array_equal(served.masks, local.masks)
        np.testing.assert_allclose(served.scores, local.scores, atol=1e-6)

    local = runtime.embed(_items(), bundle=tiny_bundles["imagebind-tiny"])
    served = runtime.embed(_items(), bundle=tiny_bundles["imagebind-tiny"], backend=backend)
    for modality, embedding in local.items():
        assert _cosines(served[modality], embedding).min() >= 0.99999, modality


def _call(url: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    import tritonclient.http as http
    from tritonclient.utils import np_to_triton_dtype

    client = http.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    try:
        tensors = []
        for name, value in inputs.items():
            tensors.append(http.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype)))
            tensors[-1].set_data_from_numpy(value)
        result = client.infer(model, tensors, outputs=[http.InferRequestedOutput(n) for n in outputs])
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


def test_pipeline_models_answer_in_one_call_as_the_local_pipelines(server, tiny_bundles):
    prompt = np.array([PROMPT.encode()], dtype=object)
    steps, seed = np.array([2], np.int64), np.array([1], np.int64)
    video = _call(server.http_url, "videocrafter1-tiny-t2v-pipeline", {"PROMPT": prompt, "STEPS": steps, "SEED": seed},
                  ["VIDEO"])["VIDEO"]
    local = runtime.generate_video(PROMPT, bundle=tiny_bundles["videocrafter1-tiny-t2v"], steps=2, seed=1,
                                   progress=False, backend="onnxruntime")
    assert video.shape == local.shape and psnr(local, video) >= 60
    video = _call(server.http_url, "videocrafter1-tiny-i2v-pipeline",
                  {"PROMPT": prompt, "IMAGE": BEACH, "STEPS": steps, "SEED": seed}, ["VIDEO"])["VIDEO"]
    local = runtime.generate_video(PROMPT, bundle=tiny_bundles["videocrafter1-tiny-i2v"], image=BEACH, steps=2,
                                   seed=1, progress=False, backend="onnxruntime")
    assert psnr(local, video) >= 60

    depth = _call(server.http_url, "ait-tiny-depth-pipeline", {"IMAGE": IMAGE}, ["DEPTH"])["DEPTH"]
    np.testing.assert_allclose(depth, runtime.estimate_depth(IMAGE, bundle=tiny_bundles["ait-tiny-depth"],
                                                             progress=False), atol=1e-5)

    found = _call(server.http_url, "ait-tiny-insseg-pipeline", {"IMAGE": IMAGE, "SEED": np.array([4], np.int64)},
                  ["BOXES", "SCORES", "CLASSES", "MASKS"])
    local = runtime.segment_instances(IMAGE, bundle=tiny_bundles["ait-tiny-insseg"], seed=4, progress=False)
    np.testing.assert_array_equal(found["CLASSES"], local.classes)
    np.testing.assert_array_equal(found["BOXES"], local.boxes)
    np.testing.assert_array_equal(found["MASKS"], local.masks)

    items = _items()
    inputs = {"TEXT": np.array([t.encode() for t in TEXTS], dtype=object), "VISION": np.stack([IMAGE, IMAGE]),
              **{m.upper(): np.stack(items[m]) for m in ("audio", "depth", "thermal", "imu")}}
    found = _call(server.http_url, "imagebind-tiny-pipeline", inputs, [f"{m}_EMBEDDING" for m in inputs])
    items["vision"] = [IMAGE, IMAGE]
    local = runtime.embed(items, bundle=tiny_bundles["imagebind-tiny"])
    for modality, embedding in local.items():
        assert _cosines(found[f"{modality.upper()}_EMBEDDING"], embedding).min() >= 0.99999, modality


def _statistics(url: str, model: str) -> tuple[int, int, int]:
    """(requests, inferences, executions) of a model: fewer executions than requests means batches formed."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url.removeprefix("http://"))
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
        return (int(stats["inference_stats"]["success"]["count"]), int(stats["inference_count"]),
                int(stats["execution_count"]))
    finally:
        client.close()


def test_sixteen_concurrent_clients_get_correct_results_in_batched_executions(server, tiny_bundles):
    bundle = Bundle(tiny_bundles["imagebind-tiny"])
    texts = [[f"client {c} request {r}"] for c in range(16) for r in range(4)]
    with OrtSession(bundle, "text_encoder") as local:
        tokenizer = runtime.EmbeddingPipeline(bundle, modalities=["text"]).tokenizer
        feeds = [tokenizer(t, context_length=77) for t in texts]
        expected = [local.run({"text": f})["embedding"] for f in feeds]
    before = _statistics(server.http_url, "imagebind-tiny-text_encoder")
    start = threading.Barrier(16, timeout=60)

    shared = TritonSession(bundle, "text_encoder", url=server.http_url, timeout=60)  # opened in this thread

    def client(index: int) -> list[np.ndarray]:
        """Odd clients over gRPC, even ones over HTTP; every fourth uses the shared session."""
        url = server.grpc_url if index % 2 else server.http_url
        with contextlib.nullcontext(shared) if index % 4 == 0 else TritonSession(
                bundle, "text_encoder", url=url, timeout=60) as session:
            start.wait()
            return [session.run({"text": feeds[index * 4 + r]})["embedding"] for r in range(4)]

    with shared, ThreadPoolExecutor(16) as pool:
        results = [e for per_client in pool.map(client, range(16), timeout=300) for e in per_client]
    for found, reference in zip(results, expected):
        np.testing.assert_allclose(found, reference, atol=1e-5)
    requests, inferences, executions = np.subtract(_statistics(server.http_url, "imagebind-tiny-text_encoder"), before)
    assert requests == inferences == 64  # one text per request
    assert executions < requests, f"{requests} requests ran in {executions} executions: no batch formed"


def test_wrong_model_and_shape_outside_the_profile_give_clear_errors(server, tiny_bundles):
    bundle = Bundle(tiny_bundles["imagebind-tiny"])
    with pytest.raises(BundleError, match="no ready model 'other-text_encoder'; it serves .*imagebind-tiny-text_enc"):
        TritonSession(bundle, "text_encoder", url=server.grpc_url, prefix="other-", timeout=10)
    with pytest.raises(BundleError, match=r"has tensors \{'inputs': \[\('tokens', 'INT64'\)\].*this bundle's "
                                          r"component has \{'inputs': \[\('text', 'INT64'\)\]"):
        TritonSession(bundle, "text_encoder", url=server.http_url, prefix="videocrafter1-tiny-t2v-", timeout=10)
    too_many = {"text": np.zeros((9, 77), np.int64)}
    with OrtSession(bundle, "text_encoder") as local, pytest.raises(BundleError) as here:
        local.run(too_many)
    for url in (server.http_url, server.grpc_url):
        with TritonSession(bundle, "text_encoder", url=url, timeout=10) as session:
            with pytest.raises(BundleError) as there:
                session.run(too_many)
            assert str(there.value) == str(here.value)  # the manifest's check, before any request
            with pytest.raises(BundleError, match="to model 'imagebind-tiny-text_encoder': the Triton server at "
                                                  f"{url} refused or failed it"):
                session._infer({"text": np.zeros((1, 76), np.int64)})  # past the check: the server refuses it
    import tritonclient.http as http

    with pytest.raises(Exception, match="imagebind-tiny-pipeline: .*expected"):
        _call(server.http_url, "imagebind-tiny-pipeline", {"TEXT": np.array([b"a"], dtype=object),
                                                          "IMU": np.zeros((1, 6, 7), np.float32)}, ["TEXT_EMBEDDING"])
    assert http.InferenceServerClient(server.http_url.removeprefix("http://")).is_server_live()


def test_a_stopped_server_gives_a_clear_error_and_nothing_hangs(tiny_bundles, tmp_path):
    bundle = Bundle(tiny_bundles["imagebind-tiny"])
    write_repository(bundle, tmp_path, platform="python", log=lambda _: None)
    outcome: dict[str, object] = {}

    def scenario():
        with LocalServer(tmp_path, SERVER_PYTHON) as small:
            urls = (small.http_url, small.grpc_url)
            sessions = [TritonSession(bundle, "text_encoder", url=url, timeout=5) for url in urls]
            sessions[0].run({"text": np.zeros((1, 77), np.int64)})
        errors = []
        for session in sessions:  # the server is gone under an open session: retried, then a clear error
            with pytest.raises(ServerUnavailable, match=r"request text_encoder-\w+-\d+ to model 'imagebind-tiny-"
                                                        "text_encoder': server unavailable, retry later") as caught:
                session.run({"text": np.zeros((1, 77), np.int64)})
            errors.append(str(caught.value))
        for url in urls:  # and nobody answers a new one
            with pytest.raises(BundleError, match=f"no Triton server reachable at {url}") as caught:
                TritonSession(bundle, "text_encoder", url=url, timeout=5)
            errors.append(str(caught.value))
        outcome["errors"] = errors

    worker = threading.Thread(target=scenario, daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert not worker.is_alive(), "a call against the stopped server hung"
    assert len(outcome.get("errors", [])) == 4, "the scenario failed; see its exception above"
