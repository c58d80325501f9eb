"""``python -m export verify-reference``: every golden case passes, anything else fails loudly."""
from __future__ import annotations

import json
import shutil

import numpy as np

from export.__main__ import main

T2V_CASES = ["unet3d_t2v", "vae", "text_encoder", "tokenizer_openclip", "ddim_schedule_t2v", "ddim_sample_t2v"]
I2V_CASES = ["unet3d_i2v", "image_encoder", "image_proj", "ddim_schedule_i2v", "ddim_sample_i2v"]


def _rows(output: str) -> dict[tuple[str, str], str]:
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] in ("PASS", "FAIL"):
            rows[(parts[0], parts[2])] = parts[5]
    return rows


def test_videocrafter1_golden_cases_pass_torch_and_onnx(reference, capsys):
    golden = reference / "videocrafter1" / "golden"
    assert main(["verify-reference", *[str(golden / c) for c in T2V_CASES + I2V_CASES]]) == 0
    rows = _rows(capsys.readouterr().out)
    for case in T2V_CASES + I2V_CASES:
        paths = {p for (c, p) in rows if c == case}
        expected = {"runtime"} if case.startswith(("tokenizer", "ddim_schedule")) else {"torch", "onnx"}
        assert paths == expected, (case, paths)
    assert set(rows.values()) == {"PASS"}


def test_perturbed_output_fails(reference, tmp_path, capsys):
    case = tmp_path / "vae_perturbed"
    shutil.copytree(reference / "videocrafter1" / "golden" / "vae", case)
    case.chmod(0o755)
    with np.load(case / "io.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["decoded"] = arrays["decoded"] + 1e-2
    (case / "io.npz").chmod(0o644)
    np.savez(case / "io.npz", **arrays)
    assert main(["verify-reference", str(case)]) == 1
    output = capsys.readouterr().out
    assert "outside atol" in output and "decoded" in output and "0 of 2 rows pass" in output


def test_unknown_component_is_a_failing_row(tmp_path, capsys):
    case = tmp_path / "mystery"
    case.mkdir()
    (case / "case.json").write_text(json.dumps({"component": "mystery.net", "config": {}, "inputs": [],
                                               "outputs": ["y"], "atol": 0, "rtol": 0}))
    np.savez(case / "io.npz", y=np.zeros(1))
    assert main(["verify-reference", str(case)]) == 1
    assert "component 'mystery.net' is not implemented" in capsys.readouterr().out


def test_unreadable_case_is_a_failing_row(tmp_path, capsys):
    assert main(["verify-reference", str(tmp_path / "nothing")]) == 1
    assert "unreadable case" in capsys.readouterr().out
