"""One running mean/variance: the batched Welford merge used by the reward normaliser
(ppo/reward_scale.py, numpy floats) and the value normaliser (models/value_norm.py, torch buffers).
The arithmetic follows the operands' types, so each keeps the precision it had."""

from __future__ import annotations

from typing import Any, Tuple


def merge_moments(mean: Any, var: Any, count: Any, batch_mean: Any, batch_var: Any, n: int) -> Tuple[Any, Any, Any]:
    """(mean, var, count) of the union of the history so far and a batch of `n` values with the
    given mean and population variance (Chan et al.'s parallel update)."""
    total = count + n
    delta = batch_mean - mean
    new_mean = mean + delta * n / total
    new_var = (var * count + batch_var * n + delta**2 * count * n / total) / total
    return new_mean, new_var, total
