"""What a replica reports to the router (Ray Serve's `record_routing_stats`), and the router's way back
to the simulator's replica-state matrix.

A replica reports its row of `sim/driver.replica_state` as a dict keyed by `ReplicaColumn` names, plus
`rank` (its row in the matrix: the env's replica index, which size-based features such as `long_pool`
read) and `reported_at` (wall-clock seconds). `speed` and `kv_capacity` may be absolute (saturation
throughput, KV blocks) or already relative: the router divides both by the cluster's mean, as
`replica_state` does, so a replica needs to know nothing of the others.

Stats arrive every `request_routing_stats_period_s`, so between two reports the router adds what it
routed to a replica since that replica's report as waiting requests there, exactly as `replica_state`
counts the requests routed at the same instant (`decisions`), and ages the oldest waiting request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from vidur_ppo.sim.driver import REPLICA_STATE_COLUMNS, ReplicaColumn

RANK = "rank"
REPORTED_AT = "reported_at"
#: every key a replica's routing stats must hold
ROUTING_STATS_KEYS = (*REPLICA_STATE_COLUMNS, RANK, REPORTED_AT)
#: columns reported in the replica's own units and made relative to the cluster's mean by the router
RELATIVE_COLUMNS = (ReplicaColumn.speed, ReplicaColumn.kv_capacity)


def routing_stats(row: np.ndarray, rank: int, reported_at: float) -> Dict[str, float]:
    """The routing-stats dict of one replica from its `replica_state` row (JSON-friendly floats)."""
    out: Dict[str, float] = {name: float(row[c]) for c, name in zip(ReplicaColumn, REPLICA_STATE_COLUMNS)}
    out[RANK] = int(rank)
    out[REPORTED_AT] = float(reported_at)
    return out


def is_complete(stats: Optional[Mapping[str, Any]]) -> bool:
    """Whether a replica's stats hold every key of the schema (a replica that has not reported yet: no)."""
    return bool(stats) and all(k in stats for k in ROUTING_STATS_KEYS)


@dataclass(frozen=True)
class RoutedRequest:
    """A request the router sent to a replica that the replica's last report may not include yet."""

    routed_at: float
    prompt_tokens: float
    predicted_output_tokens: float


def state_matrix(stats: Sequence[Mapping[str, Any]], now: Optional[float] = None,
                 routed_since: Optional[Sequence[Sequence[RoutedRequest]]] = None) -> np.ndarray:
    """[replicas x REPLICA_STATE_COLUMNS] from the replicas' reports, in the order given (sort by `rank`
    first): what `SimDriver.replica_state` returns for the same replicas.

    `now` ages `oldest_wait` by the time since each report; `routed_since[i]` (the requests routed to
    replica i after its report) count as waiting there, as the driver counts same-instant decisions."""
    out = np.array([[float(s[name]) for name in REPLICA_STATE_COLUMNS] for s in stats], dtype=np.float64)
    for c in RELATIVE_COLUMNS:
        out[:, c] /= out[:, c].mean()
    if now is not None:
        age = np.maximum(now - np.array([float(s[REPORTED_AT]) for s in stats]), 0.0)
        waiting = out[:, ReplicaColumn.waiting] > 0
        out[waiting, ReplicaColumn.oldest_wait] += age[waiting]
    for i, routed in enumerate(routed_since or ()):
        for r in routed:
            out[i, ReplicaColumn.waiting] += 1
            out[i, ReplicaColumn.prefill_tokens_left] += r.prompt_tokens
            out[i, ReplicaColumn.decode_tokens_left] += r.predicted_output_tokens
    return out


def not_yet_reported(routed: List[RoutedRequest], reported_at: float) -> List[RoutedRequest]:
    """The requests of `routed` sent after a report taken at `reported_at` (the rest it already counts)."""
    return [r for r in routed if r.routed_at > reported_at]


def env_reports(env, now: float) -> List[Dict[str, float]]:
    """What each replica of a simulator env would report at `now`: its `replica_state` row, its KV capacity
    in blocks (as a Serve replica knows it), its rank. For checking the Serve side against the env
    (tests/test_serve_parity.py) and timing its decisions on realistic states (experiments/serve_demo.py)."""
    state = env.driver.replica_state()
    blocks = [rs._cache_config.num_blocks for rs in env.driver._replica_schedulers]
    rows = []
    for i, row in enumerate(state):
        row = row.copy()
        row[ReplicaColumn.kv_capacity] = blocks[i]
        rows.append(routing_stats(row, rank=i, reported_at=now))
    return rows
