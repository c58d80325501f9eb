"""runtime.arrays: the one definition of agreement figures and PSNR, checked on hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.arrays import agreement, max_relative_error, psnr, softmax


def test_agreement_on_hand_computed_values():
    found = agreement(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    assert found.cosine == pytest.approx(1 / math.sqrt(2))
    assert (found.max_abs, found.mean_abs) == (1.0, 0.5)
    assert found.snr_db == pytest.approx(0.0)  # signal energy 1, noise energy 1
    same = agreement(np.arange(4.0), np.arange(4.0))
    assert (same.max_abs, same.cosine, same.snr_db) == (0.0, 1.0, math.inf)
    assert agreement(np.zeros(3), np.zeros(3)).cosine == 1.0
    off = agreement(np.zeros(3), np.ones(3))
    assert math.isnan(off.cosine) and off.snr_db == -math.inf
    with pytest.raises(ValueError, match=r"expected \(2,\), found \(3,\)"):
        agreement(np.zeros(2), np.zeros(3))


def test_psnr_and_softmax():
    a = np.full((2, 4, 4, 3), 100, np.uint8)
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1
    assert psnr(a, a) == math.inf
    p = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0]])


def test_max_relative_error_on_hand_computed_values():
    assert max_relative_error(np.array([1.0, -4.0]), np.array([1.5, -4.0])) == 0.125  # 0.5 / 4
    assert max_relative_error(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32)) == 0.0
