"""The pipeline layer: a family pipeline's bundle, its sessions in one mapping, and their life.

Every family pipeline (``VideoPipeline``, ``DepthPipeline``, ``InstancePipeline``,
``EmbeddingPipeline``) is a :class:`Pipeline`. It checks once that the bundle is of its
family, holds its opened components in :attr:`Pipeline.sessions` (component name ->
session), runs them in calls as large as the bundle's profile allows (:meth:`Pipeline.run`)
and closes them with ``close()`` or ``with``. ``memory="low"`` opens each component on first
use and frees it when the next one runs (:class:`LazySession` in a :class:`OneAtATime`
group). Whatever stands in for a session (calibration's recorders, INT8 sessions, the
benchmarks' timers) goes through one door: :meth:`Pipeline.substitute` or, restored
afterwards, :meth:`Pipeline.substituted`. The backends only run graphs.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np

from runtime.backends.base import Backend, BaseSession, Session, check_memory, open_session
from runtime.bundle import Bundle, BundleError
from runtime.heap import trim


class OneAtATime:
    """The sessions of a low-memory pipeline: each opened on first use, and at most one open at a time."""

    def __init__(self):
        self.current: "LazySession | None" = None

    def switch_to(self, session: "LazySession") -> None:
        if self.current is not None and self.current is not session:
            self.current.close()
        self.current = session


class LazySession:
    """A component opened when it is first run and closed as soon as another component of its group runs
    (or the pipeline closes): a sampler's steps keep the UNet open, the next component frees it."""

    def __init__(self, bundle: Bundle, name: str, backend: str | Backend, group: OneAtATime):
        self.component = bundle.component(name)
        self._open = lambda: open_session(bundle, name, backend=backend, memory="low")
        self._group = group
        self._session: BaseSession | None = None
        self.switch_s = 0.0  # seconds its runs spent freeing the previous component and opening this one
        self.precision: str | None = None  # what the backend ran it in, once opened (a session's ``.precision``)

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        self._group.switch_to(self)
        if self._session is None:
            self._session = self._open()
            self.precision = getattr(self._session, "precision", None)
        self.switch_s += time.perf_counter() - start
        return self._session.run(feeds)

    def close(self) -> None:
        """Free the component, and hand the heap pages it held back to the OS (:func:`runtime.heap.trim`)."""
        if self._session is not None:
            self._session.close()
            self._session = None
            trim()


def batch_limit(session: Session) -> int | None:
    """The largest batch (axis 0 of the first input) the component's profile takes; None when unbounded."""
    first = session.component.inputs[0].name
    profile = session.component.profile
    return profile[first]["max"][0] if first in profile else None


def run_in_batches(session: Session, feeds: Mapping[str, np.ndarray], batch: int | None = None
                   ) -> dict[str, np.ndarray]:
    """``session.run`` over axis 0 of every feed in pieces of ``batch`` (at most the profile's largest batch)."""
    limits = [b for b in (batch_limit(session), batch) if b is not None]
    total = len(next(iter(feeds.values())))
    limit = min(limits) if limits else total
    if total <= limit:
        return session.run(feeds)
    pieces = [session.run({k: v[start:start + limit] for k, v in feeds.items()}) for start in range(0, total, limit)]
    return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}


Replace = Callable[[str, Session], "Session | None"]


class Pipeline:
    """A family pipeline: its bundle, its sessions by component name, and their life.

    A subclass names its ``family`` and the one-call function that uses it (``entry``, for
    errors), and opens its components with :meth:`open`. ``backend`` is a backend name or a
    :class:`runtime.Backend`; ``memory`` is ``"normal"`` or ``"low"`` (one component in memory
    at a time, each opened on first use; the backends' own low-memory settings too).
    """

    family: ClassVar[str]
    entry: ClassVar[str]

    def __init__(self, bundle: str | Path | Bundle, *, backend: str | Backend = "auto", memory: str = "normal"):
        self.bundle = self.check_bundle(bundle if isinstance(bundle, Bundle) else Bundle(bundle))
        self.backend = backend
        self.memory = check_memory(memory)
        self.sessions: dict[str, Session] = {}
        self._owned: list[Session | LazySession] = []
        self._group = OneAtATime()

    @classmethod
    def fits(cls, bundle: Bundle) -> bool:
        """Whether this pipeline runs ``bundle`` (by default: a bundle of its family)."""
        return bundle.manifest.family == cls.family

    @classmethod
    def needs(cls) -> str:
        """What bundle the pipeline needs, as its refusal says it."""
        return f"a {cls.family} bundle"

    @classmethod
    def check_bundle(cls, bundle: Bundle) -> Bundle:
        """``bundle`` when :meth:`fits`; a BundleError saying what it is and what ``entry`` needs otherwise."""
        if not cls.fits(bundle):
            raise BundleError(f"{bundle.root} is a {bundle.manifest.family} bundle ({bundle.manifest.variant}); "
                              f"{cls.entry} needs {cls.needs()}")
        return bundle

    def open(self, *names: str) -> None:
        """Open the components ``names`` into :attr:`sessions` (lazily, one at a time, when memory is low)."""
        for name in names:
            if self.memory == "low":
                session = LazySession(self.bundle, name, self.backend, self._group)
            else:
                session = open_session(self.bundle, name, backend=self.backend)
            self._owned.append(session)
            self.sessions[name] = session

    def session(self, name: str) -> Session:
        if name not in self.sessions:
            raise BundleError(f"{type(self).__name__} of {self.bundle.root} has no open {name!r}; it has "
                              f"{sorted(self.sessions)}")
        return self.sessions[name]

    def run(self, name: str, feeds: Mapping[str, np.ndarray], batch: int | None = None) -> dict[str, np.ndarray]:
        """Run component ``name`` on ``feeds``, in calls as large as its profile (and ``batch``) allow."""
        return run_in_batches(self.session(name), feeds, batch)

    def batch_limit(self, *names: str) -> int | None:
        """The largest batch every one of the components ``names`` takes in one call (None: unbounded)."""
        limits = [b for b in (batch_limit(self.session(n)) for n in names) if b is not None]
        return min(limits) if limits else None

    def substitute(self, replace: Replace) -> dict[str, Session]:
        """Put ``replace(name, session)`` in place of each session (None keeps it); the sessions replaced."""
        replaced = {}
        for name, session in list(self.sessions.items()):
            new = replace(name, session)
            if new is not None and new is not session:
                replaced[name] = session
                self.sessions[name] = new
        return replaced

    @contextlib.contextmanager
    def substituted(self, replace: Replace) -> Iterator["Pipeline"]:
        """:meth:`substitute` for the ``with`` block; the pipeline's own sessions are back afterwards."""
        replaced = self.substitute(replace)
        try:
            yield self
        finally:
            self.sessions.update(replaced)

    def close(self) -> None:
        """Close the sessions the pipeline opened (not those put in through :meth:`substitute`)."""
        owned, self._owned = self._owned, []
        for session in owned:
            session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def pipeline_for(bundle: Any, pipeline_class: type[Pipeline], **options) -> Iterator[Any]:
    """``bundle`` itself when it is already a ``pipeline_class`` (the caller keeps it open), else a new one
    opened on it and closed when the block ends."""
    if isinstance(bundle, pipeline_class):
        yield bundle
        return
    with pipeline_class(bundle, **options) as pipeline:
        yield pipeline
