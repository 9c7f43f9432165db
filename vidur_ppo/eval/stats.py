"""Confidence intervals for paired, seeded comparisons (every scheduler runs the same traces)."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import stats as _st


def mean_ci(x: Sequence[float], level: float = 0.95) -> Tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one sample)."""
    a = np.asarray(x, dtype=float)
    if a.size < 2:
        return float(a.mean()) if a.size else float("nan"), float("nan") if a.size == 0 else 0.0
    half = _st.t.ppf(0.5 + level / 2, a.size - 1) * a.std(ddof=1) / np.sqrt(a.size)
    return float(a.mean()), float(half)


def paired_diff_ci(x: Sequence[float], baseline: Sequence[float], level: float = 0.95, relative: bool = True):
    """Mean and CI half-width of the per-seed difference x - baseline (relative: as a fraction of
    the baseline), pairing run i of x with run i of the baseline (same trace)."""
    a, b = np.asarray(x, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same shape, got {a.shape} and {b.shape}")
    d = (a - b) / b if relative else a - b
    return mean_ci(d, level)
