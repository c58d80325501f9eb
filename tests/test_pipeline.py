"""The pipeline layer: sessions in one mapping, their life (close, ``with``, low memory), batching to the profile,
the one bundle-family check and the one door for substitutes."""
from __future__ import annotations

import numpy as np
import pytest

from runtime import pipeline as layer
from runtime.bundle import BundleError
from runtime.pipeline import Pipeline, pipeline_for

X = np.arange(3, dtype=np.float32).reshape(1, 3)


class Doubler(Pipeline):
    """A pipeline of the one-graph test bundle (``y = 2 x``, batch 1..4)."""

    family, entry = "test", "double_all"

    def __init__(self, bundle, **options):
        super().__init__(bundle, backend="onnxruntime", **options)
        self.open("double")
        self.first = self.sessions["double"]


class Recorder:
    """A stand-in session that records the batch of every call and doubles as the graph does."""

    def __init__(self, component):
        self.component, self.batches = component, []

    def run(self, feeds):
        self.batches.append(len(feeds["x"]))
        return {"y": 2 * feeds["x"]}


def _is_closed(session) -> bool:
    try:
        session.run({"x": X})
    except BundleError:
        return True
    return False


def test_pipeline_for_closes_only_the_pipelines_it_opened(double_bundle):
    with pipeline_for(double_bundle, Doubler) as opened:
        assert not _is_closed(opened.first)
    assert _is_closed(opened.first)
    mine = Doubler(double_bundle)
    with pipeline_for(mine, Doubler) as given:
        assert given is mine
    assert not _is_closed(mine.first)  # the caller's pipeline stays open
    mine.close()
    assert _is_closed(mine.first)


def test_a_bundle_of_another_family_is_refused_naming_both(double_bundle):
    class Videos(Pipeline):
        family, entry = "videocrafter1", "generate_video"

    with pytest.raises(BundleError, match=r"is a test bundle \(tiny\); generate_video needs a videocrafter1 bundle"):
        Videos(double_bundle)
    with pytest.raises(ValueError, match="memory must be one of normal, low, found 'tiny'"):
        Doubler(double_bundle, memory="tiny")


def test_runs_batch_to_the_profile_and_equal_one_call(double_bundle):
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    with Doubler(double_bundle) as pipeline:
        recorder = Recorder(pipeline.bundle.component("double"))
        with pipeline.substituted(lambda name, _session: recorder if name == "double" else None):
            np.testing.assert_array_equal(pipeline.run("double", {"x": x})["y"], 2 * x)
            assert recorder.batches == [4, 4, 2]  # the profile's largest batch is 4
            pipeline.run("double", {"x": x}, batch=3)
            assert recorder.batches[3:] == [3, 3, 3, 1]
        assert pipeline.sessions["double"] is pipeline.first  # the pipeline's own session is back
        assert pipeline.batch_limit("double") == 4
        with pytest.raises(BundleError, match=r"Doubler of .* has no open 'unet'; it has \['double'\]"):
            pipeline.run("unet", {"x": x})


def test_substitute_replaces_by_name_and_close_leaves_substitutes_alone(double_bundle):
    pipeline = Doubler(double_bundle)
    stand_in = Recorder(pipeline.bundle.component("double"))
    assert pipeline.substitute(lambda name, session: None) == {}  # None keeps a session
    replaced = pipeline.substitute(lambda name, _session: stand_in if name == "double" else None)
    assert replaced == {"double": pipeline.first} and pipeline.sessions["double"] is stand_in
    pipeline.close()
    assert _is_closed(pipeline.first)  # what it opened is closed, though substituted
    np.testing.assert_array_equal(stand_in.run({"x": X})["y"], 2 * X)  # the substitute is the caller's


def test_low_memory_sessions_open_on_use_one_at_a_time(double_bundle, monkeypatch):
    trims = []
    monkeypatch.setattr(layer, "trim", lambda: trims.append(1) or True)

    class TwoLazy(Pipeline):
        family, entry = "test", "double_all"

        def __init__(self, bundle, memory="low"):
            super().__init__(bundle, backend="onnxruntime", memory=memory)
            self.first = layer.LazySession(self.bundle, "double", self.backend, self._group)
            self.second = layer.LazySession(self.bundle, "double", self.backend, self._group)
            self._owned += [self.first, self.second]

    with TwoLazy(double_bundle) as pipeline:
        assert not pipeline.first.is_open and not pipeline.second.is_open  # nothing opened up front
        assert pipeline.first.component.name == "double"
        np.testing.assert_array_equal(pipeline.first.run({"x": X})["y"], 2 * X)
        np.testing.assert_array_equal(pipeline.first.run({"x": X})["y"], 2 * X)
        assert pipeline.first.is_open and not pipeline.second.is_open
        assert not pipeline.first._session._session.get_session_options().enable_mem_pattern  # low-memory ORT
        assert trims == []
        np.testing.assert_array_equal(pipeline.second.run({"x": X})["y"], 2 * X)
        assert pipeline.second.is_open and not pipeline.first.is_open  # the first was freed
        assert trims == [1]  # and its heap pages handed back
        assert pipeline.first.switch_s > 0 and pipeline.second.switch_s > 0
    assert not pipeline.second.is_open and trims == [1, 1]


def test_open_in_low_memory_gives_lazy_sessions(double_bundle):
    class Lazy(Pipeline):
        family, entry = "test", "double_all"

    with Lazy(double_bundle, backend="onnxruntime", memory="low") as pipeline:
        pipeline.open("double")
        session = pipeline.sessions["double"]
        assert isinstance(session, layer.LazySession) and not session.is_open
        np.testing.assert_array_equal(pipeline.run("double", {"x": X})["y"], 2 * X)
        assert session.is_open
    assert not session.is_open


@pytest.mark.filterwarnings("ignore::runtime.backends.ov.PrecisionFallbackWarning")
def test_a_lazy_session_keeps_the_precision_its_backend_ran_after_closing(double_bundle, monkeypatch, tmp_path):
    """What a low-memory component ran in stays readable once it is freed (the benchmarks record it after the
    run): OpenVINO BF16 is BF16 where the CPU has it natively and FP32 elsewhere, as an eager session says."""
    pytest.importorskip("openvino")
    from runtime.backends.base import Backend, open_session
    from runtime.cpu import this_cpu

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    backend = Backend("openvino", precision="bf16")
    with open_session(double_bundle, "double", backend=backend) as eager:
        assert eager.precision == ("bf16" if this_cpu().bf16 else "fp32")

    class Lazy(Pipeline):
        family, entry = "test", "double_all"

    with Lazy(double_bundle, backend=backend, memory="low") as pipeline:
        pipeline.open("double")
        session = pipeline.sessions["double"]
        assert session.precision is None  # not opened yet
        np.testing.assert_array_equal(pipeline.run("double", {"x": X})["y"], 2 * X)
    assert not session.is_open and session.precision == eager.precision
