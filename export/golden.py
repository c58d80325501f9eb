"""A golden case of ``shared/reference`` and how a result is scored against it.

Each golden case (``case.json``, ``weights.safetensors``, ``io.npz``; see
``shared/reference/README.md``) gives a component's official config, weights,
inputs and outputs. :func:`score` makes one row of ``verify-reference`` from a
result; :func:`verify_graphs` runs a family's graph specs in torch and under ONNX
Runtime. The families' handlers (``export/<family>/verify_cases.py``) build on these.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from export.checkpoint import load_checkpoint, load_into
from export.graphs import GraphSpec, compare_outputs
from export.onnx_io import run_onnx
from runtime.tokenizer import ClipTokenizer


@dataclass(frozen=True)
class Case:
    root: Path
    component: str
    config: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    atol: float
    rtol: float
    seed: int
    io: Mapping[str, np.ndarray]

    @classmethod
    def load(cls, root: str | Path) -> "Case":
        root = Path(root)
        meta = json.loads((root / "case.json").read_text(encoding="utf-8"))
        with np.load(root / "io.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return cls(root=root, component=meta["component"], config=meta["config"], inputs=list(meta["inputs"]),
                   outputs=list(meta["outputs"]), atol=float(meta["atol"]), rtol=float(meta["rtol"]),
                   seed=int(meta.get("seed", 0)), io=arrays)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def weights(self) -> Path:
        return self.root / "weights.safetensors"

    def expected(self, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return {n: self.io[n] for n in (names if names is not None else self.outputs)}


@dataclass(frozen=True)
class Row:
    case: str
    component: str
    path: str
    max_abs: float
    cosine: float
    passed: bool
    detail: str = ""


def score(case: Case, path: str, found: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> Row:
    """Compare ``found`` with the case's outputs (all, or ``names``) within its tolerances."""
    expected = case.expected(names)
    missing = sorted(set(expected) - set(found))
    if missing:
        return Row(case.name, case.component, path, float("nan"), float("nan"), False, f"no output {missing}")
    bad_shapes = [f"{n}: expected {expected[n].shape}, found {np.shape(found[n])}"
                  for n in expected if np.shape(found[n]) != expected[n].shape]
    if bad_shapes:
        return Row(case.name, case.component, path, float("nan"), float("nan"), False, "; ".join(bad_shapes))
    max_abs, cosine = compare_outputs(expected, found)
    failing = [n for n in expected if not np.allclose(np.asarray(found[n], dtype=np.float64),
                                                      expected[n].astype(np.float64), atol=case.atol, rtol=case.rtol)]
    detail = f"outside atol {case.atol:g} / rtol {case.rtol:g}: {', '.join(failing)}" if failing else ""
    return Row(case.name, case.component, path, max_abs, cosine, not failing, detail)


def verify_graphs(case: Case, root_module, specs: Sequence[GraphSpec],
                  state: Mapping[str, Any] | None = None) -> list[Row]:
    """Load the case's weights (or ``state``, tensors derived from them) into ``root_module``; run ``specs`` in
    torch and under ONNX Runtime."""
    what = f"{case.component} ({case.name})"
    if state is None:
        load_checkpoint(root_module, case.weights, what=what)
    else:
        load_into(root_module, state, what=what)
    torch_out: dict[str, np.ndarray] = {}
    onnx_out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        for spec in specs:
            feeds = {n: case.io[n] for n in spec.inputs}
            torch_out.update(spec.run_torch(feeds))
            onnx_out.update(run_onnx(spec.export(feeds, Path(tmp) / f"{spec.name}.onnx"), feeds))
    return [score(case, "torch", torch_out), score(case, "onnx", onnx_out)]


def verify_clip_tokenizer(case: Case) -> list[Row]:
    """The runtime's CLIP BPE tokenizer on the case's strings (VideoCrafter1's OpenCLIP and ImageBind's text)."""
    ids = ClipTokenizer()([str(s) for s in case.io["strings"]], context_length=case.config["context_length"])
    return [score(case, "runtime", {"ids": ids})]
