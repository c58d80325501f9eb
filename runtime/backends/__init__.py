"""Backends: one ``Session`` per component behind one interface; ``open_session`` picks the backend by name."""
from runtime.backends.base import (BACKENDS, NonFiniteOutputError, OwnsSessions, Session, check_finite, open_session,
                                   pipeline_for, prepare_feeds)
from runtime.backends.onnxrt import OrtSession

__all__ = ["BACKENDS", "NonFiniteOutputError", "OrtSession", "OwnsSessions", "Session", "check_finite", "open_session",
           "pipeline_for", "prepare_feeds"]
