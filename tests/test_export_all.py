"""``python -m export all``: one bundle per tiny preset, each intact and TensorRT-lint clean."""
from __future__ import annotations

import contextlib
import io

import pytest

from engines.lint import lint_bundle
from export.__main__ import main
from runtime.bundle import Bundle


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("all")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["all", "--out", str(out), "--seed", "0"]) == 0
    return out, printed.getvalue()


def test_says_it_uses_random_weights_in_one_line(exported):
    first = exported[1].splitlines()[0]
    assert "No checkpoint given" in first and "seeded random weights" in first


def test_every_bundle_is_complete_and_lint_clean(exported):
    exported = exported[0]
    bundles = sorted(p for p in exported.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert {"videocrafter1-tiny-t2v", "videocrafter1-tiny-i2v"} <= {b.name for b in bundles}
    for path in bundles:
        bundle = Bundle(path, verify_hashes=True)
        assert bundle.manifest.components, path
        findings = lint_bundle(path)
        assert set(findings) >= {c.file for c in bundle.manifest.components.values()}
        assert not {f: [str(x) for x in v] for f, v in findings.items() if v}, path.name
    assert not [p for p in exported.iterdir() if p.name.startswith(".")], "temporary folders left behind"
