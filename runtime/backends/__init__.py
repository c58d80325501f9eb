"""Backends: one ``Session`` per component behind one interface; ``open_session`` picks the backend by name."""
from runtime.backends.base import (BACKENDS, Backend, NonFiniteOutputError, OwnsSessions, Session, auto_backend,
                                   check_finite, open_session, pipeline_for, prepare_feeds)
from runtime.backends.onnxrt import OrtSession

__all__ = ["BACKENDS", "Backend", "NonFiniteOutputError", "OrtSession", "OwnsSessions", "Session", "auto_backend",
           "check_finite", "open_session", "pipeline_for", "prepare_feeds"]
