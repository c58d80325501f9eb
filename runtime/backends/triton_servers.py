"""The client's side of one or more Triton servers: connections, round robin, and a bounded retry with backoff.

:class:`Servers` holds the urls of identical servers (the same model repository) and sends each call to
the next one in turn, on this thread's own connection to it (tritonclient's HTTP client is gevent-based
and must stay in its thread). A call that fails because the server cannot take it now is retried, on
the next server, after a backoff (:class:`Retry`):

- **busy** (:class:`ServerBusy`): the model's queue is full, or the request waited in it past the
  queue's timeout (the repository's queue policy, ``python -m engines triton --queue-depth
  --queue-timeout-ms``). The server refused it before running it.
- **unavailable** (:class:`ServerUnavailable`): nothing listens at the url, the connection closed under
  the request, the server is stopping or restarting, or the model is unloaded meanwhile.

Every request the runtime sends is idempotent (a component graph is a pure function; a pipeline model's
result depends only on its inputs and seed), so running one twice is harmless. When the attempts or
the deadline run out, the last error is raised, naming the request, its attempts and the time they
took. Anything else (a refused shape, a model's own error, a call past the client's timeout, which may
still be running) is not retried.
"""
from __future__ import annotations

import http.client
import itertools
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from runtime.bundle import BundleError

BUSY = ("Exceeds maximum queue size", "Request timeout expired")  # Triton's words for a refused request
GONE = ("Server is stopping", "failed to connect", "Socket closed", "Connection reset", "connection closed",
        "unknown model", "has no available versions", "is not ready")


class ServerUnavailable(BundleError):
    """The server cannot take the request now (not listening, stopping or restarting, the model unloaded):
    retry later, or on another server."""


class ServerBusy(ServerUnavailable):
    """Server busy, retry: the model's queue is full, or the request waited in it past the queue's timeout."""


@dataclass(frozen=True)
class Retry:
    """A bounded retry with exponential backoff for idempotent requests.

    ``attempts``: tries in all (1: never retry). ``backoff``: seconds before the second try, ``factor``
    times more before each next one, at most ``max_backoff``; each wait is a random 50-100 % of that, so
    clients refused together do not come back together. ``deadline``: no try starts later than this many
    seconds after the first. The default rides out a queue that is full for a few seconds; a server
    restart needs a deadline longer than the server takes to load its models.
    """

    attempts: int = 6
    backoff: float = 0.25
    factor: float = 2.0
    max_backoff: float = 4.0
    deadline: float = 60.0

    def __post_init__(self):
        if self.attempts < 1 or self.backoff < 0 or self.factor < 1 or self.deadline < 0:
            raise BundleError(f"Retry: expected attempts >= 1, backoff >= 0, factor >= 1 and deadline >= 0, found "
                              f"{self.attempts}, {self.backoff}, {self.factor} and {self.deadline}")

    def wait(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th try failed."""
        return min(self.max_backoff, self.backoff * self.factor ** (failed - 1)) * random.uniform(0.5, 1.0)


def split_url(url: str) -> tuple[str, str]:
    """``(protocol, host:port)`` of ``http://host:port``, ``grpc://host:port`` or a bare ``host:port`` (HTTP)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc") or not parts.netloc:
        raise BundleError(f"Triton url {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
    return parts.scheme, parts.netloc


def reason(exc: BaseException) -> str:
    """The first line of an error's message (tritonclient's, gRPC's or a socket's)."""
    text = exc.message() if callable(getattr(exc, "message", None)) else str(exc)
    return (text or type(exc).__name__).strip().splitlines()[0][:400]


def trouble_in(status: str, text: str) -> type[ServerUnavailable] | None:
    """:class:`ServerBusy` or :class:`ServerUnavailable` when an error's status and message say the server cannot
    take the request now (worth a retry), else None."""
    if any(words in text for words in BUSY):
        return ServerBusy
    if status in ("StatusCode.UNAVAILABLE", "503", "UNAVAILABLE") or any(words in text for words in GONE):
        return ServerUnavailable
    return None


def trouble(exc: BaseException) -> type[ServerUnavailable] | None:
    """:func:`trouble_in` of a client's exception; a connection refused or closed is unavailable too."""
    status = str(exc.status()) if callable(getattr(exc, "status", None)) else ""
    kind = trouble_in(status, reason(exc))
    return kind or (ServerUnavailable if isinstance(exc, (ConnectionError, http.client.HTTPException)) else None)


def answered(result: Any, request_id: str, what: str) -> Any:
    """``result`` after checking that it answers ``request_id`` (Triton echoes a request's id)."""
    response = result.get_response()
    found = response.get("id", "") if isinstance(response, dict) else response.id
    if found != request_id:
        raise BundleError(f"{what}: the answer is for request {found!r}, not {request_id!r}; the connection mixed "
                          "answers up: report it with the server's version")
    return result


def _api(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as exc:
        raise BundleError("backend 'triton' needs tritonclient: pip install 'edge-deploy[triton]'") from exc
    return client


class Servers:
    """Identical Triton servers at ``urls`` (one url or several), each call on the next one in turn (starting at a
    random one, so that many short-lived clients do not all begin on the first).

    ``timeout``: seconds one try may take (connect and answer). ``retry``: the :class:`Retry` of calls
    that a server could not take. ``call(fn, request=...)`` runs ``fn(server)`` (a :class:`Server`:
    ``url``, ``api`` the tritonclient module, ``client`` this thread's connection, ``options`` the
    keyword arguments every client call takes). ``retried`` counts the tries that were repeated.
    """

    def __init__(self, urls: str | Sequence[str], *, timeout: float, retry: Retry):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls or not all(isinstance(u, str) for u in self.urls):
            raise BundleError(f"Triton url: expected a url or a list of urls, found {urls!r}")
        self.timeout, self.retry = float(timeout), retry
        self._protocols = [split_url(url) for url in self.urls]
        self._turn = itertools.count(random.randrange(len(self.urls)))
        self._local = threading.local()
        self._count = threading.Lock()
        self.retried = 0

    def server(self, index: int) -> "Server":
        """Server ``index`` with this thread's connection to it (opened on first use)."""
        clients = self._local.__dict__.setdefault("clients", {})
        if index not in clients:
            protocol, address = self._protocols[index]
            api = _api(protocol)
            if protocol == "grpc":
                client = api.InferenceServerClient(address)
            else:
                client = api.InferenceServerClient(address, connection_timeout=self.timeout,
                                                   network_timeout=self.timeout)
            clients[index] = Server(self.urls[index], api, client,
                                    {"client_timeout": self.timeout} if protocol == "grpc" else {})
        return clients[index]

    def _drop(self, index: int) -> None:
        """Forget this thread's connection to server ``index`` (after it failed): the next try opens a new one."""
        server = self._local.__dict__.get("clients", {}).pop(index, None)
        if server is not None:
            try:
                server.client.close()
            except Exception:  # a connection that is already broken may fail to close; it is dropped either way
                pass

    def call(self, fn: Callable[["Server"], Any], *, request: str, on: int | None = None) -> Any:
        """``fn`` on the next server (or on server ``on`` only), retried while servers are busy or unavailable.
        ``request`` names the call in the errors: :class:`ServerBusy` / :class:`ServerUnavailable` when the tries
        run out, a :class:`BundleError` at once for any other failure."""
        began, failed = time.monotonic(), 0
        while True:
            index = next(self._turn) % len(self.urls) if on is None else on
            try:
                return fn(self.server(index))
            except BundleError:
                raise
            except Exception as exc:  # tritonclient raises its own, socket, HTTP and gevent errors alike
                kind, url = trouble(exc), self.urls[index]
                if kind is None:
                    raise BundleError(f"{request}: the Triton server at {url} refused or failed it "
                                      f"({type(exc).__name__}: {reason(exc)})") from exc
                self._drop(index)
                failed += 1
                wait, elapsed = self.retry.wait(failed), time.monotonic() - began
                if failed >= self.retry.attempts or elapsed + wait > self.retry.deadline:
                    state = "busy" if kind is ServerBusy else "unavailable"
                    turn = f", servers {', '.join(self.urls)} in turn" if len(self.urls) > 1 and on is None else ""
                    raise kind(f"{request}: server {state}, retry later: the Triton server at {url} answered "
                               f"{type(exc).__name__}: {reason(exc)} ({failed} attempt(s) over {elapsed:.1f} s"
                               f"{turn})") from exc
                time.sleep(wait)
                with self._count:
                    self.retried += 1

    def check_ready(self, model: str, who: str) -> None:
        """Every server is reachable (tried per the retry) and has ``model`` ready, else a :class:`BundleError`
        naming ``who``, the url and what that server serves."""
        for index, url in enumerate(self.urls):
            try:
                live = self.call(lambda s: s.client.is_server_live(**s.options), request=f"{who}: liveness check",
                                 on=index)
            except Exception as exc:  # tritonclient raises its own, socket and gevent errors alike when unreachable
                cause = exc.__cause__ or exc
                raise BundleError(f"{who}: no Triton server reachable at {url} ({type(cause).__name__}: "
                                  f"{reason(cause)}); start one (docs/serving.md) or pass the right url") from exc
            server = self.server(index)
            try:
                ready = live and server.client.is_model_ready(model, **server.options)
                listing = [] if ready else server.client.get_model_repository_index(**server.options)
                models = [m["name"] if isinstance(m, dict) else m.name  # HTTP: dicts; gRPC: a message's models
                          for m in getattr(listing, "models", listing)]
            except Exception as exc:
                raise BundleError(f"{who}: Triton server at {url} did not answer about model '{model}' "
                                  f"({type(exc).__name__}: {reason(exc)})") from exc
            if not ready:
                raise BundleError(
                    f"{who}: the Triton server at {url} has no ready model '{model}'; it serves "
                    f"{', '.join(sorted(models)) or 'nothing'}. Write the repository with `python -m engines triton "
                    f"BUNDLE --out REPO` from this bundle (or pass prefix= if it was written with another one)")

    def close(self) -> None:
        """Close this thread's connections (the others end with their threads)."""
        for index in list(self._local.__dict__.get("clients", {})):
            self._drop(index)


@dataclass(frozen=True)
class Server:
    url: str
    api: Any
    client: Any
    options: dict
