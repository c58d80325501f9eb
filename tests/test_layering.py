"""The layering of DESIGN.md: import-linter's contracts (pyproject.toml) hold, and they catch a violation."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

PACKAGES = ("runtime", "export", "engines", "calibration", "benchmarks")


def _lint(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(root / "pyproject.toml")], cwd=root, capture_output=True,
                          text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_contracts_hold():
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.gz"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)


def test_a_lazy_torch_import_in_the_runtime_breaks_the_contract(tmp_path):
    _copy(tmp_path)
    (tmp_path / "runtime" / "arrays.py").write_text(
        "def to_tensor(x):\n    import torch\n\n    return torch.as_tensor(x)\n", encoding="utf-8")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "runtime ships to devices" in result.stdout and "BROKEN" in result.stdout
    assert "runtime.arrays -> torch" in result.stdout


def test_an_import_cycle_between_modules_of_a_package_breaks_the_contract(tmp_path):
    _copy(tmp_path)
    measure = tmp_path / "benchmarks" / "measure.py"
    measure.write_text(measure.read_text(encoding="utf-8") + "\n\ndef family():\n    from benchmarks.ait import FAMILY\n"
                       "\n    return FAMILY\n", encoding="utf-8")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "no import cycle among the modules of a package BROKEN" in result.stdout
    assert "No cycles are allowed in benchmarks" in result.stdout
