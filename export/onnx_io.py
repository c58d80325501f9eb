"""Export one torch module to ONNX and check it under ONNX Runtime.

Every graph of every bundle goes through :func:`export_onnx`; every check of a
graph against its torch module goes through :func:`compare_with_torch`.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from runtime.backends.onnxrt import inference_session

OPSET = 17


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
    data file, streamed from the exporter's files, when the weights pass protobuf's 2 GB limit.
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
        model = onnx.load(str(traced), load_external_data=False)
        if any(_is_external(t) for t in model.graph.initializer):
            _gather_external_data(model, Path(scratch), path)
            onnx.save_model(model, str(path))
        else:  # one self-contained file already: move it rather than load and re-serialise the weights
            del model
            os.replace(traced, path)
    onnx.checker.check_model(str(path))
    return path


def _is_external(tensor) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _gather_external_data(model, scratch: Path, path: Path, chunk: int = 64 * 1024**2) -> None:
    """Copy every external initializer of ``model`` (files under ``scratch``) into ``<path>.data``, one chunk
    at a time, and point the initializers there: no tensor is ever held in memory whole."""
    from onnx.external_data_helper import ExternalDataInfo

    target = path.with_name(path.name + ".data")
    offset = 0
    with open(target, "wb") as out:
        for tensor in model.graph.initializer:
            if not _is_external(tensor):
                continue
            info = ExternalDataInfo(tensor)
            with open(scratch / info.location, "rb") as source:
                source.seek(info.offset or 0)
                remaining = info.length if info.length is not None else (scratch / info.location).stat().st_size
                length = 0
                while remaining > 0:
                    block = source.read(min(chunk, remaining))
                    if not block:
                        break
                    out.write(block)
                    remaining -= len(block)
                    length += len(block)
            del tensor.external_data[:]
            for key, value in (("location", target.name), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += length


def run_onnx(path: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the graph at ``path`` on CPU and return its outputs by name."""
    session = inference_session(path)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))
