"""``VideoPipeline(memory="low")``: the same video as the normal pipeline, with at most one graph open at a time."""
from __future__ import annotations

import numpy as np
import pytest

from export.videocrafter1.bundle import export_bundle
from export.videocrafter1.presets import tiny_t2v
from runtime.pipeline import LazySession
from runtime.videocrafter1.pipeline import VideoPipeline


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle(tiny_t2v(), tmp_path_factory.mktemp("low") / "t2v", seed=0, log=lambda _: None)


def test_low_memory_pipeline_holds_one_graph_and_makes_the_same_video(bundle, monkeypatch):
    kwargs = dict(steps=4, seed=0, frames=4, progress=False)
    with VideoPipeline(bundle, backend="onnxruntime") as normal:
        expected = normal.generate("a corgi on the beach", **kwargs)

    order, open_counts = [], []
    run = LazySession.run

    def spy(session, feeds):
        result = run(session, feeds)
        order.append(session.component.name)
        open_counts.append(sum(s.is_open for s in sessions))
        return result

    monkeypatch.setattr(LazySession, "run", spy)
    with VideoPipeline(bundle, backend="onnxruntime", memory="low") as low:
        sessions = [low.sessions[name] for name in ("text_encoder", "unet", "vae_decoder")]
        assert not any(s.is_open for s in sessions)  # nothing opened before it is needed
        found = low.generate("a corgi on the beach", **kwargs)
    np.testing.assert_array_equal(found, expected)
    assert order == ["text_encoder", *["unet"] * 8, *["vae_decoder"] * 4]  # the guided batch of 2 as two calls
    assert open_counts == [1] * len(order)
    assert not any(s.is_open for s in sessions)  # closed with the pipeline
