"""The one paired, held-out evaluation loop: every scheduler (a trained policy or a heuristic)
runs the same trace for each evaluation seed, drawn from `eval.seed_base` up, a range training
never uses. Results are the mean over seeds with 95% CIs and the paired difference against
round-robin and against the best heuristic of each scenario.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from vidur_ppo.eval.stats import mean_ci, paired_diff_ci
from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
from vidur_ppo.routing.heuristics import HEURISTICS, make_heuristic

# what an operator reads first: SLO attainment (TTFT and TPOT both met, the workload's own SLOs) and goodput,
# then the tails those SLOs bound, then the rest
TABLE_METRICS = [("slo_attainment", "SLO att."), ("goodput_rps", "goodput req/s"), ("ttft_p99", "TTFT P99"),
                 ("tpot_p99", "TPOT P99"), ("e2e_p99", "E2E P99"), ("e2e_p50", "E2E P50"), ("ttft_p90", "TTFT P90"),
                 ("throughput_rps", "req/s")]


class TorchPolicy:
    """A trained actor as a policy `obs -> replica` (keeps its recurrent state per episode, and the
    last decision's `logits` for routing/guard.py's confidence test)."""

    name = "ppo"

    def __init__(self, model, deterministic: bool = True, seed: int = 0) -> None:
        self.model, self.deterministic = model, deterministic
        self.gen = torch.Generator().manual_seed(seed)
        if self.has_attention:
            # the attention map, for reports; the flag stays on the model, and a live training model (DAgger's
            # learner) trains on with it, whose attention then takes another kernel: set on construction, not at
            # the first decision, so a run whose learner decides in label workers (bc.label_workers) trains the same
            self.model.record_attention = True
        self.reset()

    def reset(self, seed=None) -> None:
        self.state = self.model.initial_state(1)
        self.start = torch.ones((1, 1))
        self.attention_sum, self.attention_count = None, 0
        if seed is not None:
            self.gen.manual_seed(int(seed))

    @property
    def has_attention(self) -> bool:
        return hasattr(self.model, "attention_weights")

    @torch.no_grad()
    def __call__(self, obs) -> int:
        feats = torch.as_tensor(obs["features"]).view(1, 1, *obs["features"].shape)
        logits, _, self.state = self.model(feats, self.state, self.start, with_value=False)
        if self.has_attention and self.model.attention_weights() is not None:
            w = self.model.attention_weights()[0]
            self.attention_sum = w.clone() if self.attention_sum is None else self.attention_sum + w
            self.attention_count += 1
        self.start, self.logits = torch.zeros((1, 1)), logits[0, 0]
        if self.deterministic:
            return int(self.logits.argmax())
        return int(torch.multinomial(torch.softmax(self.logits, -1), 1, generator=self.gen))


def make_router(spec):
    """A router the suite names: a heuristic's name, a planner's name, or (planner name, its
    LookaheadConfig overrides) (routing/lookahead.py)."""
    from vidur_ppo.routing.lookahead import PLANNERS, make_planner

    name, overrides = (spec, None) if isinstance(spec, str) else spec
    return make_planner(name, overrides) if name in PLANNERS else make_heuristic(name)


def evaluate(env: VidurRoutingEnv, policies: Dict[str, Any], seeds: Sequence[int], progress=None,
             details: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """Run every policy (name -> policy, or a `make_router` spec) on the trace of every seed; a
    planner's rows also carry its mean wall time per decision (`decision_ms`), a guarded policy's
    its share of decisions handed to its base heuristic (`fallback_rate`, routing/guard.py).

    `details`, if given, receives per-request E2E latencies of the first seed per scheduler
    (for CDF plots) and the attention map [R, R] averaged over that episode (attention models).
    """
    rows = []
    for i, seed in enumerate(seeds):
        trace = env.workload.generate(int(seed))
        for name, policy in policies.items():
            if isinstance(policy, (str, tuple, list)):
                policy = make_router(policy)
            m = run_episode(env, policy, seed=int(seed), trace=trace)
            rows.append({"scheduler": name, "seed": int(seed), **m})
            if getattr(policy, "decision_seconds", None):
                rows[-1]["decision_ms"] = 1000 * float(np.mean(policy.decision_seconds))
            if hasattr(policy, "fallback_rate"):
                rows[-1]["fallback_rate"] = policy.fallback_rate
            if details is not None and i == 0:
                req = env.driver.per_request()
                details.setdefault("e2e", {})[name] = req["e2e"][req["completed"]]
                if getattr(policy, "attention_count", 0):
                    details.setdefault("attention", {})[name] = (policy.attention_sum / policy.attention_count).numpy()
            if progress:
                progress()
    return rows


def evaluate_heuristics(names: Sequence[str], env: VidurRoutingEnv, seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """Paired runs of heuristics only: every heuristic sees the same trace for each seed."""
    return evaluate(env, {n: n for n in names}, seeds)


def best_heuristic(rows: List[Dict[str, Any]], key: str = "e2e_p99") -> Optional[str]:
    """The heuristic with the lowest mean `key` (the bar a learned scheduler has to clear)."""
    means = {n: np.mean([r[key] for r in rows if r["scheduler"] == n]) for n in HEURISTICS
             if any(r["scheduler"] == n for r in rows)}
    return min(means, key=means.get) if means else None


def _paired(rows, name, ref, key):
    mine = sorted((r for r in rows if r["scheduler"] == name), key=lambda r: r["seed"])
    base = sorted((r for r in rows if r["scheduler"] == ref), key=lambda r: r["seed"])
    if not base or name == ref:
        return "—"
    d, h = paired_diff_ci([r[key] for r in mine], [r[key] for r in base])
    return f"{100 * d:+.1f}% ± {100 * h:.1f}"


def summary_table(rows: List[Dict[str, Any]], reference: str = "round_robin") -> str:
    """Mean ± 95% CI per scheduler; paired E2E P99 differences vs round-robin and vs the best heuristic, and
    TTFT P99 vs the best (negative = better); with guarded policies, their mean fallback rate."""
    names = list(dict.fromkeys(r["scheduler"] for r in rows))
    best = best_heuristic(rows)
    guarded = any(np.isfinite(r.get("fallback_rate", np.nan)) for r in rows)
    head = ("| scheduler | " + " | ".join(label for _, label in TABLE_METRICS) +
            f" | E2E P99 vs {reference} | E2E P99 vs best ({best}) | TTFT P99 vs best |" + (" fallback |" if guarded else ""))
    lines = [head, "|---|" + "---:|" * (len(TABLE_METRICS) + 3 + guarded)]
    for n in names:
        mine = [r for r in rows if r["scheduler"] == n]
        cells = []
        for key, _ in TABLE_METRICS:
            m, h = mean_ci([r[key] for r in mine])
            cells.append(f"{m:.3g} ± {h:.2g}")
        cells += [_paired(rows, n, reference, "e2e_p99"), _paired(rows, n, best, "e2e_p99"),
                  _paired(rows, n, best, "ttft_p99")]
        if guarded:
            rates = [r["fallback_rate"] for r in mine if np.isfinite(r.get("fallback_rate", np.nan))]
            cells.append(f"{100 * np.mean(rates):.1f}%" if rates else "—")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_float_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in r.items()} for r in rows]
