"""The learned router's decision overhead timed alone (issue 26): one place for how it is measured.

`time_decisions` runs a simulated episode and, at each of its decisions, times one or more routings' `route` on
what the replicas would report (`env_reports`), interleaved decision by decision in one process, so routings
compared on a noisy machine share its noise, and the simulation runs between decisions as a Serve ingress does
other work between requests. experiments/serve_demo.py (the decision before Ray starts) and
experiments/bench_decision.py (the eager against the traced path) both time with it.
"""

from __future__ import annotations

import gc
import time
from typing import Dict, List, Mapping, Tuple

import numpy as np

from vidur_ppo.serve.request import request_sizes, request_vector
from vidur_ppo.serve.stats import env_reports

QUANTILES = (50, 90, 99)


class _GcCount:
    """Garbage collections started so far (a gc callback), to tell which timed decisions contained one."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, phase: str, info) -> None:
        self.count += phase == "start"


def time_decisions(env, routings: Mapping[str, object], decisions: int, seed: int,
                   repeats: int = 1) -> Tuple[Dict[str, np.ndarray], Dict[str, List[int]], Dict[str, int]]:
    """Up to `decisions` decisions of the env's episode `seed`, `repeats` times, each routing (a `LearnedRouting`,
    or anything with its `reset` and `route`) reset at every episode and deciding every decision, taking turns
    going first so none always runs on the cache another warmed; the env follows the first routing's pick.

    Returns each routing's wall time per decision (ms), its picks, and how many of its timed decisions a
    garbage collection ran in."""
    names = list(routings)
    ms: Dict[str, List[float]] = {n: [] for n in names}
    picks: Dict[str, List[int]] = {n: [] for n in names}
    collected = dict.fromkeys(names, 0)
    gcs = _GcCount()
    gc.callbacks.append(gcs)
    try:
        for _ in range(repeats):
            obs, _ = env.reset(seed=seed)
            for r in routings.values():
                r.reset()
            for i in range(decisions):
                now = env.driver.now
                reports = env_reports(env, now)
                # the client's request body: the prompt length and the predicted output length the env's router sees
                body = {"prompt_tokens": int(obs["request"][0]), "predicted_output_tokens": int(obs["request"][1])}
                request = request_vector(*request_sizes((), body))
                for n in names[i % len(names):] + names[:i % len(names)]:
                    before = gcs.count
                    t0 = time.perf_counter()
                    action, _ = routings[n].route(reports, request, now)
                    ms[n].append((time.perf_counter() - t0) * 1e3)
                    picks[n].append(action)
                    collected[n] += gcs.count > before
                obs, _, terminated, truncated, _ = env.step(picks[names[0]][-1])
                if terminated or truncated:
                    break
    finally:
        gc.callbacks.remove(gcs)
    return {n: np.array(v) for n, v in ms.items()}, picks, collected


def percentiles(ms: np.ndarray) -> Dict[str, float]:
    """P50/P90/P99 and max of decision times (ms), keyed `p50_ms`... `max_ms`."""
    return {**{f"p{q}_ms": float(np.percentile(ms, q)) for q in QUANTILES}, "max_ms": float(np.max(ms))}
