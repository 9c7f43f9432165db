"""Decision credit: put each request's latency reward on the decision that routed it.

With the default (completion) credit a request's reward arrives at whatever decision happens to
be current when it finishes; a long request finishes ~500 decisions after it was routed, far
beyond gamma's horizon, so the routing that made it slow is never blamed. With `reward.credit=
decision` the env reports, at an episode's end, one cost per routed request in decision order,
negated: -(E2E / SLO) ** power, or with `reward.decision_metric=slo` its TTFT/TPOT SLO miss and
slack margins (`sim.metrics.slo_costs`), and the rollout's rewards of that episode are replaced by them. GAE's gamma then
adds the next requests' rewards to a decision's return, the ones its placement slows down.
Rollouts must hold whole episodes (ppo.rollout_steps a multiple of the episode's decisions).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import torch

EpisodeCredit = Tuple[int, int, np.ndarray]  # (step of the episode's last decision, env index, rewards)


def finished_decision_rewards(info: Dict[str, Any]) -> Dict[int, np.ndarray]:
    """Env index -> per-decision rewards of the episodes that ended this step (SAME_STEP autoreset)."""
    fi = info.get("final_info")
    if not fi or "decision_rewards" not in fi:
        return {}
    mask, arrs = fi["_decision_rewards"], fi["decision_rewards"]
    return {int(i): np.asarray(arrs[i], dtype=np.float64) for i in np.flatnonzero(mask)}


def assign(rewards: torch.Tensor, credits: List[EpisodeCredit]) -> torch.Tensor:
    """Rewards [T, N] with each finished episode's steps replaced by its decision rewards."""
    out = rewards.clone()
    T, N = out.shape
    covered = np.zeros((T, N), dtype=bool)
    for t, i, arr in credits:
        start = t - len(arr) + 1
        if start < 0:
            raise RuntimeError(
                f"reward.credit=decision: an episode of {len(arr)} decisions ended at step {t} of a {T}-step rollout, "
                "so it began in an earlier rollout; set ppo.rollout_steps to a multiple of the episode length "
                "(workload.num_requests)")
        out[start:t + 1, i] = torch.as_tensor(arr, dtype=out.dtype)
        covered[start:t + 1, i] = True
    if credits and not covered.all():
        raise RuntimeError("reward.credit=decision: the rollout ends inside an episode; set ppo.rollout_steps to a "
                           "multiple of the episode length (workload.num_requests)")
    return out
