"""``python -m benchmarks.serving [--bundle-dir DIR] [--python PY] [--requests N] [--instances N] [--json FILE]``.

Triton throughput. Serves the tiny bundles' repository (``--platform python``) with the local ``tritonserver``
(``engines.triton_server``, from the environment ``--python``: default ``.venv-triton``) and
measures requests per second at 1 and 16 concurrent clients, each client with its own connection,
for a component model called directly and for pipeline models (one call = one whole pipeline),
with the server's statistics of a batchable component: fewer executions than requests means the
dynamic batcher merged requests.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.__main__ import find_bundles
from engines.triton_repo import write_repository
from engines.triton_server import LocalServer
from runtime import Bundle, EmbeddingPipeline
from runtime.backends.triton import TritonSession

CLIENTS = (1, 16)
IMAGE = (np.random.default_rng(0).random((61, 83, 3)) * 255).astype(np.uint8)


def _bundles(parent: Path | None, scratch: Path) -> dict[str, Path]:
    from export.__main__ import tiny_bundles

    found = {p.name: p for paths in find_bundles(parent).values() for p in paths} if parent else {}
    needed = ("imagebind-tiny", "ait-tiny-depth")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--bundle-dir", type=Path, help="folder with the tiny bundles (default: export them)")
    parser.add_argument("--python", type=Path, default=Path(".venv-triton/bin/python"))
    parser.add_argument("--requests", type=int, default=320, help="component requests per measurement")
    parser.add_argument("--instances", type=int, default=1, help="instances of every model (default 1)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        bundles = _bundles(args.bundle_dir, Path(scratch))
        repo = Path(scratch) / "repo"
        for bundle in bundles.values():
            write_repository(bundle, repo, platform="python", instances=args.instances, log=lambda _: None)
        with LocalServer(repo, args.python) as server:
            rows = measure(server, bundles, args.requests)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
