"""``python -m export verify-reference CASE_DIR...``: prove our modules equal the official ones.

Each golden case is checked on every path that applies: ``torch`` (our module
loaded through the released-checkpoint loader), ``onnx`` (the same module exported
and run under ONNX Runtime), or ``runtime`` (numpy code of the runtime, for
tokenizers, schedules and preprocessing). One row per case and path; a component
nobody implements is a failing row, never a skip. Handlers come from every
registered family's ``export/<family>/verify_cases.py`` (``HANDLERS``).
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch

from export.golden import Case, Row
from runtime.families import family_modules

Handler = Callable[[Case], list[Row]]


def handlers() -> dict[str, Handler]:
    """Every component the project implements, by the ``component`` name of its golden cases."""
    table: dict[str, Handler] = {}
    for cases in family_modules("export", "verify_cases").values():
        table.update(cases.HANDLERS)
    return table


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
