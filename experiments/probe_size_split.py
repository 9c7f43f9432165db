"""Probe of size-based routing on the default heavy scenario (how SITA-E was found and tuned).

    python experiments/probe_size_split.py [--seeds 6]

Runs, on the same held-out traces: JSQ and least-work-left; static size splits (output length >=
a threshold -> the first k replicas, the rest -> the others, least work left inside a pool);
SITA-E (the cut-off re-estimated online so the long pool gets a share of output tokens) at
several shares; and SITA-E with an overflow rule (a long request goes to the short pool when the
long pool has alpha x more work), and a load switch (least work left below a mean outstanding
count per replica, SITA-E above). `--qps 8` for light load. Prints one line per rule; results in
experiments/results/perf_attempts.md.
"""

from __future__ import annotations

import argparse

import numpy as np

from vidur_ppo.routing.env import EVAL_SEED_BASE, VidurRoutingEnv, run_episode
from vidur_ppo.routing.heuristics import SITAE, Heuristic, make_heuristic
from vidur_ppo.workloads import DEFAULT_WORKLOAD


def _work(rep):
    return rep[:, 2] + rep[:, 3]  # prefill + decode tokens left


class StaticSplit(Heuristic):
    def __init__(self, threshold: float, k: int):
        self.threshold, self.k, self.name = threshold, k, f"static >= {threshold:g} -> {k} replica(s)"

    def act(self, obs):
        rep = obs["replicas"]
        pool = np.arange(self.k) if obs["request"][1] >= self.threshold else np.arange(self.k, rep.shape[0])
        return int(pool[np.argmin(_work(rep)[pool])])


class SharedSITAE(SITAE):
    """SITA-E whose long pool gets `share` of the output tokens instead of k/R."""

    def __init__(self, share: float):
        super().__init__()
        self.share, self.name = share, f"sita_e, token share {share:g}"

    def long_share(self, num_replicas):
        return self.share


class OverflowSITAE(SITAE):
    """SITA-E, but a long request overflows to the short pool if the long pool has alpha x more work."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha, self.name = alpha, f"sita_e + overflow at {alpha:g}x"

    def act(self, obs):
        rep, n = obs["replicas"], obs["replicas"].shape[0]
        decode = float(obs["request"][1])
        self._seen.append(decode)
        k, work = self.pool_size(n), _work(rep)
        bl, bs = int(np.argmin(work[:k])), k + int(np.argmin(work[k:]))
        if decode >= self.cutoff(n):
            return bl if work[bl] <= self.alpha * work[bs] else bs
        return bs


class LoadSwitchSITAE(SITAE):
    """Least work left while the mean outstanding requests per replica is below `threshold`, SITA-E above."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold, self.name = threshold, f"lwl below {threshold:g} outstanding, else sita_e"

    def act(self, obs):
        rep = obs["replicas"]
        if (rep[:, 0] + rep[:, 1]).mean() < self.threshold:
            self._seen.append(float(obs["request"][1]))
            return int(np.argmin(_work(rep)))
        return super().act(obs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--qps", type=float, default=DEFAULT_WORKLOAD["qps"])
    args = ap.parse_args()
    seeds = [EVAL_SEED_BASE + i for i in range(args.seeds)]
    env = VidurRoutingEnv(workload={**DEFAULT_WORKLOAD, "qps": args.qps})
    rules = [make_heuristic("round_robin"), make_heuristic("jsq"), make_heuristic("least_work_left")]
    rules += [StaticSplit(t, 1) for t in (500, 600, 700)] + [StaticSplit(t, 2) for t in (150, 200, 250, 300, 350)]
    rules += [make_heuristic("sita_e")] + [SharedSITAE(s) for s in (0.15, 0.2, 0.22, 0.28, 0.32)]
    rules += [OverflowSITAE(a) for a in (1.0, 1.5, 2.0, 3.0)] + [LoadSwitchSITAE(t) for t in (8, 12, 16)]
    for rule in rules:
        rows = [run_episode(env, rule, seed=s) for s in seeds]
        m = {k: np.mean([r[k] for r in rows]) for k in ("e2e_p99", "e2e_p50", "ttft_p90", "throughput_rps")}
        print(f"{rule.name:34s} E2E P99 {m['e2e_p99']:6.2f}  E2E P50 {m['e2e_p50']:5.2f}  "
              f"TTFT P90 {m['ttft_p90']:.3f}  req/s {m['throughput_rps']:.2f}", flush=True)


if __name__ == "__main__":
    main()
