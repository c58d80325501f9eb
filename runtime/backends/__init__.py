"""Backends: one ``Session`` per component behind one interface; ``open_session`` picks the backend by name."""
from runtime.backends.base import (BACKENDS, Backend, NonFiniteOutputError, Session, auto_backend, check_finite,
                                   open_session, prepare_feeds)
from runtime.backends.onnxrt import OrtSession

__all__ = ["BACKENDS", "Backend", "NonFiniteOutputError", "OrtSession", "Session", "auto_backend", "check_finite",
           "open_session", "prepare_feeds"]
