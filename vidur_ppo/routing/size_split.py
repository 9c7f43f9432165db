"""The size-split convention SITA-E and the size-aware features share: how many replicas form
the long pool (the first ones), so a policy and its teacher agree on every cluster size."""

from __future__ import annotations


def long_pool_size(num_replicas: int, fraction: float) -> int:
    """Replicas in a size-based long pool: `fraction` of them, at least one, never all (if R > 1)."""
    return int(min(max(num_replicas - 1, 1), max(1, round(fraction * num_replicas))))
