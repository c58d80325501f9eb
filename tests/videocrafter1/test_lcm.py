"""T2V-Turbo's LCM sampler against the official code: the golden cases made with Ji4chenLi/t2v-turbo
(``golden/make_lcm_cases.py``: T2VTurboScheduler step by step, the guidance embedding, the UNet with
timestep_cond / motion_cond, whole T2VTurboVC2Pipeline samples), then the runtime pipeline on a tiny T2V-Turbo
bundle reproducing the official v2 sample, and the sampler's and pipeline's errors."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.__main__ import main
from export.checkpoint import load_checkpoint
from export.golden import Case
from export.videocrafter1.bundle import export_bundle
from export.videocrafter1.graphs import UNetSpec, unet_conditions, unet_graph
from export.videocrafter1.presets import tiny_turbo_variants
from runtime.videocrafter1.constants import DiffusionSchedule, SamplingConstants
from runtime.videocrafter1.lcm import LCMSampler, lcm_timesteps
from runtime.videocrafter1.sampling import make_sampler

GOLDEN = Path(__file__).parent / "golden"
CASES = {"lcm_schedule": {"runtime"}, "lcm_guidance_embedding": {"runtime"}, "unet3d_t2v_turbo": {"torch", "onnx"},
         "unet3d_t2v_turbo_v2": {"torch", "onnx"}, "lcm_sample_t2v_turbo": {"torch", "onnx"},
         "lcm_sample_t2v_turbo_v2": {"torch", "onnx"}}
LINEAR = DiffusionSchedule(linear_start=0.00085, linear_end=0.012, num_timesteps=1000)


def test_golden_cases_of_the_official_code_pass(capsys):
    assert main(["verify-reference", *[str(GOLDEN / name) for name in CASES]]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] in ("PASS", "FAIL"):
            rows.setdefault(parts[0], set()).add(parts[2])
    assert rows == CASES


def test_turbo_unet_keys_are_the_official_ones_in_their_order():
    """time_cond_proj, motion_cond_proj and combine_proj sit right after fps_embedding, as in the official
    state_dict (the key manifest of a tiny v2 UNet made on the official code), so LoRA lists line up."""
    from export.videocrafter1.unet import UNetModel

    manifest = json.loads((GOLDEN / "t2v_turbo_v2_tiny.unet.json").read_text())
    ours = UNetModel(**manifest["config"]).state_dict()
    assert list(ours) == list(manifest["keys"])
    assert {k: list(v.shape) for k, v in ours.items()} == {k: shape for k, (shape, _) in manifest["keys"].items()}


def test_timesteps_are_the_official_grids():
    """The examples of the official scheduler's set_timesteps (also in the lcm_schedule case)."""
    assert lcm_timesteps(4, 50).tolist() == [999, 759, 519, 279]
    assert lcm_timesteps(8, 200).tolist() == [999, 874, 749, 624, 499, 374, 249, 124]
    assert lcm_timesteps(16, 200).tolist() == list(range(999, 98, -60))
    with pytest.raises(ValueError, match=r"LCM steps must be in \[1, lcm_origin_steps = 50\], got 51"):
        lcm_timesteps(51, 50)


def test_noise_is_checked():
    x = np.zeros((1, 4, 2, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="pass rng=np.random.default_rng"):
        make_sampler("lcm", LINEAR, 4, lcm_origin_steps=50)
    with pytest.raises(ValueError, match="noise has 2 arrays, expected one per step but the last \\(3 for 4 steps\\)"):
        make_sampler("lcm", LINEAR, 4, lcm_origin_steps=50, noise=[x, x])
    sampler = make_sampler("lcm", LINEAR, 2, lcm_origin_steps=50, noise=lambda shape: np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"noise for step 0 has shape \[1, 4\], expected \[1, 4, 2, 2, 2\]"):
        sampler.step(x, 999, x)
    with pytest.raises(ValueError, match="lcm_origin_steps"):
        make_sampler("lcm", LINEAR, 4)
    with pytest.raises(ValueError, match="apply to the lcm sampler only, not 'ddim'"):
        make_sampler("ddim", LINEAR, 4, eta=0.0, noise=[x])
    with pytest.raises(ValueError, match="take no eta"):
        make_sampler("lcm", LINEAR, 4, eta=1.0, lcm_origin_steps=50, rng=np.random.default_rng(0))


def test_one_step_returns_the_estimate_without_noise():
    sampler = LCMSampler(LINEAR, origin_steps=50)
    sampler.set_timesteps(1)
    x = np.ones((1, 4, 1, 2, 2), dtype=np.float32)
    assert sampler.step(np.zeros_like(x), 999, x).dtype == np.float32


def test_constants_write_lcm_keys_only_for_lcm():
    sampling = SamplingConstants(sampler_name="ddim", diffusion=LINEAR, steps=50, eta=1.0, guidance_scale=12.0)
    assert not {"lcm_origin_steps", "use_motion_cond", "motion_gs"} & set(sampling.to_dict())
    turbo = SamplingConstants(sampler_name="lcm", diffusion=LINEAR, steps=8, eta=1.0, guidance_scale=7.5,
                              lcm_origin_steps=200, use_motion_cond=True, motion_gs=0.05, motion_percentage=0.5)
    written = turbo.to_dict()
    assert {k: written[k] for k in ("name", "lcm_origin_steps", "use_motion_cond", "motion_gs", "motion_percentage")} \
        == {"name": "lcm", "lcm_origin_steps": 200, "use_motion_cond": True, "motion_gs": 0.05,
            "motion_percentage": 0.5}
    assert SamplingConstants.from_dict(written) == turbo


@pytest.fixture(scope="module")
def golden_v2():
    return Case.load(GOLDEN / "lcm_sample_t2v_turbo_v2")


@pytest.fixture(scope="module")
def turbo_bundle(tmp_path_factory, golden_v2):
    """A tiny T2V-Turbo v2 bundle whose UNet has the golden case's config (its text encoder is 16 wide to match;
    its weights are random: the tests substitute the case's UNet and context)."""
    config = copy.deepcopy(tiny_turbo_variants()["tiny-t2v-turbo-v2"])
    config.unet = dict(golden_v2.config["unet"])
    config.text["text_cfg"].update(width=16, heads=2, layers=2)
    config.text["embed_dim"] = 16
    config.frames = golden_v2.io["x_T"].shape[2]
    return export_bundle(config, tmp_path_factory.mktemp("turbo") / "videocrafter1-tiny-t2v-turbo-v2",
                         log=lambda _: None)


class CaseUNet:
    """The bundle's UNet replaced by our torch UNet with the golden case's weights; records each call's feeds."""

    def __init__(self, session, case: Case):
        unet = load_checkpoint(UNetSpec.construct(case.config["unet"]), case.weights, what="golden unet")
        self.spec = unet_graph(unet_conditions(case.config["unet"])).spec(unet)
        self.component, self.calls = session.component, []

    def run(self, feeds):
        self.calls.append({k: np.array(v) for k, v in feeds.items()})
        return self.spec.run_torch(feeds)


class CaseText:
    """The text encoder replaced by the case's context: prompt "video i" -> context row i."""

    def __init__(self, session, context):
        self.component, self.context = session.component, context

    def run(self, feeds):
        return {"context": self.context[: len(feeds["tokens"])]}


def _official_run(pipeline, case, **options):
    unet = []

    def replace(name, session):
        if name == "unet":
            unet.append(CaseUNet(session, case))
            return unet[0]
        return CaseText(session, case.io["context"]) if name == "text_encoder" else None

    with pipeline.substituted(replace):
        latent = pipeline.generate(["video 0", "video 1"], latents=case.io["x_T"], noise=list(case.io["noise"]),
                                   fps=int(case.io["fps"][0]), output_type="latent", progress=False, **options)
    return latent, unet[0].calls


@pytest.mark.parametrize("memory", ["normal", "low"])
def test_pipeline_reproduces_the_official_v2_sample(turbo_bundle, golden_v2, memory):
    """Bundle defaults (lcm, 8 steps of 200, w 7.5, motion 0.05 over the first half) = the case's settings."""
    with runtime.VideoPipeline(turbo_bundle, memory=memory) as pipeline:
        steps = []
        latent, calls = _official_run(pipeline, golden_v2, callback=lambda i, t, x: steps.append(t))
    np.testing.assert_allclose(latent, golden_v2.io["latent"], atol=golden_v2.atol, rtol=golden_v2.rtol)
    assert steps == lcm_timesteps(8, 200).tolist()
    batches = [len(c["x"]) for c in calls]
    assert batches == ([2] * 8 if memory == "normal" else [1] * 16)  # no guidance branch
    first, last = calls[0], calls[-1]
    assert set(first) == {"x", "timesteps", "context", "fps", "timestep_cond", "motion_cond"}
    assert not np.allclose(first["motion_cond"], last["motion_cond"])  # 0.05 at t=999, 0 at t=124


def test_seeded_generation_and_stop(turbo_bundle):
    with runtime.VideoPipeline(turbo_bundle) as pipeline:
        video = pipeline.generate("a corgi", seed=3, progress=False)
        again = pipeline.generate("a corgi", seed=3, progress=False)
        stopped = pipeline.generate("a corgi", seed=3, steps=4, output_type="latent", progress=False,
                                    callback=lambda i, t, x: i < 1)
        with pytest.raises(ValueError, match="takes no negative_prompt"):
            pipeline.generate("a corgi", negative_prompt="blurry", progress=False)
    assert video.shape == (4, 64, 64, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video, again)
    assert stopped.shape == (1, 4, 4, 8, 8)


def test_lcm_on_a_bundle_without_timestep_cond_is_refused(turbo_bundle, tmp_path):
    """A UNet without timestep_cond (every non-Turbo bundle) cannot run lcm: a clear error, before any step."""
    plain = tmp_path / "plain"
    shutil.copytree(turbo_bundle, plain)
    manifest = json.loads((plain / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    unet["inputs"] = [t for t in unet["inputs"] if t["name"] not in ("timestep_cond", "motion_cond")]
    unet["profile"] = {k: v for k, v in unet["profile"].items() if k not in ("timestep_cond", "motion_cond")}
    sampler = manifest["pipeline"]["sampler"]
    for key in ("lcm_origin_steps", "use_motion_cond", "motion_gs", "motion_percentage"):
        sampler.pop(key)
    sampler["name"] = "ddim"
    (plain / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="the lcm sampler needs a T2V-Turbo UNet \\(input timestep_cond\\)"):
        runtime.generate_video("a corgi", bundle=plain, sampler="lcm", progress=False, backend="onnxruntime")


def test_engines_take_the_turbo_inputs_from_the_manifest(turbo_bundle):
    """trtexec's profile shapes and the Triton config carry timestep_cond and motion_cond like any other input."""
    from engines.trtexec import command
    from engines.triton_repo import component_config
    from runtime.bundle import Bundle

    bundle = Bundle(turbo_bundle)
    args = command(bundle, "unet", "fp16", workspace_mb=1024)
    shapes = {a.split("=")[0]: a.split("=")[1] for a in args if a.startswith(("--minShapes", "--optShapes",
                                                                           "--maxShapes"))}
    assert "timestep_cond:1x256" in shapes["--minShapes"] and "motion_cond:1x256" in shapes["--optShapes"]
    assert "timestep_cond:4x256" in shapes["--maxShapes"] and "x:1x4" in shapes["--optShapes"]  # batch 1 per video
    pytest.importorskip("tritonclient")
    inputs = {t.name: list(t.dims) for t in component_config(bundle.component("unet"), "unet", "onnxruntime").input}
    assert inputs["timestep_cond"] == [256] and inputs["motion_cond"] == [256]


def test_calibration_records_the_turbo_unet_inputs(turbo_bundle, tmp_path):
    """``calibration collect`` on a Turbo bundle: UNet records at batch 1 per video with both condition inputs."""
    from calibration.collect import collect
    from calibration.store import CalibrationData

    collect(turbo_bundle, tmp_path / "data", samples=1, steps=2, log=lambda _: None)
    data = CalibrationData.open(tmp_path / "data")
    records = list(data.records("unet"))
    assert [r["timestep"] for r in data.index["components"]["unet"]["records"]] == lcm_timesteps(2, 200).tolist()
    for feeds in records:
        assert feeds["x"].shape[0] == 1 and feeds["timestep_cond"].shape == (1, 256)
        assert feeds["motion_cond"].shape == (1, 256)


@pytest.mark.parametrize("name", ["lcm_video_t2v_turbo", "lcm_video_t2v_turbo_v2"])
def test_a_bundle_exported_from_official_files_reproduces_the_official_video(capsys, name):
    """The ``lcm.video`` cases (made by ``python -m benchmarks.probes.turbo_official --variant tiny-t2v-turbo[-v2]``
    with the official code): a Lightning ``model.ckpt`` with the official ``unet_lora.pt`` list and the drawn
    ``time_cond_proj`` base (v1) or the whole ``unet_mg.pt`` (v2, motion guidance), exported as ``export`` does,
    then the runtime from the official run's x_T and noise: the same latents, and the decoded video at least
    40 dB from the official pipeline's."""
    case = GOLDEN / name
    video = np.load(case / "io.npz")["video"]
    assert 0.0 < np.mean((video == 0) | (video == 255)) < 0.5  # a video, not a saturated block
    assert main(["verify-reference", str(case)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{name} ")]
    assert len(rows) == 3 and all("PASS" in row.split() for row in rows), rows
    assert "runtime text" in rows[1] and "runtime video" in rows[2] and "PSNR" in rows[2]
