"""The Triton client's retry and round robin without a server: which failures are retried (the words of real
Triton, gRPC and socket errors), on which server, how often and for how long, and what the error says at
the end."""
from __future__ import annotations

import time

import pytest
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

from runtime.backends.triton import Retry, ServerBusy, ServerUnavailable
from runtime.backends.triton_servers import Servers, trouble
from runtime.bundle import BundleError

QUICK = dict(backoff=0.001, max_backoff=0.002)
URLS = ["http://127.0.0.1:9", "grpc://127.0.0.1:9"]  # never connected to: the calls below are stand-ins


@pytest.mark.parametrize("error, kind", [
    (InferenceServerException("[request id: r1] Exceeds maximum queue size", status="503"), ServerBusy),
    (InferenceServerException("[request id: r1] Exceeds maximum queue size", status="StatusCode.UNAVAILABLE"),
     ServerBusy),
    (InferenceServerException("Request timeout expired", status="StatusCode.UNAVAILABLE"), ServerBusy),
    (InferenceServerException("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                              "Failed to connect to remote host: Connection refused",
                              status="StatusCode.UNAVAILABLE"), ServerUnavailable),
    (InferenceServerException("Server is stopping, scheduler for model has stopped accepting new inference "
                              "requests", status="StatusCode.UNAVAILABLE"), ServerUnavailable),
    (InferenceServerException("Request for unknown model: 'm' has no available versions",
                              status="StatusCode.NOT_FOUND"), ServerUnavailable),
    (InferenceServerException("m-pipeline: ServerUnavailable: unet: model 'm-unet' failed: Model is not ready",
                              status="StatusCode.UNAVAILABLE"), ServerUnavailable),
    (ConnectionRefusedError(111, "Connection refused"), ServerUnavailable),
    (HTTPConnectionClosed("connection closed."), ServerUnavailable),
    (InferenceServerException("m-pipeline: ValueError: 3 DDIM steps: ...", status="StatusCode.INTERNAL"), None),
    (InferenceServerException("unexpected shape for input 'text'", status="400"), None),
    (InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"), None),
])
def test_busy_and_unavailable_are_told_apart_from_failures_that_a_retry_would_repeat(error, kind):
    assert trouble(error) is kind


def test_a_refused_call_is_retried_on_the_next_server_in_turn():
    servers = Servers(URLS, timeout=1, retry=Retry(attempts=5, **QUICK))
    tried = []

    def call(server):
        tried.append(server.url)
        if len(tried) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return server.url

    assert servers.call(call, request="request r1") == tried[-1]
    assert len(tried) == 3 and tried[0] != tried[1] and tried[0] == tried[2]  # the two servers in turn
    assert servers.retried == 2
    turns = [servers.call(lambda s: s.url, request="r") for _ in range(4)]
    assert turns[0::2] == [turns[0]] * 2 and turns[1::2] == [turns[1]] * 2 and turns[0] != turns[1]


def test_retries_stop_at_the_attempts_or_the_deadline_with_an_error_naming_the_request():
    servers = Servers(URLS[0], timeout=1, retry=Retry(attempts=3, **QUICK))
    calls = []

    def busy(server):
        calls.append(server.url)
        raise InferenceServerException("[request id: r7] Exceeds maximum queue size", status="503")

    with pytest.raises(ServerBusy, match=r"^request r7 to model 'm': server busy, retry later: the Triton server "
                                         r"at http://127.0.0.1:9 answered .*Exceeds maximum queue size "
                                         r"\(3 attempt\(s\) over"):
        servers.call(busy, request="request r7 to model 'm'")
    assert len(calls) == 3

    servers = Servers(URLS, timeout=1, retry=Retry(attempts=1000, backoff=0.05, max_backoff=0.05, deadline=0.3))
    began = time.monotonic()
    with pytest.raises(ServerUnavailable, match="server unavailable, retry later.*servers http://127.0.0.1:9, "
                                                "grpc://127.0.0.1:9 in turn"):
        servers.call(lambda s: (_ for _ in ()).throw(ConnectionRefusedError(111, "refused")), request="r8")
    assert time.monotonic() - began < 2


def test_other_failures_are_not_retried_and_name_the_server():
    servers = Servers(URLS[0], timeout=1, retry=Retry(attempts=5, **QUICK))
    calls = []

    def refused(server):
        calls.append(server.url)
        raise InferenceServerException("unexpected shape for input 'text'", status="400")

    with pytest.raises(BundleError, match="request r9: the Triton server at http://127.0.0.1:9 refused or failed it "
                                          r"\(InferenceServerException: .*unexpected shape") as caught:
        servers.call(refused, request="request r9")
    assert not isinstance(caught.value, ServerUnavailable) and calls == [URLS[0]] and servers.retried == 0


def test_retry_and_urls_are_checked():
    with pytest.raises(BundleError, match="expected attempts >= 1"):
        Retry(attempts=0)
    waits = [Retry(backoff=0.5, factor=2, max_backoff=3).wait(n) for n in (1, 2, 3, 4, 5)]
    for wait, full in zip(waits, (0.5, 1, 2, 3, 3)):  # 50-100 % of the doubling backoff, capped
        assert full / 2 <= wait <= full
    with pytest.raises(BundleError, match="expected a url or a list of urls, found \\[\\]"):
        Servers([], timeout=1, retry=Retry())
    with pytest.raises(BundleError, match="expected http://HOST:PORT or grpc://HOST:PORT"):
        Servers(["http://a:1", "ftp://b:2"], timeout=1, retry=Retry())
