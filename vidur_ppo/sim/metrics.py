"""Per-request latencies and episode summaries, computed from vidur's request entities.

vidur's own MetricsStore indexes replicas and stages off by one (`metrics/metrics_store.py`)
and keeps TBT only as an approximate sketch, so everything here is derived from the `Request`
objects (arrival, first schedule, prefill completion, completion) plus what the driver observed
(replica of each request, per-token times, per-replica busy time).
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)
LATENCY_METRICS = ("ttft", "tbt", "e2e", "sched_delay")


def per_request(
    requests: Sequence, trace, assignment: Optional[np.ndarray] = None
) -> Dict[str, np.ndarray]:
    """Column arrays, one entry per request (seconds).

    ttft: arrival -> first output token (end of the first complete prefill);
    e2e: arrival -> last token; sched_delay: arrival -> first batch it ran in;
    tbt_mean: mean gap between output tokens of that request. Token counts come from the
    trace, since a preemption restart moves generated tokens into the request's prompt.
    """
    n = len(requests)
    arrived = np.fromiter((r._arrived_at for r in requests), float, n)
    prefill_done = np.fromiter((r._prefill_completed_at for r in requests), float, n)
    completed = np.fromiter((r._completed_at for r in requests), float, n)
    prefill = np.asarray(trace.num_prefill_tokens, dtype=np.int64)
    decode = np.asarray(trace.num_decode_tokens, dtype=np.int64)
    out = {
        "request_id": np.fromiter((r._id for r in requests), np.int64, n),
        "replica": assignment if assignment is not None else np.full(n, -1),
        "arrived_at": arrived,
        "num_prefill_tokens": prefill,
        "num_decode_tokens": decode,
        "total_tokens": prefill + decode,
        "completed": np.fromiter((r._completed for r in requests), bool, n),
        "restarts": np.fromiter((r._num_restarts for r in requests), np.int64, n),
        "ttft": prefill_done - arrived,
        "e2e": completed - arrived,
        "sched_delay": np.fromiter((r._scheduling_delay for r in requests), float, n),
        "completed_at": completed,
    }
    out["tbt_mean"] = np.where(decode > 1, (completed - prefill_done) / np.maximum(decode - 1, 1), 0.0)
    return out


def _stats(x: np.ndarray, prefix: str) -> Dict[str, float]:
    if x.size == 0:
        return {f"{prefix}_{k}": float("nan") for k in ("mean", "p50", "p90", "p99")}
    p = np.percentile(x, PERCENTILES)
    return {
        f"{prefix}_mean": float(x.mean()),
        f"{prefix}_p50": float(p[0]),
        f"{prefix}_p90": float(p[1]),
        f"{prefix}_p99": float(p[2]),
    }


def summarize(
    req: Mapping[str, np.ndarray],
    num_replicas: int,
    tbt_gaps: Optional[Iterable[float]] = None,
    busy_time: Optional[np.ndarray] = None,
    slo_e2e: Optional[float] = None,
) -> Dict[str, float]:
    """Episode summary: P50/P90/P99/mean of TTFT, TBT, E2E, scheduling delay; throughput;
    load imbalance (std of per-replica utilisation and of request shares)."""
    done = req["completed"]
    s: Dict[str, float] = {"num_requests": int(done.size), "num_completed": int(done.sum())}
    s.update(_stats(req["ttft"][done], "ttft"))
    s.update(_stats(req["e2e"][done], "e2e"))
    s.update(_stats(req["sched_delay"][done], "sched_delay"))
    tbt = np.asarray(tbt_gaps if tbt_gaps is not None else [], dtype=float)
    if tbt.size == 0:  # no per-token record: fall back to per-request mean gaps
        tbt = req["tbt_mean"][done & (req["num_decode_tokens"] > 1)]
    s.update(_stats(tbt, "tbt"))
    start = float(req["arrived_at"].min()) if done.size else 0.0
    end = float(req["completed_at"][done].max()) if done.any() else start
    makespan = max(end - start, 1e-9)
    s["makespan"] = makespan
    s["throughput_rps"] = float(done.sum()) / makespan
    s["throughput_tps"] = float(req["total_tokens"][done].sum()) / makespan
    s["restarts"] = int(req["restarts"].sum())
    replica = np.asarray(req["replica"])
    if (replica >= 0).all():
        share = np.bincount(replica, minlength=num_replicas) / max(len(replica), 1)
        s["imbalance_share_std"] = float(share.std())
    if busy_time is not None:
        util = np.asarray(busy_time, float) / makespan
        s["utilization_mean"] = float(util.mean())
        s["imbalance_util_std"] = float(util.std())
    if slo_e2e is not None:
        s["slo_violation_rate"] = float((req["e2e"][done] > slo_e2e).mean()) if done.any() else 0.0
    return s
