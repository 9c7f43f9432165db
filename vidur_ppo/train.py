"""`python -m vidur_ppo.train [group=option ...]`: BC warm start, recurrent PPO, held-out evaluation.

Wiring only: the config (vidur_ppo.config), the env and sampler factory (vidur_ppo.build), the
model (vidur_ppo.models), BC (vidur_ppo.ppo.bc), PPO (vidur_ppo.ppo.trainer), logging
(vidur_ppo.runlog), checkpoints (vidur_ppo.checkpoint), evaluation (vidur_ppo.eval).
Returns the held-out E2E P99 of the trained policy (the objective of Optuna sweeps).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Dict

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from vidur_ppo import build, checkpoint
from vidur_ppo.config import ConfigError, TrainConfig, register_configs, validate

register_configs()


def _sweep_identity() -> Dict[str, Any]:
    """W&B grouping: the runs of one sweep share a group (the sweep dir), tagged by their overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith("hydra.")]
    if hc.mode == RunMode.MULTIRUN:
        return {"group": f"{Path(hc.sweep.dir).parent.name}/{Path(hc.sweep.dir).name}", "job_type": "sweep", "tags": overrides}
    return {"job_type": "train", "tags": overrides}


def progress_bar(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def seed_everything(seed: int) -> np.random.Generator:
    """Global RNGs (torch, numpy) and the run's own generator (episode seeds, minibatch order)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return np.random.default_rng(seed)


def warm_start(tc: TrainConfig, trainer, env, rng, run_state, logger, demos_needed: bool):
    """BC from the teacher (once per run, then a checkpoint), and the demonstrations fading BC
    needs; returns them."""
    from vidur_ppo.ppo.bc import demonstrations, warm_start as bc_warm_start

    if tc.bc.enabled and not run_state.bc_done:
        bar = progress_bar(tc.logger.progress, tc.bc.epochs, 0, f"BC from {tc.bc.teacher}")
        demos, result = bc_warm_start(trainer.model, env, tc.bc, rng, tc.eval.seed_base, trainer.update_threads,
                                      progress=lambda e, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
        bar.close()
        logger.event("bc", 0, **result)
        print(f"BC warm start from {tc.bc.teacher}: {100 * result['agreement']:.1f}% agreement on held-out episodes",
              file=sys.stderr)
        run_state.bc_done = True
        run_state.save(trainer, rng)
        return demos
    return demonstrations(env, tc.bc, rng, tc.eval.seed_base) if demos_needed else None


def final_evaluation(tc: TrainConfig, spec: build.EnvSpec, model, run_dir: Path, logger, update: int) -> float:
    """The trained policy and the baselines on the held-out seeds; writes the run's report."""
    from vidur_ppo.eval import report
    from vidur_ppo.eval.paired import TorchPolicy, evaluate, summary_table, to_float_rows

    model.eval()
    policies = {"ppo": TorchPolicy(model, deterministic=tc.eval.deterministic), **{b: b for b in tc.eval.baselines}}
    seeds = tc.eval.seed_list()
    bar = progress_bar(tc.logger.progress, len(seeds) * len(policies), 0, "evaluate")
    details: Dict[str, Any] = {}
    env = build.eval_env_spec(tc, spec).make()
    rows = to_float_rows(evaluate(env, policies, seeds, progress=lambda: bar.update(1), details=details))
    bar.close()
    figs = report.run_report(run_dir, rows, details, seeds, tc.eval)
    logger.log_images({f.stem: f for f in figs})
    logger.log_table("eval/summary", rows)
    print(summary_table(rows))
    ppo_p99 = float(np.mean([r["e2e_p99"] for r in rows if r["scheduler"] == "ppo"]))
    logger.event("eval", update, ppo_e2e_p99=ppo_p99)
    return ppo_p99


def run(cfg: DictConfig, run_dir: Path) -> float:
    from vidur_ppo.models import make_model
    from vidur_ppo.ppo.bc import FadingBC
    from vidur_ppo.ppo.curriculum import make_curriculum
    from vidur_ppo.ppo.trainer import PPOTrainer
    from vidur_ppo.runlog import RunLogger

    tc = validate(cfg)
    torch.set_num_threads(tc.torch_threads)
    rng = seed_everything(tc.seed)
    spec = build.env_spec(tc)
    probe = spec.make()
    features = list(probe.features.names)
    model = make_model(tc.model, probe.cluster.num_replicas, len(features))
    trainer = PPOTrainer(tc.ppo, model, torch.optim.Adam(model.parameters(), lr=tc.ppo.lr, eps=1e-5), rng,
                         tc.eval.seed_base, spec.reward.credit, tc.torch_threads_update, feature_names=features)
    run_state = checkpoint.RunState(run_dir, cfg, features, probe.cluster.num_replicas)
    resumed = run_state.restore(trainer, rng) if tc.resume else None
    logger = RunLogger(run_dir, run_state.config, tc.logger, resume_update=resumed, wandb_id=run_state.wandb_id,
                       **_sweep_identity())
    run_state.attach(logger)
    save = lambda: run_state.save(trainer, rng)  # noqa: E731
    try:
        fading = tc.bc.enabled and tc.ppo.bc_coef > 0 and tc.ppo.bc_fade_updates > trainer.update
        demos = warm_start(tc, trainer, probe, rng, run_state, logger, demos_needed=fading)
        trainer.fading_bc = FadingBC(demos, tc.ppo.bc_coef, tc.ppo.bc_fade_updates) if fading else None
        sampler = build.make_sampler(spec, tc.ppo, model, tc.model, len(features), tc.seed)
        curriculum = make_curriculum(tc.curriculum, spec.workload, dataclasses.asdict(spec.reward))
        bar = progress_bar(tc.logger.progress, tc.ppo.num_updates, trainer.update, "PPO")
        try:
            trainer.fit(sampler, lambda row: (logger.log(row), _show(bar, row)), save, tc.checkpoint_every,
                        curriculum, on_event=lambda name, **data: logger.event(name, trainer.update, **data))
        finally:
            bar.close()
            sampler.close()
        return final_evaluation(tc, spec, model, run_dir, logger, trainer.update)
    finally:
        logger.close()


def _show(bar, row: Dict[str, Any]) -> None:
    """Progress: episodes end every few updates, so show the latest finished one."""
    if row["episodes"]:
        bar.last = (row["episode_return"], row["episode/e2e_p99"])
    ret, p99 = getattr(bar, "last", (float("nan"), float("nan")))
    bar.update(1)
    bar.set_postfix(ret=f"{ret:.1f}", e2e_p99=f"{p99:.2f}", sps=f"{row['sps']:.0f}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    try:
        if cfg.resume:
            run_dir = Path(cfg.resume)
            cfg = checkpoint.resumed_config(cfg, run_dir)
        else:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
        return run(cfg, run_dir)
    except ConfigError as exc:
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a failed job of a sweep: the sweeper records it and goes on
        print(f"config error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
