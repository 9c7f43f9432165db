"""Leave-family-out generalisation of today's policies against every heuristic (issue 15).

    python experiments/generalisation.py [eval.seeds=5] [eval.grid.replicas=[4]] ...

Evaluates the issue-14 headline policy (`experiment=headline` seed 0, trained into multirun/headline_issue14/seed0
by `python -m vidur_ppo.train experiment=headline seed=0 hydra.run.dir=multirun/headline_issue14/seed0`) and
the default run (`python -m vidur_ppo.train`, trained here when missing) with `eval=generalisation`
(conf/eval/generalisation.yaml: every zoo family x rho 0.5/0.8/0.95 x 2/4/8 replicas, chat the only
training family, predicted output lengths for every router, capacity at SLO by bisection). No
retraining to look better: the policies are evaluated as they are. Writes the full suite report to
experiments/results/generalisation/ (report.md, metrics.csv, capacity.csv, heat map) and its
generalisation section, with the command and its wall time, to experiments/results/generalisation.md.
Extra arguments are Hydra overrides of the eval config.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from common import add_heuristics, arg_parser, eval_config, suite_section, write_results

ROOT = Path(__file__).resolve().parents[1]


def ensure_default_run(run_dir: Path) -> None:
    """The default run (`python -m vidur_ppo.train`), trained once into run_dir."""
    if (run_dir / "checkpoint.pt").exists():
        return
    print(f"training the default run into {run_dir}", flush=True)
    subprocess.run([sys.executable, "-m", "vidur_ppo.train", f"hydra.run.dir={run_dir}"], check=True, cwd=ROOT)


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--headline", type=Path, default=ROOT / "multirun" / "headline_issue14" / "seed0",
                    help="the issue-14 headline run dir (python -m vidur_ppo.train experiment=headline seed=0 "
                         "hydra.run.dir=DIR trains it)")
    ap.add_argument("--default", type=Path, default=ROOT / "multirun" / "generalisation" / "default",
                    help="the default run dir (trained here when missing)")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--add-heuristics", default="", help="comma-separated heuristics to add to a finished run of "
                                                         "this script (same traces; rows and report updated)")
    ap.add_argument("overrides", nargs="*", help="eval overrides, e.g. eval.seeds=5")
    args = ap.parse_args()
    t0 = time.time()
    ev = eval_config("generalisation", args.overrides)
    ensure_default_run(args.default)
    policies = {"ppo_headline": str(args.headline), "ppo_default": str(args.default)}
    walls = args.out / "generalisation" / "walls.json"
    if args.add_heuristics:
        section, failed = add_heuristics(policies, ev, args.out, "generalisation", args.add_heuristics.split(",")), {}
    else:
        section, failed = suite_section(policies, ev, args.out, "generalisation")
    wall = time.time() - t0
    cmd = " ".join(["python experiments/generalisation.py", *(["--add-heuristics", args.add_heuristics]
                                                              if args.add_heuristics else []), *args.overrides])
    runs = {**(json.loads(walls.read_text()) if walls.exists() and args.add_heuristics else {}), cmd: round(wall)}
    walls.write_text(json.dumps(runs, indent=1))
    timing = "; ".join(f"`{c}`: {s / 60:.0f} min" for c, s in runs.items())
    header = ["# Generalisation: today's policies on workload families they never saw", "",
              f"{timing} on this 2-core machine (saturation measurements, the grid and the "
              "capacity bisections). Policies: `ppo_headline` = `experiment=headline` seed 0 (size-aware features, "
              "BC from SITA-E, trained on chat with true output lengths), `ppo_default` = the default run "
              "(`python -m vidur_ppo.train`, BC from JSQ, trained on chat at 24 QPS with predicted lengths); "
              f"neither retrained for this. {ev.seeds} test seeds from {ev.seed_list()[0]} per scenario, "
              f"{ev.num_requests} requests per episode, every router told output lengths by "
              f"`{OmegaConf.to_yaml(ev.length_predictor).strip().replace(chr(10), ', ')}`; rho is load relative to each "
              "cluster's measured sustained throughput for that family (routing/capacity.py). Training family: "
              f"{', '.join(ev.grid.train_families)}; held out: "
              f"{', '.join(f for f in ev.grid.families if f not in ev.grid.train_families)}. Per-scenario tables: "
              "[generalisation/report.md](generalisation/report.md); rows: `generalisation/metrics.csv`, "
              "`generalisation/capacity.csv`.", ""]
    write_results(args.out / "generalisation.md", header, section, failed, wall)

if __name__ == "__main__":
    main()
