"""Engines: profiles, trtexec lines, register, lint, the TensorRT backend's decisions (CPU; GPU tests marked)."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engines import lint, precision, profiles, trtexec
from engines.__main__ import main as engines_main
from engines.register import register
from runtime.backends import trt as tensorrt_backend
from runtime.bundle import Bundle, BundleError, BundleWriter, Component, Manifest, TensorSpec, write_manifest
from runtime.backends import OrtSession, open_session
from runtime.backends.trt import LocalTarget, TensorRTSession, select_engine

ORIN = LocalTarget("10.3.0", "Orin", "8.7")
PROFILE = {"x": {"min": (1, 4, 8), "opt": (2, 4, 8), "max": (4, 4, 8)}}


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _softmax_model():
    """x (batch, 4, 8) -> Softmax -> + 1: the shape of a VAE attention block in miniature."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    return _model(
        [helper.make_node("Softmax", ["x"], ["p"], name="/attn/Softmax", axis=-1),
         helper.make_node("Add", ["p", "one"], ["y"], name="/attn/Add")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8])], [one])


def _bundle(tmp_path, models=None, name="bundle"):
    """A bundle with a ``vae_decoder`` and a ``unet`` component (both the softmax graph unless given)."""
    models = models or {}
    out = tmp_path / name
    components = {}
    with BundleWriter(out) as root:
        for comp in ("vae_decoder", "unet"):
            onnx.save(models.get(comp, _softmax_model()), str(root / f"{comp}.onnx"))
            components[comp] = Component(comp, f"{comp}.onnx", (TensorSpec("x", "float32", ("batch", 4, 8)),),
                                         (TensorSpec("y", "float32", ("batch", 4, 8)),), PROFILE)
        write_manifest(root, Manifest("test", "tiny", components, {}, files={f"{c}.onnx": {} for c in components}))
    return out


# --- profiles --------------------------------------------------------------------------------------------------

def test_profile_of_dynamic_and_static_inputs():
    comp = Component("c", "c.onnx", (TensorSpec("x", "float32", ("b", 4, 8)), TensorSpec("t", "int64", (1,))),
                     (), {"x": PROFILE["x"]})
    x, t = profiles.profile_of(comp)
    assert (x.min, x.opt, x.max, x.dynamic) == ((1, 4, 8), (2, 4, 8), (4, 4, 8), True)
    assert (t.min, t.max, t.dynamic) == ((1,), (1,), False)
    assert profiles.shapes_arg((x, t), "max") == "x:4x4x8"
    assert profiles.profile_json((x, t))["t"] == {"min": [1], "opt": [1], "max": [1]}


def test_profile_refuses_inconsistent_or_missing_ranges():
    bad = Component("c", "c.onnx", (TensorSpec("x", "float32", ("b", 4)),), (),
                    {"x": {"min": (2, 4), "opt": (1, 4), "max": (4, 4)}})
    with pytest.raises(BundleError, match=r"min <= opt <= max.*min \[2, 4\], opt \[1, 4\]"):
        profiles.profile_of(bad)
    missing = Component("c", "c.onnx", (TensorSpec("x", "float32", ("b", 4)),), (), {})
    with pytest.raises(BundleError, match="no min/opt/max profile"):
        profiles.profile_of(missing)
    assert profiles.plan_name("unet", "int8") == "unet.int8.plan"
    with pytest.raises(ValueError, match="expected one of fp32, fp16, int8"):
        profiles.plan_name("unet", "fp8")


# --- trtexec -----------------------------------------------------------------------------------------------------

def test_trtexec_command_lines(tmp_path):
    bundle = Bundle(_bundle(tmp_path))
    shapes = ["--minShapes=x:1x4x8", "--optShapes=x:2x4x8", "--maxShapes=x:4x4x8"]
    tail = ["--memPoolSize=workspace:2048M", "--timingCacheFile=timing.cache", "--skipInference"]
    assert trtexec.command(bundle, "unet", "fp16", workspace_mb=2048) == [
        "--onnx=unet.onnx", "--saveEngine=unet.fp16.plan", *shapes, "--fp16", *tail]
    assert trtexec.command(bundle, "vae_decoder", "fp16", workspace_mb=2048) == [
        "--onnx=vae_decoder.onnx", "--saveEngine=vae_decoder.fp16.plan", *shapes, "--fp16",
        "--precisionConstraints=obey", "--layerPrecisions=/attn/Softmax:fp32", *tail]
    assert trtexec.command(bundle, "vae_decoder", "fp32", workspace_mb=2048) == [
        "--onnx=vae_decoder.onnx", "--saveEngine=vae_decoder.fp32.plan", *shapes, *tail]
    assert "--layerPrecisions=/attn/Softmax:fp32" not in trtexec.command(
        bundle, "vae_decoder", "fp16", workspace_mb=2048, keep_fp32="none")
    with pytest.raises(BundleError, match="needs the Q/DQ graph unet.int8.onnx.*calibration"):
        trtexec.command(bundle, "unet", "int8", workspace_mb=2048)


def test_trtexec_script_runs_every_component(tmp_path):
    bundle = Bundle(_bundle(tmp_path))
    path = trtexec.write_script(bundle, "fp16", target_name="jetson-orin")
    text = path.read_text()
    assert path.name == "build_engines_jetson-orin_fp16.sh" and path.stat().st_mode & 0o111
    assert 'TRTEXEC="${TRTEXEC:-/usr/src/tensorrt/bin/trtexec}"' in text
    assert text.count('"$TRTEXEC" --onnx=') == 2 and "--memPoolSize=workspace:2048M" in text
    assert "python -m engines register" in text and "vae_decoder.fp16.plan unet.fp16.plan" in text
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    rtx = trtexec.script(bundle, "fp32", target_name="rtx", components=["unet"], workspace_mb=100)
    assert 'TRTEXEC="${TRTEXEC:-trtexec}"' in rtx and "workspace:100M" in rtx and "vae_decoder" not in rtx
    with pytest.raises(ValueError, match="unknown target 'tx2'"):
        trtexec.script(bundle, "fp16", target_name="tx2")


def test_precision_rules():
    assert precision.keep_fp32_applies("vae_decoder", "fp16", "vae")
    assert not precision.keep_fp32_applies("unet", "fp16", "vae")
    assert precision.keep_fp32_applies("unet", "int8", "all")
    assert not precision.keep_fp32_applies("vae_decoder", "fp32", "all")
    assert precision.strongly_typed("10.3.0", "float16") and not precision.strongly_typed("10.3.0", "float32")
    assert not precision.strongly_typed("8.6.1", "float16")
    with pytest.raises(ValueError, match="cannot express"):
        precision.layer_precisions_arg(["a,b"])


# --- register ----------------------------------------------------------------------------------------------------

def test_register_records_engine_and_rehashes(tmp_path):
    root = _bundle(tmp_path)
    plan = tmp_path / "vae_decoder.fp16.plan"
    plan.write_bytes(b"serialized engine")
    register(root, [plan], ORIN, built_with="trtexec")
    bundle = Bundle(root, verify_hashes=True)
    (record,) = bundle.component("vae_decoder").engines
    assert record["file"] == "vae_decoder.fp16.plan" and bundle.manifest.files["vae_decoder.fp16.plan"]["size"] == 17
    assert record["sha256"] == bundle.manifest.files["vae_decoder.fp16.plan"]["sha256"]
    assert (record["tensorrt"], record["gpu"], record["compute_capability"]) == ("10.3.0", "Orin", "8.7")
    assert record["profile"]["x"]["max"] == [4, 4, 8] and record["built_with"] == "trtexec"
    plan.write_bytes(b"rebuilt engine")  # registering again replaces the record
    register(root, [plan], ORIN)
    bundle = Bundle(root, verify_hashes=True)
    assert len(bundle.component("vae_decoder").engines) == 1 and bundle.component("unet").engines == ()
    assert bundle.component("vae_decoder").engines[0]["size"] == 14
    assert not list(root.glob(".manifest.json.partial-*"))


def test_register_refuses_bad_names(tmp_path):
    root = _bundle(tmp_path)
    plan = tmp_path / "decoder.fp16.plan"
    plan.write_bytes(b"x")
    with pytest.raises(BundleError, match="component one of unet, vae_decoder"):
        register(root, [plan], ORIN)
    assert engines_main(["register", str(root), str(plan), "--tensorrt-version", "10.3.0", "--gpu", "Orin",
                         "--compute-capability", "8.7"]) == 2


# --- lint ----------------------------------------------------------------------------------------------------------

def _messages(model):
    return [str(f) for f in lint.lint_model(model, "g.onnx")]


def test_lint_table_states_its_version():
    table = lint.table()
    assert table["tensorrt"].startswith("10.") and table["opset"]["min"] <= 17 <= table["opset"]["max"]
    for op in ("Conv", "InstanceNormalization", "LayerNormalization", "Softmax", "MatMul", "Gather", "Range",
               "Erf", "Resize", "ReduceMean", "Einsum", "Where", "Expand"):
        assert table["operators"][op].get("supported", True), op


def test_lint_passes_clean_graphs(tmp_path):
    assert _messages(_softmax_model()) == []
    # shape arithmetic from Shape is fine: Reshape to (batch, 32)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
             helper.make_node("Concat", ["b1", "c32"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [helper.make_tensor("zero", TensorProto.INT64, [], [0]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [0]),
             helper.make_tensor("c32", TensorProto.INT64, [1], [32])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])], inits)
    assert _messages(model) == []
    assert engines_main(["lint", str(_bundle(tmp_path))]) == 0


def test_lint_flags_unsupported_op_dtype_and_attributes():
    det = _model([helper.make_node("Det", ["x"], ["y"], name="det")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    assert _messages(det) == ["g.onnx: Det node 'det': TensorRT 10.15's ONNX parser does not support Det; "
                              "replace it in the export"]
    double = _model([helper.make_node("Relu", ["x"], ["y"])],
                    [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2])],
                    [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    found = _messages(double)
    assert any("data type DOUBLE is not supported" in m for m in found)
    assert any("input type DOUBLE is not supported" in m for m in found)
    string = _model([helper.make_node("Identity", ["s"], ["t"])],
                    [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
                    [helper.make_tensor_value_info("t", TensorProto.STRING, [2])])
    assert any("data type STRING is not supported" in m for m in _messages(string))
    cast = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE, name="c")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                  [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    assert any("casts to DOUBLE" in m for m in _messages(cast))
    cubic = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", name="up")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
                   [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])])
    assert _messages(cubic) == ["g.onnx: Resize node 'up': attribute mode='cubic' is not supported "
                                "(expected one of ['nearest', 'linear'])"]
    custom = _model([helper.make_node("FusedGelu", ["x"], ["y"], domain="com.microsoft")],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert any("needs a TensorRT plugin" in m for m in _messages(custom))


def test_lint_flags_data_dependent_shapes_and_computed_constants(tmp_path):
    nonzero = _model([helper.make_node("NonZero", ["x"], ["i"], name="nz")],
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                     [helper.make_tensor_value_info("i", TensorProto.INT64, [1, "n"])])
    assert any("nz': data-dependent output shape" in m for m in _messages(nonzero))
    # the Reshape target comes from the *values* of input "n"
    reshape = _model([helper.make_node("Reshape", ["x", "n"], ["y"], name="r")],
                     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8]),
                      helper.make_tensor_value_info("n", TensorProto.INT64, [2])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    assert any("r': input 1 ('n') decides an output shape but depends on the values of graph input(s) n" in m
               for m in _messages(reshape))
    axes = _model([helper.make_node("Shape", ["x"], ["s"]),
                   helper.make_node("Slice", ["s", "start", "end"], ["a"]),
                   helper.make_node("Unsqueeze", ["x", "a"], ["y"], name="u")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                  [helper.make_tensor("start", TensorProto.INT64, [1], [0]),
                   helper.make_tensor("end", TensorProto.INT64, [1], [1])])
    assert any("u': input 1 ('axes') must be a build-time constant" in m for m in _messages(axes))
    root = _bundle(tmp_path, {"unet": nonzero})
    assert engines_main(["lint", str(root)]) == 1


# --- the build recipe on Polygraphy's real loader objects (nothing is built without a GPU) ---------------------------

class _Layer:
    def __init__(self, name, kind, dtype="float16"):
        self.name, self.type, self.precision, self.num_outputs = name, kind, None, 1
        self._output = types.SimpleNamespace(dtype=dtype)
        self.output_types = {}

    def get_output(self, index):
        return self._output

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


def _fake_trt(version="10.3.0"):
    """The few ``tensorrt`` names the recipe reads: version, workspace pool, layer kinds and float types."""
    return types.SimpleNamespace(__version__=version, MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"),
                                 LayerType=types.SimpleNamespace(NORMALIZATION="norm", SOFTMAX="softmax",
                                                                 REDUCE="reduce"),
                                 float32="float32", float16="float16")


def test_engine_recipe_profiles_flags_and_timing_cache(tmp_path):
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath, PostprocessNetwork

    from engines.build import engine_recipe

    bundle = Bundle(_bundle(tmp_path))
    cache = tmp_path / "timing.cache"
    unet = engine_recipe(_fake_trt(), bundle, "unet", "fp16", workspace_mb=256, timing_cache=cache, keep_fp32="vae")
    assert isinstance(unet.config, CreateConfig) and isinstance(unet.network, NetworkFromOnnxPath)
    assert unet.config.fp16 and not unet.config.int8 and not unet.strongly_typed
    assert not unet.network.strongly_typed and unet.network.path == str(bundle.component_path("unet"))
    (profile,) = unet.config.profiles
    assert (tuple(profile["x"].min), tuple(profile["x"].opt), tuple(profile["x"].max)) == ((1, 4, 8), (2, 4, 8),
                                                                                          (4, 4, 8))
    assert unet.config.memory_pool_limits == {"WORKSPACE": 256 << 20}
    assert unet.config.precision_constraints is None and unet.config.timing_cache_path is None
    cache.write_bytes(b"cache")
    vae = engine_recipe(_fake_trt(), bundle, "vae_decoder", "fp16", workspace_mb=256, timing_cache=cache)
    assert isinstance(vae.network, PostprocessNetwork) and vae.config.precision_constraints == "obey"
    assert vae.config.timing_cache_path == str(cache)
    fp32 = engine_recipe(_fake_trt(), bundle, "vae_decoder", "fp32", workspace_mb=256, timing_cache=cache)
    assert not fp32.config.fp16 and isinstance(fp32.network, NetworkFromOnnxPath)


def test_engine_recipe_pins_the_fp32_rule_layers():
    from engines.build import _pin_fp32

    trt = _fake_trt()
    layers = [_Layer("/attn/Softmax", "softmax"), _Layer("/attn/Add", "elementwise"), _Layer("/norm/Mean", "other"),
              _Layer("/conv", "conv", dtype="int32")]
    network = types.SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)
    assert _pin_fp32(trt, network, ["/norm/Mean"]) == ["/attn/Softmax", "/norm/Mean"]
    assert layers[0].precision == "float32" and layers[0].output_types == {0: "float32"}
    assert layers[1].precision is None and layers[3].precision is None


def test_fp16_graph_builds_strongly_typed_on_tensorrt_10(tmp_path):
    from engines.build import engine_recipe

    half = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], name="/attn/Softmax", axis=-1)], "g",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 4, 8])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 4, 8])])
    model = helper.make_model(half, opset_imports=[helper.make_opsetid("", 17)])
    bundle = Bundle(_bundle(tmp_path, {"vae_decoder": model}))
    recipe = engine_recipe(_fake_trt("10.3.0"), bundle, "vae_decoder", "fp16", workspace_mb=64,
                           timing_cache=tmp_path / "c")
    assert recipe.strongly_typed and recipe.network.strongly_typed and not recipe.config.fp16
    assert recipe.config.precision_constraints is None  # the graph's own types rule
    older = engine_recipe(_fake_trt("8.6.1"), bundle, "vae_decoder", "fp16", workspace_mb=64,
                          timing_cache=tmp_path / "c")
    assert not older.strongly_typed and older.config.fp16


# --- the TensorRT backend's decisions -------------------------------------------------------------------------------

def _component_with(*engines):
    return Component("unet", "unet.onnx", (TensorSpec("x", "float32", ("batch", 4, 8)),), (), PROFILE,
                     engines=tuple(engines))


def test_select_engine_matches_version_and_gpu():
    fp16 = {"file": "unet.fp16.plan", "precision": "fp16", "tensorrt": "10.3.0.30", "compute_capability": "8.7"}
    fp32 = {**fp16, "file": "unet.fp32.plan", "precision": "fp32"}
    assert select_engine(_component_with(fp32, fp16), ORIN) is fp16
    assert select_engine(_component_with(fp32, fp16), ORIN, "fp32") is fp32
    with pytest.raises(BundleError, match=r"no engine matches this machine \(TensorRT 10.3.0, Orin, compute "
                                          r"capability 8.7\).*TensorRT 10.0.1.*python -m engines build BUNDLE "
                                          r"--components unet --precision fp16"):
        select_engine(_component_with({**fp16, "tensorrt": "10.0.1"}), ORIN)
    with pytest.raises(BundleError, match=r"compute capability 8.9 \(RTX 4090\).*python -m engines trtexec"):
        select_engine(_component_with({**fp16, "compute_capability": "8.9", "gpu": "RTX 4090"}), ORIN)
    with pytest.raises(BundleError, match="no TensorRT engine of precision int8.*engines: fp16"):
        select_engine(_component_with(fp16), ORIN, "int8")


class _FakeRunner:
    """Polygraphy's ``TrtRunner`` as the session uses it, on an engine that computes y = 2 x (host memory)."""

    opened: list["_FakeRunner"] = []

    def __init__(self, engine, name=None):
        self.engine, self.name, self.active, self.calls = engine, name, False, 0
        _FakeRunner.opened.append(self)

    def activate(self):
        self.active = True

    def deactivate(self):
        self.active = False

    def infer(self, feed_dict, check_inputs=True):
        assert self.active
        self.calls += 1
        self._host = np.multiply(feed_dict["x"], 2, dtype=np.float32)  # reused host buffer, like TrtRunner's
        return {"y": self._host}


def _fake_polygraphy(monkeypatch, version="10.3.0"):
    """TensorRT present (``version``) with Polygraphy's runner faked: no GPU here."""
    import polygraphy.backend.trt as polygraphy_trt

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    monkeypatch.setattr(tensorrt_backend, "_device_facts", lambda: ("Orin", "8.7"))
    monkeypatch.setattr(polygraphy_trt, "EngineFromBytes", lambda data: (lambda: ("engine", data)))
    monkeypatch.setattr(polygraphy_trt, "TrtRunner", _FakeRunner)
    _FakeRunner.opened.clear()


def _bundle_with_engine(tmp_path, target=ORIN):
    root = _bundle(tmp_path)
    plan = root / "unet.fp16.plan"
    plan.write_bytes(b"engine")
    register(root, [plan], target)
    return Bundle(root)


def _fake_cuda_python(monkeypatch, *, count_error=0, count=1, props_error=0, name=b"NVIDIA H100 80GB HBM3\0\0"):
    """cuda-python's runtime module as ``cuda.bindings.runtime``: (error, value) pairs, errors as an enum."""
    import enum

    class Error(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInsufficientDriver = 35

    props = types.SimpleNamespace(name=name, major=9, minor=0)
    runtime = types.SimpleNamespace(cudaError_t=Error,
                                    cudaGetDeviceCount=lambda: (Error(count_error), count),
                                    cudaGetDeviceProperties=lambda device: (Error(props_error), props))
    package = types.ModuleType("cuda")
    package.bindings = types.SimpleNamespace(runtime=runtime)
    monkeypatch.setitem(sys.modules, "cuda", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings", package.bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)


def test_gpu_name_and_compute_capability_come_from_cuda_python(monkeypatch):
    _fake_cuda_python(monkeypatch)
    assert tensorrt_backend._device_facts() == ("NVIDIA H100 80GB HBM3", "9.0")
    _fake_cuda_python(monkeypatch, count_error=35, count=None)  # no driver: what cuda-bindings says on a CPU box
    assert tensorrt_backend._device_facts() is None
    _fake_cuda_python(monkeypatch, count=0)
    assert tensorrt_backend._device_facts() is None
    _fake_cuda_python(monkeypatch, props_error=35)
    assert tensorrt_backend._device_facts() is None
    monkeypatch.setitem(sys.modules, "cuda", None)  # cuda-python not installed
    assert tensorrt_backend._device_facts() is None


def test_tensorrt_session_runs_and_refuses_shapes_outside_profile(tmp_path, monkeypatch):
    _fake_polygraphy(monkeypatch)
    with TensorRTSession(_bundle_with_engine(tmp_path), "unet") as session:
        (runner,) = _FakeRunner.opened
        assert runner.active and runner.engine == ("engine", b"engine")
        x = np.arange(2 * 4 * 8, dtype=np.float32).reshape(2, 4, 8)
        first = session.run({"x": x})["y"]
        second = session.run({"x": x + 1})["y"]
        np.testing.assert_array_equal(first, 2 * x)  # not overwritten by the runner's next call
        np.testing.assert_array_equal(second, 2 * x + 2)
        with pytest.raises(BundleError, match=r"input 'x' batch is 5, but this bundle supports 1..4"):
            session.run({"x": np.zeros((5, 4, 8), np.float32)})
        assert runner.calls == 2  # the profile check comes before the engine
    assert not runner.active
    with pytest.raises(BundleError, match="session is closed"):
        session.run({"x": x})


def test_tensorrt_session_refuses_engine_from_other_tensorrt(tmp_path, monkeypatch):
    _fake_polygraphy(monkeypatch, version="10.7.0")
    with pytest.raises(BundleError, match=r"TensorRT 10.7.0.*built with TensorRT 10.3.0.*python -m engines build"):
        TensorRTSession(_bundle_with_engine(tmp_path), "unet")


def test_tensorrt_session_without_gpu_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorrt_backend, "local_target", lambda: None)
    with pytest.raises(BundleError, match=r"needs the tensorrt and polygraphy packages and an NVIDIA GPU"):
        TensorRTSession(_bundle_with_engine(tmp_path), "unet")


def test_auto_backend(tmp_path, monkeypatch):
    from runtime.backends.ov import OpenVINOSession

    bundle = _bundle_with_engine(tmp_path)
    # no tensorrt here (or no GPU) and no OpenVINO: ONNX Runtime, TensorRT-only options dropped
    monkeypatch.setattr(tensorrt_backend, "local_target", lambda: None)
    monkeypatch.setattr(OpenVINOSession, "usable", classmethod(lambda cls, bundle, name, options: False))
    session = open_session(bundle, "unet", backend="auto", precision="fp16", threads=1)
    assert isinstance(session, OrtSession)
    x = np.ones((1, 4, 8), np.float32)
    np.testing.assert_allclose(session.run({"x": x})["y"], 1 + np.full((1, 4, 8), 1 / 8), rtol=1e-6)
    # an engine for another GPU: still ONNX Runtime
    monkeypatch.setattr(tensorrt_backend, "local_target", lambda: LocalTarget("10.3.0", "RTX", "8.9"))
    assert isinstance(open_session(bundle, "unet", backend="auto"), OrtSession)
    # the matching GPU: TensorRT
    _fake_polygraphy(monkeypatch)
    monkeypatch.setattr(tensorrt_backend, "local_target", lambda: ORIN)
    assert isinstance(open_session(bundle, "unet", backend="auto", threads=1), TensorRTSession)
    with pytest.raises(BundleError, match="expected one of onnxruntime, tensorrt, triton, triton-bls, openvino, auto"):
        open_session(bundle, "unet", backend="trt")


def test_auto_backend_prefers_openvino_on_a_cpu_where_it_is_installed(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from runtime.backends.ov import OpenVINOSession

    bundle = _bundle_with_engine(tmp_path)
    monkeypatch.setattr(tensorrt_backend, "local_target", lambda: None)
    with open_session(bundle, "unet", backend="auto", threads=1) as session:  # ONNX Runtime's option dropped
        assert isinstance(session, OpenVINOSession) and session.precision == "fp32"
    # a precision OpenVINO lacks, or ONNX Runtime providers, keep ONNX Runtime
    assert isinstance(open_session(bundle, "unet", backend="auto", providers=["CPUExecutionProvider"]), OrtSession)


def test_runtime_never_imports_tensorrt_at_import_time():
    code = "import sys, runtime.backends.trt, runtime.backends, engines.__main__; print('tensorrt' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# --- on a GPU with TensorRT ----------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_built_engine_matches_onnxruntime(tmp_path):
    from engines.build import build

    root = _bundle(tmp_path)
    records = build(root, "fp32", components=["unet"], workspace_mb=256)
    assert records[0]["file"] == "unet.fp32.plan" and json.loads((root / "manifest.json").read_text())
    bundle = Bundle(root, verify_hashes=True)
    x = np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)
    trt_out = open_session(bundle, "unet", backend="tensorrt").run({"x": x})["y"]
    ort_out = open_session(bundle, "unet").run({"x": x})["y"]
    np.testing.assert_allclose(trt_out, ort_out, atol=1e-5)
    assert isinstance(open_session(bundle, "unet", backend="auto"), TensorRTSession)
