"""``python -m export verify-reference CASE_DIR...``: prove our modules equal the official ones.

Each golden case (``case.json``, ``weights.safetensors``, ``io.npz``; see
``shared/reference/README.md``) is checked on every path that applies: ``torch``
(our module loaded through the released-checkpoint loader), ``onnx`` (the same
module exported and run under ONNX Runtime), or ``runtime`` (numpy code of the
runtime, for tokenizers, schedules and preprocessing). One row per case and
path; a component nobody implements is a failing row, never a skip.
"""
from __future__ import annotations

import json
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from export.checkpoint import load_checkpoint
from export.graphs import GraphSpec, compare_outputs
from export.onnx_io import export_onnx, run_onnx


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


def verify_graphs(case: Case, root_module, specs: Sequence[GraphSpec]) -> list[Row]:
    """Load the case's weights into ``root_module``; run ``specs`` in torch and under ONNX Runtime."""
    load_checkpoint(root_module, case.weights, what=f"{case.component} ({case.name})")
    torch_out: dict[str, np.ndarray] = {}
    onnx_out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        for spec in specs:
            feeds = {n: case.io[n] for n in spec.inputs}
            torch_out.update(spec.run_torch(feeds))
            path = Path(tmp) / f"{spec.name}.onnx"
            export_onnx(spec.module, [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.inputs], path,
                        input_names=spec.inputs, output_names=spec.outputs, dynamic_axes=spec.dynamic_axes)
            onnx_out.update(run_onnx(path, feeds))
    return [score(case, "torch", torch_out), score(case, "onnx", onnx_out)]


Handler = Callable[[Case], list[Row]]


def handlers() -> dict[str, Handler]:
    """Every component the project implements, by the ``component`` name of its golden cases."""
    from export.ait import verify_cases as ait
    from export.imagebind import verify_cases as imagebind
    from export.videocrafter1 import verify_cases as videocrafter1

    return {**videocrafter1.HANDLERS, **ait.HANDLERS, **imagebind.HANDLERS}


def verify_case(case_dir: str | Path, table: Mapping[str, Handler]) -> list[Row]:
    try:
        case = Case.load(case_dir)
    except (OSError, KeyError, ValueError) as exc:
        return [Row(Path(case_dir).name, "?", "-", float("nan"), float("nan"), False, f"unreadable case: {exc}")]
    handler = table.get(case.component)
    if handler is None:
        return [Row(case.name, case.component, "-", float("nan"), float("nan"), False,
                    f"component '{case.component}' is not implemented by this project")]
    try:
        return handler(case)
    except Exception as exc:  # a crash in one case is a failing row, the others still run
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
        return [Row(case.name, case.component, "-", float("nan"), float("nan"), False,
                    f"{type(exc).__name__}: {exc} (at {where})")]


def format_rows(rows: Sequence[Row]) -> str:
    header = f"{'case':<26} {'component':<28} {'path':<8} {'max abs err':>12} {'cosine':>12}  result"
    lines = [header, "-" * len(header)]
    for r in rows:
        result = "PASS" if r.passed else "FAIL"
        lines.append(f"{r.case:<26} {r.component:<28} {r.path:<8} {r.max_abs:>12.3e} {r.cosine:>12.8f}  {result}"
                     + (f"  {r.detail}" if r.detail else ""))
    passed = sum(r.passed for r in rows)
    lines.append(f"{passed} of {len(rows)} rows pass")
    return "\n".join(lines)


def expand_case_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Case folders, where a given folder may also be a parent of case folders."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "case.json").is_file() or not path.is_dir():
            found.append(path)
        else:
            found.extend(sorted(p.parent for p in path.glob("*/case.json")))
    return found


def main(case_dirs: Sequence[str]) -> int:
    torch.manual_seed(0)
    table = handlers()
    rows: list[Row] = []
    for case_dir in expand_case_dirs(case_dirs):
        print(f"verifying {case_dir} ...", file=sys.stderr, flush=True)
        rows.extend(verify_case(case_dir, table))
    print(format_rows(rows))
    return 0 if rows and all(r.passed for r in rows) else 1
