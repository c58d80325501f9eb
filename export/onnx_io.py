"""Export one torch module to ONNX and check it under ONNX Runtime.

Every graph of every bundle goes through :func:`export_onnx`; every check of a
graph against its torch module goes through :func:`compare_with_torch`.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from runtime.backends.onnxrt import inference_session

OPSET = 17
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB limit, with headroom


def export_onnx(
    module: torch.nn.Module,
    args: Sequence[torch.Tensor],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> Path:
    """Trace ``module`` on ``args`` and write ``path`` (opset 17; ``<name>.data`` past 2 GB), checker-clean.

    The exporter writes into a scratch folder first (a large model comes out as one
    file per tensor there); the result is saved as one graph file, plus one external
    data file when the weights pass protobuf's 2 GB limit.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as scratch:
        traced = Path(scratch) / path.name
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                tuple(args),
                str(traced),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        model = onnx.load(str(traced), load_external_data=True)
        weights = sum(t.ByteSize() for t in model.graph.initializer)
        if weights > EXTERNAL_DATA_THRESHOLD:
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
        else:
            onnx.save_model(model, str(path))
    onnx.checker.check_model(str(path))
    return path


def run_onnx(path: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the graph at ``path`` on CPU and return its outputs by name."""
    session = inference_session(path)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))
