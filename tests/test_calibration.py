"""INT8 calibration on the tiny VideoCrafter1 T2V preset: collect, quantize (Q/DQ + cache), report."""
from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibration.__main__ import main
from calibration.cache import activation_scales, read_cache, version_code
from calibration.collect import collect
from calibration.quantize import QUANTIZED_OPS, quantize
from calibration.report import compare_graphs, report
from runtime.backends import OrtSession
from calibration.store import CalibrationData, CalibrationDataError
from engines.profiles import source_graph
from export.videocrafter1.bundle import export_bundle
from export.videocrafter1.presets import tiny_t2v
from runtime.ait.constants import DepthConstants
from runtime.arrays import agreement
from runtime.bundle import Bundle, BundleError
from runtime.cpu import int8_saturates, this_cpu
from runtime.videocrafter1.constants import VideoConstants

SAMPLES, STEPS = 3, 4


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny T2V bundle, data recorded from 3 runs of 4 DDIM steps (the last held out), quantized with minmax."""
    root = tmp_path_factory.mktemp("calib")
    bundle = export_bundle(tiny_t2v(), root / "t2v", seed=0, log=lambda _: None)
    data = root / "data"
    collect(bundle, data, samples=SAMPLES, steps=STEPS, log=lambda _: None)
    entries = quantize(bundle, data, method="minmax", log=lambda _: None)
    return Bundle(bundle, verify_hashes=True), CalibrationData.open(data), entries


def _dq_fed_nodes(model) -> set[str]:
    """Names of the nodes with at least one input coming from a DequantizeLinear."""
    dq_outputs = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if dq_outputs.intersection(n.input)}


def test_collect_records_trajectory_with_both_branches(calibrated):
    bundle, data, _ = calibrated
    unet = data.index["components"]["unet"]["records"]
    assert len(unet) == SAMPLES * STEPS
    assert len({r["timestep"] for r in unet}) == STEPS  # spread along the trajectory: 1, 251, 501, 751
    assert max(r["timestep"] for r in unet) - min(r["timestep"] for r in unet) >= 500
    for feeds in data.records("unet"):
        assert feeds["x"].shape[0] == 2 and feeds["timesteps"].shape == (2,)
        np.testing.assert_array_equal(feeds["x"][0], feeds["x"][1])  # one latent, two conditionings
        assert not np.allclose(feeds["context"][0], feeds["context"][1])  # conditional vs unconditional
    frames = VideoConstants.of(bundle).frames
    assert len(list(data.records("vae_decoder"))) == SAMPLES * frames
    assert [len(list(data.records(c, "heldout"))) for c in ("unet", "vae_decoder")] == [STEPS, frames]
    tokens = [f["tokens"] for f in data.records("text_encoder")]
    assert len(tokens) == SAMPLES and all(t.shape == (2, 77) for t in tokens)
    assert len({t[0].tobytes() for t in tokens}) == SAMPLES  # different prompts


def test_qdq_graphs_run_and_quantize_only_where_expected(calibrated):
    bundle, data, entries = calibrated
    for name, entry in entries.items():
        component = bundle.component(name)
        assert component.int8 == entry and source_graph(bundle, component, "int8") == entry["graph"]
        model = onnx.load(str(bundle.verify(entry["graph"])))
        ops = [n.op_type for n in model.graph.node]
        assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") >= ops.count("QuantizeLinear")
        fed = _dq_fed_nodes(model)
        excluded = set(entry["excluded_nodes"])
        assert not fed & excluded, sorted(fed & excluded)
        weighted = {n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS}
        assert weighted - excluded and weighted - excluded <= fed
        outputs = OrtSession(bundle, name, graph=bundle.verify(entry["graph"])).run(next(data.records(name)))
        assert all(np.isfinite(v).all() for v in outputs.values())
        _loads_with_exact_int8_kernels(bundle.verify(entry["graph"]))
        # symmetric per-channel weights over the whole 8-bit range: each channel's largest weight is +-127
        weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
        assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights if w.size > 1) == 127
    reasons = set(entries["unet"]["excluded_nodes"].values())
    assert {"first convolution", "last convolution", "attention softmax", "normalisation"} <= reasons
    assert any(n.endswith("Softmax") for n in entries["vae_decoder"]["excluded_nodes"])


def test_openvino_runs_the_qdq_graphs_as_onnx_runtime_does(calibrated, tmp_path):
    """OpenVINO runs the Q/DQ graphs quantized (not FP32 in disguise: SNR to FP32 well below FP32 rounding's
    > 100 dB), close to what ONNX Runtime's INT8 gives. Measured SNR to FP32, ORT / OpenVINO, first held-out
    record (AMD EPYC, AVX-512 VNNI): text encoder 30.4 / 30.4 dB, UNet 26.4 / 26.4 dB, VAE decoder 26.0 / 26.0 dB
    (25.7-41.7 dB between the two: they round differently); so the floor is 15 dB, the ceiling 60 dB. Where
    OpenVINO's INT8 sums saturate (x86 without VNNI: the text encoder falls to 12.8 dB) it says so instead."""
    pytest.importorskip("openvino")
    from runtime.backends.ov import Int8SaturationWarning, OpenVINOSession

    bundle, data, entries = calibrated
    for name, entry in entries.items():
        feeds = next(data.records(name, "heldout"))
        graph = bundle.verify(entry["graph"])
        fp32 = OrtSession(bundle, name).run(feeds)
        ort = OrtSession(bundle, name, graph=graph).run(feeds)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with OpenVINOSession(bundle, name, graph=graph, cache_dir=tmp_path) as session:
                assert session.precision == "fp32"  # what is not quantized stays FP32
                found = session.run(feeds)
        said = [str(w.message) for w in caught if issubclass(w.category, Int8SaturationWarning)]
        assert len(said) == int8_saturates(), said
        if said:
            assert said[0].startswith(f"{name}: on this CPU, {this_cpu().describe()}, OpenVINO's INT8 kernels")
            continue
        for output in fp32:
            ov_db, between = agreement(fp32[output], found[output]).snr_db, agreement(ort[output], found[output]).snr_db
            assert 15 <= ov_db < 60 and between >= 15, (name, output, ov_db, between)


def _loads_with_exact_int8_kernels(graph) -> None:
    """ONNX Runtime loads the graph with the U8U8 kernels the runtime takes on x86 without VNNI, whatever this CPU
    (its s8 -> u8 rewrite refused the AiT image encoder with its constant-input MatMuls quantized)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.x64quantprecision", "1")
    ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


def test_cache_parses_back_to_the_graph_scales(calibrated, tmp_path):
    bundle, data, entries = calibrated
    for entry in entries.values():
        header, scales = read_cache(bundle.verify(entry["cache"]))
        assert header == f"TRT-{version_code(entry['tensorrt_cache_version'])}-EntropyCalibration2"
        expected = activation_scales(onnx.load(str(bundle.verify(entry["graph"]))))
        assert scales.keys() == expected.keys() and len(scales) == entry["tensors_in_cache"]
        assert all(np.float32(scales[k]) == np.float32(v) for k, v in expected.items())
    # symmetric activations: scale = amax / 127 of what the tensor saw on the calibration records
    name, scale = next(iter(read_cache(bundle.verify(entries["vae_decoder"]["cache"]))[1].items()))
    model = onnx.load(str(bundle.component_path("vae_decoder")))
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    probe = tmp_path / "probe.onnx"
    onnx.save(model, str(probe))
    session = OrtSession(bundle, "vae_decoder", graph=probe)
    amax = max(np.abs(session.run(f)[name]).max() for f in data.records("vae_decoder", "calibration"))
    assert scale == pytest.approx(amax / 127, rel=1e-5)


def test_report_figures_come_from_real_runs(calibrated, tmp_path):
    bundle, data, entries = calibrated
    figures = report(bundle.root, data.root, end_to_end=True)
    assert figures["cpu_class"] == this_cpu().isa and figures["cpu"] == this_cpu().describe()
    for name, f in figures["components"].items():
        assert 0.9 < f["cosine"] < 1.0 and 0 < f["mean_abs"] <= f["max_abs"] and f["snr_db"] > 5
    e2e = figures["end_to_end"]
    assert math.isfinite(e2e["psnr_db_int8_unet"]) and e2e["psnr_db_int8_unet"] > 15
    assert e2e["psnr_db_all_int8"] > 10

    graph = onnx.load(str(bundle.verify(entries["unet"]["graph"])))
    # the last activation quantizer (in the last output block, no residual path around it): scale / 32 clips it
    weights = {i.name for i in graph.graph.initializer}
    quantizer = [n for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights][-1]
    scale = next(i for i in graph.graph.initializer if i.name == quantizer.input[1])
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) / np.float32(32), scale.name))
    perturbed = tmp_path / "unet.perturbed.onnx"
    onnx.save(graph, str(perturbed))
    fp32 = OrtSession(bundle, "unet")
    heldout = list(data.records("unet", "heldout"))
    original = compare_graphs(fp32, OrtSession(bundle, "unet", graph=bundle.verify(entries["unet"]["graph"])), heldout)
    moved = compare_graphs(fp32, OrtSession(bundle, "unet", graph=perturbed), heldout)
    assert original["snr_db"] == pytest.approx(figures["components"]["unet"]["snr_db"])
    assert moved["snr_db"] < original["snr_db"] - 1.0 and moved["mean_abs"] > original["mean_abs"]


def test_bad_inputs_give_clear_errors(calibrated, tmp_path, capsys):
    bundle, _, _ = calibrated
    with pytest.raises(CalibrationDataError, match="index.json not found"):
        quantize(bundle.root, tmp_path / "missing", log=lambda _: None)
    empty = tmp_path / "prompts.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(CalibrationDataError, match="has no prompts"):
        collect(bundle.root, tmp_path / "out", prompts=empty, samples=1, steps=1, log=lambda _: None)
    assert main(["quantize", str(bundle.root), "--data", str(tmp_path / "missing")]) == 2
    assert "collect BUNDLE" in capsys.readouterr().err
    with pytest.raises(ValueError, match="matches no node"):
        quantize(bundle.root, CalibrationData.open(calibrated[1].root).root, components=["text_encoder"],
                 exclude=["*no-such-node*"], log=lambda _: None)


@pytest.mark.parametrize("memory", ["normal", "low"])
def test_int8_option_runs_the_named_components_from_their_qdq_graph(calibrated, memory):
    """``Backend(..., int8=["unet"])`` in a pipeline gives the video of the same pipeline with the UNet put in as
    an INT8 session by hand, bit for bit, and differs from the FP32 video; the other components stay FP32."""
    import runtime
    from runtime.backends import Backend, open_session

    bundle, data, _ = calibrated
    feeds = next(data.records("text_encoder", "heldout"))
    fp32 = OrtSession(bundle, "text_encoder").run(feeds)
    with open_session(bundle, "text_encoder", backend=Backend("onnxruntime", int8=["unet"])) as session:
        found = session.run(feeds)
        for output in fp32:
            np.testing.assert_array_equal(found[output], fp32[output])
    args = dict(steps=2, seed=0, frames=2)
    with runtime.VideoPipeline(bundle, backend=Backend("onnxruntime", int8=["unet"]), memory=memory) as pipe:
        int8 = pipe.generate("a corgi", **args)
    with runtime.VideoPipeline(bundle, backend="onnxruntime") as pipe:
        fp32_video = pipe.generate("a corgi", **args)
        by_hand = OrtSession(bundle, "unet", graph=bundle.int8_path("unet"))
        with pipe.substituted(lambda name, s: by_hand if name == "unet" else None):
            expected = pipe.generate("a corgi", **args)
    np.testing.assert_array_equal(int8, expected)
    assert not np.array_equal(int8, fp32_video)


def test_int8_option_refuses_what_it_cannot_run(calibrated, tmp_path):
    from runtime.backends import Backend, open_session

    bundle, _, _ = calibrated
    with pytest.raises(BundleError, match="int8 names 'unte', not a component of the bundle; expected some of "
                                          "text_encoder, unet, vae_decoder"):
        open_session(bundle, "unet", backend=Backend("onnxruntime", int8=["unte"]))
    with pytest.raises(BundleError, match="unet: both int8 and graph= ask which graph to run"):
        open_session(bundle, "unet", backend="onnxruntime", int8=["unet"], graph=bundle.component_path("unet"))
    with pytest.raises(BundleError, match="TensorRT runs INT8 from its engines"):
        open_session(bundle, "unet", backend="tensorrt", int8="unet")
    with pytest.raises(BundleError, match="unet: backend 'triton' does not run another graph of a component"):
        open_session(bundle, "unet", backend=Backend("triton", url="http://127.0.0.1:9"), int8=["unet"])
    plain = export_bundle(tiny_t2v(), tmp_path / "plain", seed=0, log=lambda _: None)
    with pytest.raises(BundleError, match=r"unet: bundle .* has no INT8 graph of this component; write one with "
                                          r"`python -m calibration collect"):
        open_session(Bundle(plain), "unet", backend="onnxruntime", int8=["unet"])


def test_minmax_ranges_match_onnxruntime_calibrator(calibrated, tmp_path):
    """The one-copy min/max pass finds the ranges ONNX Runtime's own MinMax calibrator finds, tensor by tensor."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    from calibration.ranges import minmax_ranges

    bundle, data, _ = calibrated
    graph = bundle.component_path("unet")
    ours = minmax_ranges(graph, data.records("unet", "calibration"), QUANTIZED_OPS)
    theirs = create_calibrator(graph, list(QUANTIZED_OPS), augmented_model_path=str(tmp_path / "augmented.onnx"),
                               calibrate_method=CalibrationMethod.MinMax)
    theirs.collect_data(iter_reader(data.records("unet", "calibration")))
    expected = theirs.compute_data()
    assert set(ours) == set(expected.data) and len(ours) > 100
    for name, (low, high) in ours.items():
        assert low == pytest.approx(float(np.ravel(expected[name].range_value[0])[0]), rel=1e-3, abs=1e-5), name
        assert high == pytest.approx(float(np.ravel(expected[name].range_value[1])[0]), rel=1e-3, abs=1e-5), name


def iter_reader(records):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(records, None)

    return Reader()


def test_fewer_frames_are_recorded_and_ranges_are_reused(calibrated, tmp_path):
    """``frames`` records the UNet at a reduced frame count (as the released-size benchmark does); the ranges
    the first quantization computed serve the next one, until the data is recorded again."""
    import shutil

    bundle, _, _ = calibrated
    root = shutil.copytree(bundle.root, tmp_path / "t2v")
    data_root = tmp_path / "data"
    collect(root, data_root, samples=2, steps=2, frames=4, log=lambda _: None)
    data = CalibrationData.open(data_root)
    assert data.index["frames"] == 4 and VideoConstants.of(bundle).frames != 4
    assert {f["x"].shape[2] for f in data.records("unet")} == {4}
    assert len(list(data.records("vae_decoder"))) == 2 * 4
    first = quantize(root, data_root, components=["unet"], log=lambda _: None)["unet"]
    ranges = data.ranges_path("unet", "minmax")
    written = ranges.stat().st_mtime_ns
    scales = activation_scales(onnx.load(str(root / first["graph"])))
    second = quantize(root, data_root, components=["unet"], exclude=["*attn1*"], log=lambda _: None)["unet"]
    assert ranges.stat().st_mtime_ns == written and len(second["excluded_nodes"]) > len(first["excluded_nodes"])
    again = activation_scales(onnx.load(str(root / second["graph"])))
    shared = set(scales) & set(again)
    assert shared and all(again[name] == scales[name] for name in shared)
    figures = report(root, data_root)
    assert figures["end_to_end"]["frames"] == 4
    collect(root, data_root, samples=2, steps=2, frames=4, log=lambda _: None)
    assert not ranges.exists()  # new records: the old ranges no longer describe them


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_give_running_qdq_graphs(calibrated, tmp_path, method):
    import shutil

    bundle, data, _ = calibrated
    root = shutil.copytree(bundle.root, tmp_path / "t2v")
    entry = quantize(root, data.root, method=method, components=["text_encoder"], log=lambda _: None)["text_encoder"]
    copy = Bundle(root, verify_hashes=True)
    assert copy.component("text_encoder").int8["method"] == method
    model = onnx.load(str(copy.verify(entry["graph"])))
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") > 0
    fp32 = OrtSession(copy, "text_encoder")
    int8 = OrtSession(copy, "text_encoder", graph=copy.verify(entry["graph"]))
    assert compare_graphs(fp32, int8, data.records("text_encoder", "heldout"))["cosine"] > 0.99


def test_ait_records_encoder_and_ar_loop_and_reports_depth_error(tmp_path):
    from export.ait.bundle import export_bundle as export_ait
    from export.ait.presets import tiny_depth

    root = export_ait(tiny_depth(), tmp_path / "ait", seed=0, log=lambda _: None)
    with pytest.raises(ValueError, match="--frames applies to videocrafter1 bundles; .* is a ait bundle"):
        collect(root, tmp_path / "data", samples=2, frames=2, log=lambda _: None)
    collect(root, tmp_path / "data", samples=2, log=lambda _: None)
    data = CalibrationData.open(tmp_path / "data")
    bundle = Bundle(root)
    constants = DepthConstants.of(bundle)
    steps = constants.token_length
    assert set(data.components) == {"image_encoder", "decoder_step"}
    records = data.index["components"]["decoder_step"]["records"]
    assert [r["step"] for r in records] == list(range(steps)) * 2  # every step of the AR loop, both samples
    windows = constants.shift_size * (2 if constants.flip_test else 1)
    past = [f["self_k"].shape[3] for f in data.records("decoder_step")]
    assert past == list(range(steps)) * 2 and all(r["batch"] == windows for r in records)
    entries = quantize(root, tmp_path / "data", log=lambda _: None)
    for name, entry in entries.items():
        graph = Bundle(root).verify(entry["graph"])
        ops = [n.op_type for n in onnx.load(str(graph)).graph.node]
        assert ops.count("QuantizeLinear") > 0
        _loads_with_exact_int8_kernels(graph)
    figures = report(root, tmp_path / "data")
    assert all(f["cosine"] > 0.9 for f in figures["components"].values())
    e2e = figures["end_to_end"]["all_int8"]
    assert 0 < e2e["abs_rel"] < 0.1 and 0 < e2e["rmse"] < 1.0


def test_imagebind_records_every_encoder_and_reports_cosine_and_retrieval(tmp_path):
    from calibration.collect import DEFAULT_PROMPTS, read_prompts
    from calibration.imagebind import synthetic_imu
    from export.imagebind.bundle import export_bundle as export_imagebind
    from export.imagebind.presets import tiny

    root = export_imagebind(tiny(), tmp_path / "ib", seed=0, log=lambda _: None)
    collect(root, tmp_path / "data", samples=2, log=lambda _: None)
    data = CalibrationData.open(tmp_path / "data")
    modalities = ("vision", "text", "audio", "depth", "thermal", "imu")
    assert set(data.components) == {f"{m}_encoder" for m in modalities}
    np.testing.assert_array_equal(next(data.records("imu_encoder"))["imu"][0], synthetic_imu(0))
    quantize(root, tmp_path / "data", log=lambda _: None)
    figures = report(root, tmp_path / "data")
    e2e = figures["end_to_end"]
    assert set(e2e["embedding_cosine"]) == set(modalities)
    assert all(0.9 < c <= 1.0 + 1e-9 for c in e2e["embedding_cosine"].values())
    retrieval = e2e["retrieval"]
    assert retrieval["queries"] == len(read_prompts(DEFAULT_PROMPTS)) and 0.0 <= retrieval["top1_agreement"] <= 1.0

