"""A stand-in session for the tests: it records the batch of every call and passes the call on."""
from __future__ import annotations


class Recorder:
    """A session proxy that records the batch (axis 0 of the first feed) of every run."""

    def __init__(self, session):
        self.session, self.component, self.batches = session, session.component, []

    def run(self, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        return self.session.run(feeds)
