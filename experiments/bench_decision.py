"""The Serve router's decision (issue 26: P99 <= 2 ms on CPU), before and after its speed-up, timed interleaved in
one process on the same states, so their ratio holds on a noisy machine.

    python experiments/bench_decision.py [--policy RUN_DIR] [--states 2000] [--repeats 5] [--history 100000]

old: `LearnedRouting(traced=False)`, the env evaluation's eager `TorchPolicy` (recording attention), with the
episode's output-length history made an array from a list at every decision (routing/features.py before
`SeenLengths`). new: `LearnedRouting()`, the traced forward (serve/policy.py `TracedPolicy`) and `SeenLengths` (counts
per distinct length).

The states are those of a simulated episode of the policy's cluster as its replicas would report them, the
simulation stepping between decisions (serve/overhead.py, as experiments/serve_demo.py times the decision alone).
Both routings decide every state, taking turns going first, from a reset at each repeat; their picks must agree.
Three measurements:

  decision   `route` (reports to state matrix to features to policy), a fresh episode (as serve_demo.py)
  parts      the same, each part of the decision timed on its own
  history    `route` after --history output lengths seen before the episode: a router that has run a while

Writes experiments/results/bench_decision.md and .json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from common import arg_parser

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench_decision"
DEFAULT_POLICY = ROOT / "multirun/headline/slo_router/seed0"
PATHS = ("old", "new")
PARTS = ("state_matrix", "features", "policy")


class ListLengths(list):
    """The length history before `SeenLengths` (routing/features.py): a list, made an array at every decision."""

    def rank_and_tail_share(self, length: float):
        seen = np.asarray(self, dtype=np.float64)
        return ((np.count_nonzero(seen < length) + 0.5 * (np.count_nonzero(seen == length) - 1)) / (len(seen) - 1),
                seen[seen >= length].sum() / max(seen.sum(), 1e-9))


def routing(run_dir: str, path: str, history: Sequence[float] = ()):
    """A `LearnedRouting` on `path` ("old" or "new"), its feature set having seen `history` before each episode."""
    from vidur_ppo.serve.policy import LearnedRouting

    class Routing(LearnedRouting):
        def reset(self) -> None:
            super().reset()
            if not hasattr(self.features, "seen"):  # a feature set without the length history
                return
            if path == "old":
                self.features.seen = ListLengths(history)
            else:
                for length in history:
                    self.features.seen.append(length)

    return Routing(run_dir, traced=path == "new")


class Parts:
    """A routing whose `route` (`LearnedRouting.route`'s three steps) also times each step into `ms`."""

    def __init__(self, routing) -> None:
        self.routing, self.ms = routing, {p: [] for p in PARTS}

    def reset(self) -> None:
        self.routing.reset()

    def route(self, reports, request, now):
        from vidur_ppo.serve.stats import state_matrix

        t0 = time.perf_counter()
        state = state_matrix(reports, now)
        t1 = time.perf_counter()
        features = self.routing.features(state, request, now)
        t2 = time.perf_counter()
        action = self.routing.policy({"features": features})
        t3 = time.perf_counter()
        for p, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2)):
            self.ms[p].append(dt * 1e3)
        return action, features


def compare(env, routings, decisions: int, seed: int, repeats: int) -> Dict[str, object]:
    """`time_decisions` of both paths: percentiles per path, decisions a gc ran in, whether every pick agreed."""
    from vidur_ppo.serve.overhead import percentiles, time_decisions

    ms, picks, collected = time_decisions(env, routings, decisions, seed, repeats)
    return {"decisions": len(ms["old"]), "same_picks": picks["old"] == picks["new"],
            **{p: {**percentiles(ms[p]), "gc_decisions": collected[p]} for p in PATHS}}


def table(rows: Dict[str, Dict[str, float]]) -> List[str]:
    out = ["| path | P50 | P90 | P99 | max | decisions with a gc |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in rows.items():
        out.append(f"| {name} | " + " | ".join(f"{s[k]:.3f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
                   + f" | {s['gc_decisions']} |")
    ratio = {k: rows["old"][k] / rows["new"][k] for k in ("p50_ms", "p99_ms")}
    out.append(f"| old / new | {ratio['p50_ms']:.2f}x | | {ratio['p99_ms']:.2f}x | | |")
    return out


def write(result: Dict[str, object], meta: Dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps({"meta": meta, **result}, indent=1))
    dec, hist, parts = result["decision"], result["history"], result["parts"]
    part_rows = ["| part | old P50 | new P50 | old P99 | new P99 |", "|---|---:|---:|---:|---:|"]
    for p in PARTS:
        part_rows.append(f"| {p} | {parts['old'][p]['p50_ms']:.3f} | {parts['new'][p]['p50_ms']:.3f} | "
                         f"{parts['old'][p]['p99_ms']:.3f} | {parts['new'][p]['p99_ms']:.3f} |")
    text = f"""# The Serve router's decision, before and after (issue 26)

`python experiments/bench_decision.py {meta['argv']}` ({meta['wall_s']:.0f} s). {meta['machine']}, torch
{meta['torch']}, one torch thread. Load average before / after {meta['loadavg_before']} / {meta['loadavg_after']} (above
the core count: other processes shared the cores). Both paths ran interleaved, decision by
decision, in this one process, so they shared that noise; the ratio is the number to read, the absolute tails less so.

Policy: `{meta['policy']}` (model `{meta['model']}`: embed {meta['embed_dim']}, {meta['heads']} heads, GRU
{meta['gru_hidden']}; features `{meta['features']}`, {meta['replicas']} replicas). States: {meta['states']} decisions of
a simulated episode of its cluster (seed {meta['seed']}), stepped between decisions, {meta['repeats']} repeats. old: the
eager `TorchPolicy` (recording attention) and the list-built length history; new: `TracedPolicy` and `SeenLengths`
(counts per distinct length). Milliseconds. The weights only decide which replica is picked; the work of a decision
is the architecture's and the feature set's.

## Decision (`LearnedRouting.route`), a fresh episode

{chr(10).join(table({p: dec[p] for p in PATHS}))}

Same pick at all {dec['decisions']} timed decisions: **{dec['same_picks']}**.

## Its parts (each timed on its own; P50 / P99)

{chr(10).join(part_rows)}

## After {meta['history']} output lengths seen (a router that has been up a while: one episode as long as it runs)

{chr(10).join(table({p: hist[p] for p in PATHS}))}

Same pick at all {hist['decisions']} timed decisions: **{hist['same_picks']}**.
"""
    (out / f"{NAME}.md").write_text(text)


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    p = arg_parser(__doc__)
    p.add_argument("--policy", default=str(DEFAULT_POLICY), help="trained run dir (features other than prefix)")
    p.add_argument("--states", type=int, default=2000, help="decisions of the simulated episode")
    p.add_argument("--repeats", type=int, default=5, help="passes over the states per path")
    p.add_argument("--history", type=int, default=100_000, help="output lengths seen before the history episode")
    p.add_argument("--seed", type=int, default=100_000)
    p.add_argument("--out", default=str(ROOT / "experiments/results"))
    args = p.parse_args()

    import torch

    from vidur_ppo.build import env_spec
    from vidur_ppo.checkpoint import load_policy
    from vidur_ppo.serve.overhead import percentiles

    started, load_before = time.time(), os.getloadavg()
    cfg = load_policy(args.policy)[1]
    env = env_spec(cfg).for_suite_scenario({"name": "overhead"}, args.states + 10).make()
    routings = {path: routing(args.policy, path) for path in PATHS}
    result: Dict[str, object] = {"decision": compare(env, routings, args.states, args.seed, args.repeats)}
    print("decision: done", file=sys.stderr)
    parts = {path: Parts(r) for path, r in routings.items()}
    same = compare(env, parts, args.states, args.seed, args.repeats)["same_picks"]
    result["parts"] = {n: {part: percentiles(np.array(v)) for part, v in r.ms.items()} for n, r in parts.items()}
    result["parts"]["same_picks"] = same
    seen = getattr(routings["new"].features, "seen", None)  # the output lengths of the episode just timed
    history = np.resize(seen.buf[:len(seen)], args.history).tolist() if seen is not None and len(seen) else []
    with_history = {path: routing(args.policy, path, history) for path in PATHS}
    result["history"] = compare(env, with_history, args.states, args.seed, max(args.repeats // 2, 1))
    meta = {"argv": " ".join(sys.argv[1:]), "machine": f"{cpu_model()}, {os.cpu_count()} vCPUs",
            "torch": torch.__version__,
            "loadavg_before": " ".join(f"{x:.2f}" for x in load_before),
            "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()), "policy": args.policy,
            "model": cfg.model.name, "embed_dim": cfg.model.get("embed_dim"), "heads": cfg.model.get("heads"),
            "gru_hidden": cfg.model.get("gru_hidden"), "features": cfg.features.name,
            "replicas": int(cfg.env.num_replicas), "states": args.states, "repeats": args.repeats,
            "history": len(history), "seed": args.seed, "wall_s": time.time() - started}
    write(result, meta, Path(args.out))
    print((Path(args.out) / f"{NAME}.md").read_text())


if __name__ == "__main__":
    main()
