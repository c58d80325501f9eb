"""``python -m benchmarks.serving [--bundle-dir DIR] [--python PY] [--requests N] [--instances N] [--json FILE]``
and ``python -m benchmarks.serving --soak SECONDS [--clients 4] [--servers 1] [--json FILE]``.

Triton throughput. Serves the tiny bundles' repository (``--platform python``) with the local ``tritonserver``
(``engines.triton_server``, from the environment ``--python``: default ``.venv-triton``) and
measures requests per second at 1 and 16 concurrent clients, each client with its own connection,
for a component model called directly and for pipeline models (one call = one whole pipeline),
with the server's statistics of a batchable component: fewer executions than requests means the
dynamic batcher merged requests. This run lifts the models' queue bound (``--queue-depth 0``), so that
all 16 clients' requests wait instead of being refused as busy.

``--soak SECONDS``: a mixed load for a bounded time instead: ``--clients`` threads send video, depth
and embedding requests in turn to the pipeline models (``runtime.backends.triton.PipelineClient``,
its default retry; ``--servers 2`` starts two servers on the same repository, called in turn) and check
every answer against the same request run locally with ONNX Runtime. It reports requests per second,
p50/p95/p99 latency and errors (failed or wrong answers) per workload, the retried tries, and the
servers' resident memory (server and backend stubs) after a warm-up and at the end, with its growth
per 1,000 requests.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.__main__ import environment, find_bundles
from engines.triton_repo import QUEUE_DEPTH, write_repository
from engines.triton_server import LocalServer
from runtime import Bundle, DepthPipeline, EmbeddingPipeline, VideoPipeline
from runtime.arrays import psnr
from runtime.backends.triton import TritonSession
from runtime.bundle import BundleError
from runtime.serving import PipelineClient

CLIENTS = (1, 16)
IMAGE = (np.random.default_rng(0).random((61, 83, 3)) * 255).astype(np.uint8)
SOAK_BUNDLES = ("videocrafter1-tiny-t2v", "ait-tiny-depth", "imagebind-tiny")


def _bundles(parent: Path | None, scratch: Path) -> dict[str, Path]:
    from export.__main__ import tiny_bundles

    found = {p.name: p for paths in find_bundles(parent).values() for p in paths} if parent else {}
    needed = ("imagebind-tiny", "ait-tiny-depth", "videocrafter1-tiny-t2v")
    exports = tiny_bundles()
    return {n: found.get(n) or exports[n](scratch / n, seed=0, log=lambda _: None) for n in needed}


def _http_call(url: str, model: str, inputs: dict[str, np.ndarray], output: str) -> Callable[[], np.ndarray]:
    import tritonclient.http as http
    from tritonclient.utils import np_to_triton_dtype

    client = http.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    tensors = []
    for name, value in inputs.items():
        tensors.append(http.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype)))
        tensors[-1].set_data_from_numpy(value)
    return lambda: client.infer(model, tensors, outputs=[http.InferRequestedOutput(output)]).as_numpy(output)


def _statistics(url: str, model: str) -> np.ndarray:
    import tritonclient.http as http

    stats = http.InferenceServerClient(url.removeprefix("http://")).get_inference_statistics(model)["model_stats"][0]
    return np.array([int(stats["inference_stats"]["success"]["count"]), int(stats["execution_count"])])


def throughput(make_call: Callable[[], Callable[[], object]], clients: int, requests: int) -> float:
    """Requests per second of ``clients`` threads, each with its own connection (opened in its thread, one
    warm-up request), sending ``requests`` requests in all."""
    start = threading.Barrier(clients + 1, timeout=120)

    def client() -> None:
        call = make_call()
        call()
        start.wait()
        for _ in range(requests // clients):
            call()

    with ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(client) for _ in range(clients)]
        start.wait()
        began = time.perf_counter()
        for future in running:
            future.result(timeout=600)
    return clients * (requests // clients) / (time.perf_counter() - began)


def measure(server: LocalServer, bundles: dict[str, Path], requests: int) -> list[dict]:
    imagebind = Bundle(bundles["imagebind-tiny"])
    tokens = EmbeddingPipeline(imagebind, modalities=["text"]).tokenizer(["a dog"], context_length=77)

    def text_encoder():
        session = TritonSession(imagebind, "text_encoder", url=server.grpc_url)
        return lambda: session.run({"text": tokens})

    text = np.array([b"a dog"], dtype=object)
    workloads = {
        "imagebind text_encoder (component, gRPC)": (text_encoder, "imagebind-tiny-text_encoder"),
        "imagebind pipeline (1 text, HTTP)": (lambda: _http_call(server.http_url, "imagebind-tiny-pipeline",
                                                                 {"TEXT": text}, "TEXT_EMBEDDING"),
                                              "imagebind-tiny-text_encoder"),
        "ait depth pipeline (61x83 image, HTTP)": (lambda: _http_call(server.http_url, "ait-tiny-depth-pipeline",
                                                                      {"IMAGE": IMAGE}, "DEPTH"),
                                                   "ait-tiny-depth-vqvae_soft_decoder"),
    }
    rows = []
    for name, (make_call, batched_model) in workloads.items():
        count = requests if "component" in name else max(16, requests // 2)
        for clients in CLIENTS:
            before = _statistics(server.http_url, batched_model)
            rate = throughput(make_call, clients, count)
            served, executions = _statistics(server.http_url, batched_model) - before
            rows.append({"workload": name, "clients": clients, "requests/s": round(rate, 1),
                         "batched model": batched_model, "its requests": int(served),
                         "its executions": int(executions)})
            print(f"{name:42s} {clients:2d} client(s): {rate:8.1f} requests/s; {batched_model}: "
                  f"{served} requests in {executions} executions", flush=True)
    return rows


@dataclass(frozen=True)
class Workload:
    """One kind of request of the mixed load: a bundle's pipeline model, a few distinct requests, and for each
    the same request run locally with ONNX Runtime, which ``mismatch`` compares an answer with."""

    name: str
    bundle: Path
    requests: list[dict[str, np.ndarray]]
    expected: list[Any]
    mismatch: Callable[[dict[str, np.ndarray], Any], "str | None"]  # None when the answer is right


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).min())


def mixed_workloads(bundles: dict[str, Path]) -> list[Workload]:
    """Video (tiny T2V, 2 steps, three seeds), depth (two images) and embeddings (three texts with an image),
    with their local ONNX Runtime results."""
    rng = np.random.default_rng(7)
    images = [IMAGE, (rng.random((48, 64, 3)) * 255).astype(np.uint8)]
    prompt, seeds, texts = "a red balloon over the sea", (1, 2, 3), ("a dog", "a cat on a mat", "waves")
    with VideoPipeline(bundles["videocrafter1-tiny-t2v"], backend="onnxruntime") as local:
        videos = [local.generate(prompt, steps=2, seed=seed, progress=False) for seed in seeds]
    with DepthPipeline(bundles["ait-tiny-depth"], backend="onnxruntime") as local:
        depths = [local.estimate(image, progress=False) for image in images]
    with EmbeddingPipeline(bundles["imagebind-tiny"], backend="onnxruntime", modalities=["text", "vision"]) as local:
        embeddings = [local.embed({"text": [text], "vision": [IMAGE]}) for text in texts]

    def video_mismatch(found, expected):
        quality = psnr(expected, found["VIDEO"]) if found["VIDEO"].shape == expected.shape else -1.0
        return None if quality >= 60 else f"video PSNR {quality:.1f} dB against local ONNX Runtime (expected >= 60)"

    def depth_mismatch(found, expected):
        error = float(np.abs(found["DEPTH"] - expected).max()) if found["DEPTH"].shape == expected.shape else np.inf
        return None if error <= 1e-5 else f"depth max error {error:.3g} against local ONNX Runtime (expected <= 1e-5)"

    def embedding_mismatch(found, expected):
        worst = min(_cosine(found[f"{m.upper()}_EMBEDDING"], e) for m, e in expected.items())
        return None if worst >= 0.99999 else f"embedding cosine {worst:.6f} against local ONNX Runtime"

    return [
        Workload("video (tiny T2V, 2 steps)", bundles["videocrafter1-tiny-t2v"],
                 [{"PROMPT": np.array([prompt]), "STEPS": np.array([2]), "SEED": np.array([s])} for s in seeds],
                 videos, video_mismatch),
        Workload("depth (tiny AiT)", bundles["ait-tiny-depth"], [{"IMAGE": image} for image in images], depths,
                 depth_mismatch),
        Workload("embeddings (tiny ImageBind, text + image)", bundles["imagebind-tiny"],
                 [{"TEXT": np.array([t]), "VISION": IMAGE[None]} for t in texts], embeddings, embedding_mismatch),
    ]


def _latency_row(name: str, latencies: list[float], errors: int, seconds: float) -> dict:
    p50, p95, p99 = (np.percentile(latencies, [50, 95, 99]) * 1e3 if latencies else [np.nan] * 3)
    return {"workload": name, "requests": len(latencies) + errors, "errors": errors,
            "requests/s": round((len(latencies) + errors) / seconds, 2), "p50 ms": round(float(p50), 1),
            "p95 ms": round(float(p95), 1), "p99 ms": round(float(p99), 1)}


def soak(urls: list[str], workloads: list[Workload], seconds: float, clients: int,
         rss: Callable[[], int]) -> dict:
    """``clients`` threads send the workloads' requests in turn for ``seconds`` (each thread stops at the first
    deadline it sees after an answer); every answer is checked. ``rss()``: the servers' resident bytes."""
    pipelines = [PipelineClient(w.bundle, url=urls, timeout=120) for w in workloads]
    for workload, pipeline in zip(workloads, pipelines):  # warm-up: the server opens each pipeline once
        for request in workload.requests:
            pipeline.infer(request)
    rss_start = rss()
    outcomes: list[tuple[int, float, str | None]] = []  # (workload, seconds, error)
    began = time.monotonic()
    deadline = began + seconds

    def client(index: int) -> None:
        turn, sent = index, 0
        while time.monotonic() < deadline:
            which = turn % len(workloads)
            workload, variant = workloads[which], (turn // len(workloads)) % len(workloads[which].requests)
            request_id = f"client{index}-{sent}"
            start = time.perf_counter()
            try:
                found = pipelines[which].infer(workload.requests[variant], request_id=request_id)
                wrong = workload.mismatch(found, workload.expected[variant])
                error = None if wrong is None else f"{request_id}: {wrong}"
            except BundleError as exc:
                error = str(exc)
            outcomes.append((which, time.perf_counter() - start, error))
            turn, sent = turn + 1, sent + 1

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client, i) for i in range(clients)]:
            future.result(timeout=seconds + 600)
    elapsed = time.monotonic() - began
    rss_end = rss()
    rows = [_latency_row(w.name, [t for i, t, e in outcomes if i == k and e is None],
                         sum(1 for i, _, e in outcomes if i == k and e is not None), elapsed)
            for k, w in enumerate(workloads)]
    rows.append(_latency_row("all", [t for _, t, e in outcomes if e is None],
                             sum(1 for *_, e in outcomes if e is not None), elapsed))
    for pipeline in pipelines:
        pipeline.close()
    return {"seconds": round(elapsed, 1), "clients": clients, "servers": len(urls), "rows": rows,
            "retried": sum(p.servers.retried for p in pipelines),
            "errors": [e for *_, e in outcomes if e is not None][:10],
            "server_rss_mb": {"start": round(rss_start / 2**20, 1), "end": round(rss_end / 2**20, 1),
                              "growth_per_1000_requests": round((rss_end - rss_start) / 2**20 * 1000 /
                                                                max(1, len(outcomes)), 2)}}


def print_soak(result: dict) -> None:
    columns = ("workload", "requests", "errors", "requests/s", "p50 ms", "p95 ms", "p99 ms")
    print(f"soak: {result['seconds']} s, {result['clients']} clients, {result['servers']} server(s), "
          f"{result['retried']} tries retried")
    print(" | ".join(columns))
    for row in result["rows"]:
        print(" | ".join(str(row[c]) for c in columns))
    memory = result["server_rss_mb"]
    print(f"server RSS {memory['start']} MB after warm-up, {memory['end']} MB at the end: "
          f"{memory['growth_per_1000_requests']} MB per 1000 requests")
    for error in result["errors"]:
        print(f"error: {error}")


def _device() -> dict:
    """The benchmarks' device facts (``benchmarks.__main__.environment``) and the client's tritonclient version."""
    device = environment()
    device["versions"]["tritonclient"] = metadata.version("tritonclient")
    return device


def run_soak(bundles: dict[str, Path], repo: Path, python: Path, seconds: float, clients: int,
             servers: int) -> dict:
    """Start ``servers`` servers on ``repo`` and soak them (see :func:`soak`)."""
    workloads = mixed_workloads(bundles)
    with contextlib.ExitStack() as stack:
        running = [stack.enter_context(LocalServer(repo, python)) for _ in range(servers)]
        return soak([s.grpc_url if i % 2 else s.http_url for i, s in enumerate(running)], workloads, seconds,
                    clients, lambda: sum(s.rss_bytes() for s in running))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle-dir", type=Path, help="folder with the tiny bundles (default: export them)")
    parser.add_argument("--python", type=Path, default=Path(".venv-triton/bin/python"))
    parser.add_argument("--requests", type=int, default=320, help="component requests per measurement")
    parser.add_argument("--instances", type=int, default=1, help="instances of every model (default 1)")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="run the mixed load for this long instead")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients of --soak (default 4)")
    parser.add_argument("--servers", type=int, default=1, help="servers of --soak, called in turn (default 1)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.soak is not None and (args.soak <= 0 or args.clients < 1 or args.servers < 1):
        parser.error(f"expected --soak > 0, --clients >= 1 and --servers >= 1, found {args.soak}, {args.clients} "
                     f"and {args.servers}")
    with tempfile.TemporaryDirectory() as scratch:
        bundles = _bundles(args.bundle_dir, Path(scratch))
        repo = Path(scratch) / "repo"
        for bundle in bundles.values():  # the soak keeps the default queue policy; throughput lifts its bound
            write_repository(bundle, repo, platform="python", instances=args.instances, log=lambda _: None,
                             queue_depth=QUEUE_DEPTH if args.soak is not None else 0)
        if args.soak is not None:
            result = {"command": "python -m benchmarks.serving " + " ".join(sys.argv[1:] if argv is None else argv),
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": _device(),
                      "instances": args.instances, "soak": run_soak(bundles, repo, args.python, args.soak,
                                                                    args.clients, args.servers)}
            print_soak(result["soak"])
        else:
            with LocalServer(repo, args.python) as server:
                result = measure(server, bundles, args.requests)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
