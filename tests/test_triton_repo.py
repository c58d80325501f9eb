"""``python -m engines triton``: the model repository of a bundle, its configs parsed with Triton's own
``ModelConfig`` protobuf and checked against the manifest; ``Backend`` options; ``Bundle(graphs=False)``."""
from __future__ import annotations

import filecmp
import shutil

import pytest

from engines.__main__ import main as engines_main
from engines.register import register
from engines.triton_repo import PIPELINE_QUEUE_TIMEOUT_MS, QUEUE_TIMEOUT_MS, read_config, write_repository
from runtime.imagebind.constants import ImageBindConstants
from runtime import Backend, Bundle, BundleError, open_session
from runtime.backends.trt import LocalTarget
from runtime.backends.triton import max_batch_size, model_name, split_url
from runtime.serving import served_task
from tritonclient.grpc import model_config_pb2 as pb

DTYPES = {"float32": pb.TYPE_FP32, "int64": pb.TYPE_INT64}


@pytest.mark.parametrize("platform", ["onnxruntime", "python"])
def test_every_component_config_matches_the_manifest(tiny_bundles, tmp_path, platform):
    for bundle_dir in tiny_bundles.values():
        bundle = Bundle(bundle_dir)
        write_repository(bundle, tmp_path, platform=platform, instances=2, max_queue_delay_us=500, queue_depth=3,
                         log=lambda _: None)
        for component in bundle.manifest.components.values():
            folder = tmp_path / model_name(bundle.manifest, component.name)
            config = read_config(folder / "config.pbtxt")
            batch = config.max_batch_size
            skip = 1 if batch else 0
            for specs, tensors in ((component.inputs, config.input), (component.outputs, config.output)):
                assert [t.name for t in tensors] == [s.name for s in specs]
                assert [t.data_type for t in tensors] == [DTYPES[s.dtype] for s in specs]
                assert [list(t.dims) for t in tensors] == [  # the batch axis alone travels as [B, 1]
                    [-1 if isinstance(d, str) else d for d in s.shape[skip:]] or [1] for s in specs]
                assert [t.HasField("reshape") and list(t.reshape.shape) == [] for t in tensors] == [
                    bool(batch) and len(s.shape) == 1 for s in specs]
            assert config.instance_group[0].count == 2
            policy = config.dynamic_batching.default_queue_policy  # every model's queue is bounded
            assert policy.max_queue_size == 3 * 2 * max(1, batch)  # depth x instances x batch
            assert policy.default_timeout_microseconds == QUEUE_TIMEOUT_MS * 1000
            assert policy.timeout_action == pb.ModelQueuePolicy.REJECT
            assert config.dynamic_batching.max_queue_delay_microseconds == (500 if batch else 0)
            served = bundle.root / (component.ort_graph or component.file)  # ONNX Runtime's graph where there is one
            assert filecmp.cmp(folder / "1" / "model.onnx", served, shallow=False)
            assert (folder / "1" / "model.py").is_file() == (platform == "python")
            assert (config.backend, config.platform) == (("python", "") if platform == "python"
                                                         else ("", "onnxruntime_onnx"))


def test_batch_dimension_only_where_every_tensor_leads_with_the_same_axis(tiny_bundles):
    imagebind = Bundle(tiny_bundles["imagebind-tiny"]).manifest.components
    assert max_batch_size(imagebind["text_encoder"]) == 8  # the profile's max batch
    assert max_batch_size(imagebind["audio_encoder"]) == 24
    ait = Bundle(tiny_bundles["ait-tiny-depth"]).manifest.components
    assert max_batch_size(ait["image_encoder"]) == 0  # cross_k leads with the layer axis
    assert max_batch_size(ait["vqvae_soft_decoder"]) == 8
    video = Bundle(tiny_bundles["videocrafter1-tiny-t2v"]).manifest.components
    assert max_batch_size(video["unet"]) == 4  # timesteps [batch] travels as [batch, 1]
    assert max_batch_size(video["vae_decoder"]) == 24  # frames lead every tensor


def test_pipeline_model_config_and_bundle_without_graphs(tiny_bundles, tmp_path):
    bundle = Bundle(tiny_bundles["imagebind-tiny"])
    write_repository(bundle, tmp_path, platform="python", log=lambda _: None)
    folder = tmp_path / "imagebind-tiny-pipeline"
    config = read_config(folder / "config.pbtxt")
    task = served_task(bundle)  # declared beside the family: runtime/imagebind/serving.py
    assert [t.name for t in config.input] == [t.name for t in task.inputs] and all(t.optional for t in config.input)
    modalities = ImageBindConstants.of(bundle).modalities
    assert sorted(t.name for t in config.output) == sorted(f"{m.upper()}_EMBEDDING" for m in modalities)
    assert config.backend == "python" and config.max_batch_size == 0
    policy = config.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (4, PIPELINE_QUEUE_TIMEOUT_MS * 1000)
    shipped = Bundle(folder / "1" / "bundle", graphs=False, verify_hashes=True)
    assert shipped.manifest.to_json() == bundle.manifest.to_json()
    assert not any((folder / "1" / "bundle" / rel).exists() for rel in bundle.graph_files())
    with pytest.raises(BundleError, match="opened without its graphs"):
        shipped.component_path("text_encoder")
    with pytest.raises(BundleError, match="bundle file missing"):
        Bundle(folder / "1" / "bundle")


# the pipeline models' tensors as the one table in engines/triton_models/pipeline_model.py had them: name, type, dims
IMAGE, SEED = ("IMAGE", "TYPE_UINT8", [-1, -1, 3]), ("SEED", "TYPE_INT64", [1])
SERVED = {
    "videocrafter1-tiny-t2v": ([("PROMPT", "TYPE_STRING", [1]), IMAGE, SEED, ("STEPS", "TYPE_INT64", [1])],
                               [("VIDEO", "TYPE_UINT8", [-1, -1, -1, 3])]),
    "ait-tiny-depth": ([IMAGE], [("DEPTH", "TYPE_FP32", [-1, -1])]),
    "ait-tiny-insseg": ([IMAGE, SEED], [("BOXES", "TYPE_FP32", [-1, 4]), ("SCORES", "TYPE_FP32", [-1]),
                                        ("CLASSES", "TYPE_INT64", [-1]), ("MASKS", "TYPE_BOOL", [-1, -1, -1])]),
}


@pytest.mark.parametrize("name", sorted(SERVED))
def test_every_family_declares_its_served_task_beside_itself(tiny_bundles, tmp_path, name):
    write_repository(tiny_bundles[name], tmp_path, platform="python", log=lambda _: None)
    config = read_config(tmp_path / f"{name}-pipeline" / "config.pbtxt")
    inputs, outputs = SERVED[name]
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == inputs
    assert [(t.name, pb.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == outputs
    assert [t.name for t in config.input if not t.optional] == (["PROMPT"] if "video" in name else ["IMAGE"])


def test_tensorrt_platform_takes_the_bundles_plan(tiny_bundles, tmp_path):
    bundle_dir = shutil.copytree(tiny_bundles["ait-tiny-insseg"], tmp_path / "ait-tiny-insseg")
    with pytest.raises(BundleError, match="needs a fp16 engine in the bundle; it has none"):
        write_repository(bundle_dir, tmp_path / "repo", platform="tensorrt", log=lambda _: None)
    assert not (tmp_path / "repo").exists()  # nothing half-written
    plans = []
    for name in Bundle(bundle_dir).manifest.components:
        plans.append(tmp_path / f"{name}.fp16.plan")
        plans[-1].write_bytes(name.encode() * 10)  # stands in for a plan built on the server's GPU
    register(bundle_dir, plans, LocalTarget("10.3.0", "NVIDIA L4", "8.9"))
    assert engines_main(["triton", str(bundle_dir), "--out", str(tmp_path / "repo"), "--platform", "tensorrt"]) == 0
    folder = tmp_path / "repo" / "ait-tiny-insseg-decoder_step"
    assert (folder / "1" / "model.plan").read_bytes() == b"decoder_step" * 10
    config = read_config(folder / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU


def test_bad_arguments_are_refused(tiny_bundles, tmp_path):
    with pytest.raises(BundleError, match="expected one of onnxruntime, tensorrt, python"):
        write_repository(tiny_bundles["imagebind-tiny"], tmp_path, platform="openvino")
    with pytest.raises(BundleError, match="expected --instances >= 1"):
        write_repository(tiny_bundles["imagebind-tiny"], tmp_path, instances=0)
    with pytest.raises(BundleError, match="--queue-depth, --queue-timeout-ms.* >= 0, found 1, 100, -1"):
        write_repository(tiny_bundles["imagebind-tiny"], tmp_path, queue_depth=-1)
    with pytest.raises(BundleError, match="expected http://HOST:PORT or grpc://HOST:PORT"):
        split_url("ftp://host:1")
    assert split_url("localhost:8000") == ("http", "localhost:8000")


def test_backend_carries_its_options(tiny_bundles):
    bundle = Bundle(tiny_bundles["imagebind-tiny"])
    with open_session(bundle, "text_encoder", backend=Backend("onnxruntime", threads=1)) as session:
        assert session.component.name == "text_encoder"
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        open_session(bundle, "text_encoder", backend=Backend("onnxruntime", colour="red"))
