"""Expert iteration (issue 17, steps 2-3): the policy distilled from the lookahead planner by DAgger, and
PPO from it, against the planner and every heuristic on the headroom scenarios.

    python experiments/expert_iteration.py [--distilled DIR] [--ppo DIR]

Trains nothing: `python -m vidur_ppo.train experiment=expert_iteration hydra.run.dir=multirun/expert_iteration/seed0`
trains; its checkpoint right after BC + DAgger is the distilled policy, kept by the run as
<run dir>/distilled/ (runs of session 5 predate that and were copied by hand to
multirun/expert_iteration/distilled). Evaluates the policies on experiments/headroom.py's scenarios and seeds (so the traces
are the same and the planner's rows come from headroom/metrics.csv), and times one decision of each.
Writes experiments/results/expert_iteration.md and expert_iteration/ (the suite's files).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import eval_config, write_results
from headroom import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def _rel(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def decision_ms(run_dir: str, spec, seed: int) -> float:
    """Mean wall time of one policy decision (model forward and argmax) over one episode."""
    from vidur_ppo.eval.paired import TorchPolicy
    from vidur_ppo.eval.suite import cached_policy
    from vidur_ppo.routing.env import run_episode

    policy = TorchPolicy(cached_policy(run_dir)[0].model)
    seconds = []

    def timed(obs):
        t0 = time.perf_counter()
        a = policy(obs)
        seconds.append(time.perf_counter() - t0)
        return a

    run_episode(spec.make(), timed, seed=seed)
    return 1000 * sum(seconds) / len(seconds)


def main() -> None:
    from vidur_ppo.build import env_spec
    from vidur_ppo.eval.matrix import paired_vs
    from vidur_ppo.eval.suite import cached_policy, run_suite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distilled", default=str(ROOT / "multirun" / "expert_iteration" / "distilled"))
    ap.add_argument("--ppo", default=str(ROOT / "multirun" / "expert_iteration" / "seed0"))
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--name", default="expert_iteration", help="results/<name>.md and results/<name>/")
    args = ap.parse_args()
    t0 = time.time()
    ev = eval_config("generalisation", [*[o for o in DEFAULTS if not o.startswith("eval.planners")], "eval.planners=[]"])
    policies = {"ei_distilled": args.distilled, "ei_ppo": args.ppo}
    policies = {k: v for k, v in policies.items() if (Path(v) / "checkpoint.pt").exists()}
    out = args.out / args.name
    _, failed = run_suite(policies, ev, out)
    rows = pd.read_csv(out / "metrics.csv")
    planner = pd.read_csv(args.out / "headroom" / "metrics.csv")
    planner = planner[planner["scheduler"] == "lookahead_one_step"]
    both = pd.concat([rows, planner[rows.columns.intersection(planner.columns)]], ignore_index=True)
    spec = env_spec(cached_policy(next(iter(policies.values())))[1]).scenario(num_requests=ev.num_requests)
    cost = {n: decision_ms(d, spec, ev.seed_list()[0]) for n, d in policies.items()}
    planner_ms = float(planner["decision_ms"].mean())
    md = ["| scenario | split | " + " | ".join(f"{n} vs lookahead_one_step" for n in policies)
          + " | " + " | ".join(f"{n} vs best heuristic" for n in policies) + " |",
          "|---|---|" + "---:|" * (2 * len(policies))]
    vs_planner = {n: paired_vs(both, n, "lookahead_one_step") for n in policies}
    vs_best = {n: paired_vs(both, n, "best") for n in policies}
    for sc in pd.unique(rows["scenario"]):
        split = rows[rows["scenario"] == sc]["split"].iloc[0]
        cells = [f"{100 * vs_planner[n].loc[sc, 'diff']:+.1f}% ± {100 * vs_planner[n].loc[sc, 'half']:.1f}"
                 if sc in vs_planner[n].index else "n/a" for n in policies]
        cells += [f"{100 * vs_best[n].loc[sc, 'diff']:+.1f}% ± {100 * vs_best[n].loc[sc, 'half']:.1f}"
                  if sc in vs_best[n].index else "n/a" for n in policies]
        md.append(f"| {sc} | {split} | " + " | ".join(cells) + " |")
    mean = [f"{100 * vs_planner[n]['diff'].mean():+.1f}%" for n in policies] + \
           [f"{100 * vs_best[n]['diff'].mean():+.1f}%" for n in policies]
    md.append("| **mean** | | " + " | ".join(mean) + " |")
    wall = time.time() - t0
    header = ["# Expert iteration: the distilled planner and PPO from it", "",
              f"`python experiments/expert_iteration.py --distilled {_rel(args.distilled)} --ppo {_rel(args.ppo)} "
              f"--name {args.name}`: "
              f"{wall / 60:.0f} min on this 2-core machine. Scenarios, seeds "
              "and traces of experiments/headroom.py (rho 0.95; 4 replicas per family, the mixed clusters on chat; "
              f"{ev.seeds} test seeds, {ev.num_requests} requests; predicted lengths for every router). E2E P99, paired "
              "95% CI (negative: the policy is better).", "",
              "Decision cost, ms per decision: " + ", ".join(f"`{n}` {v:.2f} ms" for n, v in cost.items())
              + f", `lookahead_one_step` {planner_ms:.0f} ms (its teacher; "
              + ", ".join(f"{planner_ms / v:.0f}x" for v in cost.values()) + " cheaper; timed while another "
              "experiment shared the cores).", "", ""]
    write_results(args.out / f"{args.name}.md", header, "\n".join(md), failed, wall)


if __name__ == "__main__":
    main()
