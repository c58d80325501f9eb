"""Graph writing: external initializers are gathered into one ``.data`` file without loading them."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.onnx_io import _gather_external_data, run_onnx


def test_external_initializers_are_gathered_into_one_data_file(tmp_path):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(3)]
    nodes, previous = [], "x"
    for i in range(3):
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"y{i}"]))
        previous = f"y{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 16])],
                              [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    onnx.save_model(model, str(scratch / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0)  # one file per tensor, as the exporter writes a large model
    loaded = onnx.load(str(scratch / "m.onnx"), load_external_data=False)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    _gather_external_data(loaded, scratch, out, chunk=100)  # chunks smaller than a tensor
    onnx.save_model(loaded, str(out))
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert (out.parent / "m.onnx.data").stat().st_size == sum(w.nbytes for w in weights)
    x = rng.standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(out, {"x": x})["y2"], x @ weights[0] @ weights[1] @ weights[2], rtol=1e-5)
