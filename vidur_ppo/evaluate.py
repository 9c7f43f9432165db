"""Paired, held-out evaluation of a policy against the heuristics.

Every scheduler runs the same traces: one per evaluation seed, drawn from `eval.seed_base` up,
a range training never uses. Results are the mean over seeds with 95% CIs and the paired
difference against round-robin.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from vidur_ppo.env import VidurRoutingEnv, run_episode
from vidur_ppo.heuristics import make_heuristic
from vidur_ppo.stats import mean_ci, paired_diff_ci

TABLE_METRICS = [("e2e_p50", "E2E P50"), ("e2e_p99", "E2E P99"), ("ttft_p90", "TTFT P90"),
                 ("ttft_p99", "TTFT P99"), ("tbt_p99", "TBT P99"), ("throughput_rps", "req/s")]


class TorchPolicy:
    """A trained actor as a policy `obs -> replica` (keeps its recurrent state per episode)."""

    name = "ppo"

    def __init__(self, model, deterministic: bool = True, seed: int = 0) -> None:
        self.model, self.deterministic = model, deterministic
        self.gen = torch.Generator().manual_seed(seed)
        self.reset()

    def reset(self, seed=None) -> None:
        self.state = self.model.initial_state(1)
        self.start = torch.ones((1, 1))
        if seed is not None:
            self.gen.manual_seed(int(seed))

    @torch.no_grad()
    def __call__(self, obs) -> int:
        feats = torch.as_tensor(obs["features"]).view(1, 1, *obs["features"].shape)
        logits, _, self.state = self.model(feats, self.state, self.start, with_value=False)
        self.start = torch.zeros((1, 1))
        if self.deterministic:
            return int(logits[0, 0].argmax())
        return int(torch.multinomial(torch.softmax(logits[0, 0], -1), 1, generator=self.gen))


def evaluate(env: VidurRoutingEnv, policies: Dict[str, Any], seeds: Sequence[int], progress=None) -> List[Dict[str, Any]]:
    """Run every policy (name -> policy or heuristic name) on the trace of every seed."""
    rows = []
    for seed in seeds:
        trace = env.workload.generate(int(seed))
        for name, policy in policies.items():
            if isinstance(policy, str):
                policy = make_heuristic(policy)
            m = run_episode(env, policy, seed=int(seed), trace=trace)
            rows.append({"scheduler": name, "seed": int(seed), **m})
            if progress:
                progress()
    return rows


def summary_table(rows: List[Dict[str, Any]], reference: str = "round_robin") -> str:
    names = list(dict.fromkeys(r["scheduler"] for r in rows))
    ref = sorted((r for r in rows if r["scheduler"] == reference), key=lambda r: r["seed"])
    head = "| scheduler | " + " | ".join(label for _, label in TABLE_METRICS) + f" | E2E P99 vs {reference} |"
    lines = [head, "|---|" + "---:|" * (len(TABLE_METRICS) + 1)]
    for n in names:
        mine = sorted((r for r in rows if r["scheduler"] == n), key=lambda r: r["seed"])
        cells = []
        for key, _ in TABLE_METRICS:
            m, h = mean_ci([r[key] for r in mine])
            cells.append(f"{m:.3g} ± {h:.2g}")
        if n == reference or not ref:
            cells.append("—")
        else:
            d, h = paired_diff_ci([r["e2e_p99"] for r in mine], [r["e2e_p99"] for r in ref])
            cells.append(f"{100 * d:+.1f}% ± {100 * h:.1f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_seeds(seed_base: int, count: int) -> List[int]:
    return [seed_base + i for i in range(count)]


def to_float_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in r.items()} for r in rows]
