"""Typed pipeline constants: the manifests written so far load and write back the same JSON, export writes what
the runtime reads, and a renamed, missing or mistyped key is refused with its path and the bundle."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from export.ait.ar_transformer import ARTransformer
from export.ait.bundle import instance_pipeline_constants
from export.ait.bundle import pipeline_constants as depth_constants
from export.ait.presets import tiny_depth, tiny_insseg
from export.imagebind.bundle import pipeline_constants as imagebind_constants
from export.imagebind.model import MODALITIES
from export.imagebind.presets import tiny as tiny_imagebind
from export.videocrafter1.bundle import pipeline_constants as video_constants
from export.videocrafter1.presets import released_variants, tiny_variants
from runtime.ait.constants import DepthConstants, InstanceConstants, task_of
from runtime.bundle import Bundle, BundleError, BundleWriter, Manifest, write_manifest
from runtime.imagebind.constants import ImageBindConstants, MapPreprocess
from runtime.videocrafter1.constants import DiffusionSchedule, VideoConstants
from tests.paths import REPO

# the manifests' pipeline entries as export wrote them before they were typed (released t2v-512, tiny presets)
WRITTEN = json.loads((REPO / "tests" / "pipeline_constants.json").read_text(encoding="utf-8"))
CLASSES = {"videocrafter1/t2v-512": VideoConstants, "videocrafter1/tiny-i2v": VideoConstants,
           "ait/tiny-depth": DepthConstants, "ait/tiny-insseg": InstanceConstants, "imagebind/tiny": ImageBindConstants}


def _bundle(tmp_path, family: str, pipeline: dict) -> Bundle:
    with BundleWriter(tmp_path / family) as root:
        write_manifest(root, Manifest(family, "test", {}, pipeline))
    return Bundle(tmp_path / family)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_bundles_written_before_load_and_write_back_the_same_json(name):
    constants = CLASSES[name].from_dict(WRITTEN[name])
    assert constants.to_dict() == WRITTEN[name]
    assert json.dumps(constants.to_dict(), sort_keys=True) == json.dumps(WRITTEN[name], sort_keys=True)


def test_typed_attributes_of_bundles_written_before():
    t2v, i2v = (VideoConstants.from_dict(WRITTEN[f"videocrafter1/{v}"]) for v in ("t2v-512", "tiny-i2v"))
    assert (t2v.sampling.sampler_name, t2v.sampling.steps, t2v.image) == ("ddim", 50, None)
    assert t2v.sampling.diffusion == DiffusionSchedule(linear_start=0.00085, linear_end=0.012, num_timesteps=1000)
    assert not t2v.sampling.diffusion.use_scale and t2v.sampling.diffusion.scale_b == 0.3  # the official default
    assert i2v.sampling.diffusion.use_scale and i2v.sampling.diffusion.scale_b == 0.7 and i2v.image.image_tokens == 4
    depth = DepthConstants.from_dict(WRITTEN["ait/tiny-depth"])
    assert depth.test_size == (128, 176) and depth.vocabulary.depth_slice == (24, 40)
    assert depth.normalisation.mean is None
    modalities = ImageBindConstants.from_dict(WRITTEN["imagebind/tiny"]).modalities
    assert modalities["audio"].preprocess.clips_per_video == 3
    assert isinstance(modalities["depth"].preprocess, MapPreprocess) and modalities["depth"].preprocess.size == 224


@pytest.mark.parametrize("config", [*tiny_variants().values(), *released_variants().values()], ids=lambda c: c.name)
def test_videocrafter1_export_writes_what_the_runtime_reads(config):
    constants = video_constants(config)
    assert VideoConstants.from_dict(json.loads(json.dumps(constants.to_dict()))) == constants
    assert (constants.image is not None) == (config.mode == "i2v")


@pytest.mark.parametrize("config, write", [(tiny_depth(), depth_constants),
                                           (tiny_insseg(), instance_pipeline_constants)], ids=["depth", "insseg"])
def test_ait_export_writes_what_the_runtime_reads(config, write):
    constants = write(config, ARTransformer(**config.transformer))
    assert type(constants).from_dict(json.loads(json.dumps(constants.to_dict()))) == constants


def test_imagebind_export_writes_what_the_runtime_reads():
    constants = imagebind_constants(tiny_imagebind(), {m: 1.0 for m in MODALITIES})
    assert ImageBindConstants.from_dict(json.loads(json.dumps(constants.to_dict()))) == constants
    assert list(constants.modalities) == list(MODALITIES)


def test_a_renamed_key_is_refused_with_its_path_and_the_bundle(tmp_path):
    written = WRITTEN["videocrafter1/t2v-512"]
    sampler = dict(written["sampler"])
    sampler["num_steps"] = sampler.pop("steps")
    bundle = _bundle(tmp_path, "videocrafter1", {**written, "sampler": sampler})
    with pytest.raises(BundleError, match=r"videocrafter1 test\): pipeline\.sampler: unknown key 'num_steps'; "
                                          r"expected the keys name, .*steps.* export the bundle again"):
        VideoConstants.of(bundle)
    del sampler["num_steps"]
    with pytest.raises(BundleError, match=r"pipeline\.sampler: missing key 'steps'"):
        VideoConstants.from_dict({**written, "sampler": sampler}, "pipeline")


@pytest.mark.parametrize("name, change, message", [
    ("videocrafter1/t2v-512", {"fps": "24"}, r"pipeline\.fps: expected int, found str '24'"),
    ("videocrafter1/t2v-512", {"mode": "v2v"}, r"pipeline\.mode: expected 't2v' or 'i2v', found str 'v2v'"),
    ("videocrafter1/t2v-512", {"mode": "i2v"}, r"pipeline: pipeline constants of mode 'i2v' need an image entry"),
    ("ait/tiny-depth", {"test_size": [128]}, r"pipeline\.test_size: expected a list of 2, found list \[128\]"),
    ("ait/tiny-depth", {"flip_test": 1}, r"pipeline\.flip_test: expected bool, found int 1"),
    ("imagebind/tiny", {"modalities": {"smell": {}}}, r"pipeline\.modalities: unknown key 'smell'; expected some of"),
])
def test_mistyped_values_are_refused(name, change, message):
    with pytest.raises(BundleError, match=message):
        CLASSES[name].from_dict({**WRITTEN[name], **change}, "pipeline")


def test_constants_of_another_family_or_task_are_refused(tmp_path):
    depth = _bundle(tmp_path, "ait", WRITTEN["ait/tiny-depth"])
    assert task_of(depth) == "depth" and task_of(_bundle(tmp_path, "imagebind", WRITTEN["imagebind/tiny"])) is None
    with pytest.raises(BundleError, match="is a ait bundle; VideoConstants are the pipeline constants of "
                                          "videocrafter1 bundles"):
        VideoConstants.of(depth)
    with pytest.raises(BundleError, match=r"ait test\): pipeline: unknown keys 'test_size', 'shift_size'"):
        InstanceConstants.of(depth)
    with pytest.raises(BundleError, match=r"pipeline\.task: expected 'insseg', found str 'depth'"):
        InstanceConstants.from_dict({**WRITTEN["ait/tiny-insseg"], "task": "depth"}, "pipeline")


def test_constants_are_frozen():
    constants = VideoConstants.from_dict(WRITTEN["videocrafter1/t2v-512"])
    with pytest.raises(AttributeError):
        constants.fps = 8
    assert replace(constants, fps=8).fps == 8 and constants.fps == 24
