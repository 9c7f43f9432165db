"""Training throughput: env steps/s and updates/s for 1, 2 and 4 envs, Sync vs grouped workers,
and where the time goes (simulation, policy forward during rollouts, PPO update).

    python experiments/bench_train.py [--updates 3] [--model gru] [--features legacy]

Writes experiments/results/bench_train.{json,md}. Uses the default config (conf/), BC off.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from common import arg_parser  # experiments/common.py, next to this script
from vidur_ppo.build import env_spec, make_sampler
from vidur_ppo.config import register_configs, validate
from vidur_ppo.models import make_model
from vidur_ppo.ppo.trainer import PPOTrainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


class Rows:
    def __init__(self):
        self.rows = []

    def log(self, row):
        self.rows.append(row)


def bench(overrides, num_envs: int, mode: str, updates: int) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides + [
            f"ppo.num_envs={num_envs}", f"ppo.vector_mode={mode}", f"ppo.num_updates={updates}", "bc.enabled=false",
            "checkpoint_every=1000"])
    tc = validate(cfg)
    torch.set_num_threads(tc.torch_threads)
    spec = env_spec(tc)  # the sampler follows ppo.vector_mode (sync, grouped or policy_workers)
    feats = spec.make().observation_space["features"].shape
    model = make_model(tc.model, feats[0], feats[1])
    sampler = make_sampler(spec, tc.ppo, model, tc.model, feats[1], seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=tc.ppo.lr)
    rows = Rows()
    trainer = PPOTrainer(tc.ppo, model, opt, np.random.default_rng(0), seed_limit=spec.seed_limit,
                         reward_credit=spec.reward.credit, update_threads=tc.torch_threads_update)
    sampler.reset(list(range(num_envs)))  # workers up (imports done) before the clock starts
    t0 = time.perf_counter()
    trainer.fit(sampler, rows.log, lambda: None, checkpoint_every=tc.checkpoint_every)
    wall = time.perf_counter() - t0
    sampler.close()
    r = rows.rows
    tot = {k: sum(x[k] for x in r) for k in ("time_env", "time_policy", "time_update", "time_update_total")}
    steps = updates * tc.ppo.rollout_steps * num_envs
    return {"num_envs": num_envs, "mode": mode, "updates": updates, "steps": steps, "wall_s": wall,
            "env_steps_per_s": steps / wall, "updates_per_s": updates / wall,
            "rollout_steps_per_s": steps / (tot["time_env"] + tot["time_policy"]),
            "share_env": tot["time_env"] / tot["time_update_total"],
            "share_policy": tot["time_policy"] / tot["time_update_total"],
            "share_update": tot["time_update"] / tot["time_update_total"]}


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--updates", type=int, default=3)
    ap.add_argument("--model", default="gru")
    ap.add_argument("--features", default="legacy")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    register_configs()
    overrides = [f"model={args.model}", f"features={args.features}"]
    rows = []
    for n in (1, 2, 4):
        for mode in ("sync", "grouped", "policy_workers"):
            if n == 1 and mode != "sync":
                continue
            rows.append(bench(overrides, n, mode, args.updates))
            r = rows[-1]
            print(f"{n} envs {mode}: {r['env_steps_per_s']:.0f} env steps/s, {r['updates_per_s']:.3f} updates/s "
                  f"(env {100 * r['share_env']:.0f}%, policy {100 * r['share_policy']:.0f}%, "
                  f"update {100 * r['share_update']:.0f}%)", flush=True)
    md = ["# bench_train: PPO training throughput", "",
          f"Machine: {platform.machine()}, Python {platform.python_version()}, 2 cores. Default scenario, "
          f"model={args.model}, features={args.features}, rollout 128 steps per env, {args.updates} updates per row, "
          "BC off. `grouped` = 2 worker processes stepping envs in lock-step (vidur_ppo.ppo.vector); `policy_workers` = 2 "
          "processes that run the policy next to their envs (vidur_ppo.ppo.samplers; its rollout time includes the "
          "policy forward). Command: "
          f"`python experiments/bench_train.py --updates {args.updates} --model {args.model} --features {args.features}`.", "",
          "| envs | vector env | env steps/s (whole loop) | updates/s | rollout steps/s | time in simulation | policy forward (rollout) | PPO update |",
          "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['num_envs']} | {r['mode']} | {r['env_steps_per_s']:.0f} | {r['updates_per_s']:.3f} | "
                  f"{r['rollout_steps_per_s']:.0f} | {100 * r['share_env']:.0f}% | {100 * r['share_policy']:.0f}% | "
                  f"{100 * r['share_update']:.0f}% |")
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"bench_train_{args.model}_{args.features}"
    (args.out / f"{name}.json").write_text(json.dumps(rows, indent=1))
    (args.out / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
