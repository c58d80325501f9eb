"""Serving that holds, against live Triton servers (the ``tritonserver`` of nvidia-pytriton, ``.venv-triton``)
on 127.0.0.1: a short soak of mixed requests, a flooded model answering "server busy, retry", a server
restarted under a run of requests, and two servers called in turn. Every answer is checked against the same
request run locally with ONNX Runtime; every loop is bounded in count and time."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import runtime
from benchmarks.serving import mixed_workloads, soak
from engines.triton_repo import PIPELINE_QUEUE_TIMEOUT_MS, QUEUE_DEPTH, read_config, write_repository
from engines.triton_server import LocalServer
from runtime import Backend, BundleError
from runtime.serving import PipelineClient
from runtime.backends.triton import Retry, ServerBusy
from tests.paths import REPO

pytestmark = pytest.mark.triton

SERVER_PYTHON = Path(os.environ.get("EDGE_TRITON_PYTHON", REPO / ".venv-triton" / "bin" / "python"))
SERVED = ("videocrafter1-tiny-t2v", "ait-tiny-depth", "imagebind-tiny")
PATIENT = Retry(attempts=80, backoff=0.25, max_backoff=2.0, deadline=240)  # outlasts a restart on a busy machine


@pytest.fixture(scope="module")
def bundles(tiny_bundles) -> dict[str, Path]:
    return {name: tiny_bundles[name] for name in SERVED}


@pytest.fixture(scope="module")
def repo(bundles, tmp_path_factory) -> Path:
    """The three bundles' models with the default queue policy."""
    if not SERVER_PYTHON.is_file():
        pytest.fail(f"no Triton server environment at {SERVER_PYTHON}: run `make .venv-triton/.server` "
                    "(or set EDGE_TRITON_PYTHON to a Python with nvidia-pytriton)")
    folder = tmp_path_factory.mktemp("serving-repo")
    for bundle in bundles.values():
        write_repository(bundle, folder, platform="python", log=lambda _: None)
    return folder


@pytest.fixture(scope="module")
def server(repo):
    with LocalServer(repo, SERVER_PYTHON) as running:
        yield running


@pytest.fixture(scope="module")
def workloads(bundles):
    return {w.bundle.name: w for w in mixed_workloads(bundles)}


def _successes(url: str, model: str) -> int:
    """How many requests ``model`` answered at ``url`` so far."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url.removeprefix("http://"))
    try:
        return int(client.get_inference_statistics(model)["model_stats"][0]["inference_stats"]["success"]["count"])
    finally:
        client.close()


def test_a_short_soak_has_no_errors_and_bounded_memory_growth(server, workloads):
    result = soak([server.http_url], list(workloads.values()), seconds=6, clients=3, rss=server.rss_bytes)
    rows = result["rows"]
    assert result["errors"] == [] and all(row["errors"] == 0 for row in rows), result["errors"]
    assert rows[-1]["requests"] == sum(row["requests"] for row in rows[:-1]) >= 6
    assert all(row["requests"] >= 1 and row["p50 ms"] <= row["p95 ms"] <= row["p99 ms"] for row in rows)
    memory = result["server_rss_mb"]
    assert memory["start"] > 200, "the server's RSS should count its Python-backend stubs too"
    assert memory["end"] - memory["start"] < 64, f"the server grew {memory['end'] - memory['start']:.1f} MB"


def test_a_flooded_model_answers_server_busy_at_once_and_a_retrying_client_gets_every_result(server, repo,
                                                                                          workloads):
    model = "videocrafter1-tiny-t2v-pipeline"
    policy = read_config(repo / model / "config.pbtxt").dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (QUEUE_DEPTH,
                                                                            PIPELINE_QUEUE_TIMEOUT_MS * 1000)
    video = workloads["videocrafter1-tiny-t2v"]
    flood = 16

    def send(client: PipelineClient, index: int, start: threading.Barrier) -> tuple[str, float, object]:
        variant, request_id = index % len(video.requests), f"flood-{index}"
        start.wait()
        began = time.perf_counter()
        try:
            found = client.infer(video.requests[variant], request_id=request_id)
            return request_id, time.perf_counter() - began, video.mismatch(found, video.expected[variant])
        except BundleError as exc:
            return request_id, time.perf_counter() - began, exc

    def run(client: PipelineClient, count: int) -> list[tuple[str, float, object]]:
        start = threading.Barrier(count, timeout=60)
        with ThreadPoolExecutor(count) as pool:
            return list(pool.map(lambda i: send(client, i, start), range(count), timeout=300))

    with PipelineClient(video.bundle, url=server.http_url, retry=Retry(attempts=1)) as impatient:
        outcomes = run(impatient, flood)
    busy = [(rid, took, e) for rid, took, e in outcomes if isinstance(e, ServerBusy)]
    answered = [(rid, wrong) for rid, _, wrong in outcomes if not isinstance(wrong, Exception)]
    assert len(busy) + len(answered) == flood, [e for *_, e in outcomes if isinstance(e, Exception)]
    assert busy and len(answered) >= 1 + QUEUE_DEPTH  # one running and a full queue were let in
    assert all(wrong is None for _, wrong in answered), answered
    for request_id, took, error in busy:  # refused before running: no waiting behind the queue
        assert f"request {request_id} to model '{model}': server busy, retry later" in str(error)
        assert "Exceeds maximum queue size" in str(error) and took < 3.0, (took, str(error))

    with PipelineClient(video.bundle, url=server.grpc_url, retry=PATIENT) as patient:
        outcomes = run(patient, 8)
        assert patient.servers.retried > 0, "8 requests at once on a queue of 4 should have been refused some"
    assert [wrong for *_, wrong in outcomes] == [None] * 8


def test_two_servers_in_turn_give_the_same_results_as_one_and_take_over_for_each_other(server, repo, bundles,
                                                                                     workloads):
    depth = workloads["ait-tiny-depth"]
    with LocalServer(repo, SERVER_PYTHON) as second:
        urls = [server.http_url, second.grpc_url]
        before = [_successes(u, "ait-tiny-depth-pipeline") for u in (server.http_url, second.http_url)]
        with PipelineClient(depth.bundle, url=urls) as both:
            for index in range(4):
                variant = index % len(depth.requests)
                assert depth.mismatch(both.infer(depth.requests[variant]), depth.expected[variant]) is None
            after = [_successes(u, "ait-tiny-depth-pipeline") for u in (server.http_url, second.http_url)]
            assert np.subtract(after, before).tolist() == [2, 2]  # in turn
            with pytest.raises(BundleError, match=r"input 'IMAGE': expected UINT8 of shape \[-1, -1, 3\] .*found "
                                                  r"UINT8 \[61, 83\]"):
                both.infer({"IMAGE": depth.requests[0]["IMAGE"][..., 0]})  # refused before any request
            with pytest.raises(BundleError, match=r"expected inputs from \['IMAGE'\] with \['IMAGE'\] required"):
                both.infer({})

            texts = ["a dog", "waves", "a cat on a mat"]
            local = runtime.embed({"text": texts}, bundle=bundles["imagebind-tiny"], backend="onnxruntime")["text"]
            before = [_successes(u, "imagebind-tiny-text_encoder") for u in (server.http_url, second.http_url)]
            with runtime.EmbeddingPipeline(bundles["imagebind-tiny"], modalities=["text"],
                                           backend=Backend("triton", url=[second.http_url, server.grpc_url])) as there:
                served = np.concatenate([there.embed({"text": [text]})["text"] for text in texts])  # 3 calls
            cosine = (served * local).sum(-1) / np.linalg.norm(served, axis=-1) / np.linalg.norm(local, axis=-1)
            assert cosine.min() >= 0.99999
            after = [_successes(u, "imagebind-tiny-text_encoder") for u in (server.http_url, second.http_url)]
            assert min(np.subtract(after, before)) >= 1, "both servers should have run the text encoder"

            second.stop()  # one server gone: its turns fail over to the other
            for variant in range(len(depth.requests)):
                assert depth.mismatch(both.infer(depth.requests[variant]), depth.expected[variant]) is None
            assert both.servers.retried >= 1


def test_a_server_restarted_under_a_run_of_requests_loses_and_duplicates_none(server, workloads):
    chosen = list(workloads.values())
    clients = {protocol: [PipelineClient(w.bundle, url=getattr(server, f"{protocol}_url"), retry=PATIENT)
                          for w in chosen] for protocol in ("http", "grpc")}
    sent = [(f"run-{c}-{r}", (c + r) % len(chosen), r % 2) for c in range(3) for r in range(6)]
    outcomes: list[tuple[str, float, object]] = []

    def client(index: int) -> None:
        protocol = "grpc" if index % 2 else "http"
        for request_id, which, variant in (s for s in sent if s[0].startswith(f"run-{index}-")):
            workload = chosen[which]
            variant %= len(workload.requests)
            try:
                found = clients[protocol][which].infer(workload.requests[variant], request_id=request_id)
                outcome = workload.mismatch(found, workload.expected[variant])
            except BundleError as exc:
                outcome = exc
            outcomes.append((request_id, time.monotonic(), outcome))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while len(outcomes) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.restart()
    back = time.monotonic()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "a request hung across the restart"

    assert sorted(rid for rid, *_ in outcomes) == sorted(rid for rid, *_ in sent)  # each ended exactly once
    for request_id, _, outcome in outcomes:
        if isinstance(outcome, Exception):  # allowed only as a clear error naming its request
            assert f"request {request_id} " in str(outcome), str(outcome)
        else:
            assert outcome is None, f"{request_id}: {outcome}"
    assert sum(c.servers.retried for per in clients.values() for c in per) > 0, "no request saw the restart"
    assert any(outcome is None and ended > back for _, ended, outcome in outcomes), "none answered after it"
    for per in clients.values():
        for pipeline in per:
            pipeline.close()
