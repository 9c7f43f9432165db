"""CI computation against a hand example."""

import numpy as np
import pytest

from vidur_ppo.eval.stats import mean_ci, paired_diff_ci


def test_mean_ci_by_hand():
    # mean 2, sample std 1, n 3: half-width = t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(2.484138, rel=1e-6)


def test_paired_relative_difference():
    d, h = paired_diff_ci([9.0, 18.0, 27.0], [10.0, 20.0, 30.0])
    assert d == pytest.approx(-0.1) and h == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        paired_diff_ci([1.0], [1.0, 2.0])


def test_single_sample_has_zero_width():
    assert mean_ci([5.0]) == (5.0, 0.0)
    assert np.isnan(mean_ci([])[0])
