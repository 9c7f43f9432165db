"""`python -m vidur_ppo.train [group=option ...]`: BC warm start, recurrent PPO, held-out evaluation.

Wires the pieces and nothing else: config validation (vidur_ppo.config), env and vector env
(vidur_ppo.env), model (vidur_ppo.models), BC (vidur_ppo.bc), PPO (vidur_ppo.ppo.trainer),
logging (vidur_ppo.logging), checkpoints (vidur_ppo.checkpoint), evaluation (vidur_ppo.evaluate).
Returns the held-out E2E P99 of the trained policy (the objective of Optuna sweeps).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from vidur_ppo import checkpoint
from vidur_ppo.config import ConfigError, register_configs, smoke_overrides, validate

register_configs()


def env_kwargs(cfg: DictConfig) -> Dict[str, Any]:
    """Plain-dict env arguments (picklable for worker processes)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    kw = {"cluster": c["env"], "workload": c["workload"], "reward": c["reward"], "features": c["features"],
          "slo_e2e": c["slo_e2e"], "seed_limit": c["eval"]["seed_base"], "safety": c["safety"],
          "length_noise": c.get("length_noise", 0.0)}
    if c["ppo"].get("credit", "completion") == "decision":
        kw["decision_credit"] = c["ppo"].get("decision_power", 2.0)
    return kw


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


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def run(cfg: DictConfig, run_dir: Path) -> float:
    import gymnasium as gym

    from vidur_ppo.bc import agreement, collect_demos, train_bc
    from vidur_ppo.curriculum import make_curriculum
    from vidur_ppo.env import VidurRoutingEnv, make_vector_env
    from vidur_ppo.evaluate import TorchPolicy, eval_seeds, evaluate, summary_table, to_float_rows
    from vidur_ppo.logging import RunLogger
    from vidur_ppo.models import make_model
    from vidur_ppo.ppo.trainer import PPOTrainer

    tc = validate(cfg)
    torch.set_num_threads(tc.torch_threads)
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    kw = env_kwargs(cfg)
    probe = VidurRoutingEnv(**kw)
    num_replicas, feature_names = probe.cluster.num_replicas, list(probe.features.names)
    (run_dir / "features.json").write_text(json.dumps({"names": feature_names}, indent=1))
    model = make_model(OmegaConf.to_container(cfg.model), num_replicas, len(feature_names))
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.ppo.lr, eps=1e-5)

    ckpt = checkpoint.load(run_dir) if tc.resume else None
    start_update, global_step, bc_done, wandb_id = 0, 0, False, None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.restore_rng(ckpt["rng"], rng)
        start_update, global_step = ckpt["update"], ckpt["global_step"]
        bc_done, wandb_id = ckpt.get("bc_done", False), ckpt.get("wandb_id")
        print(f"resuming {run_dir} from update {start_update}", file=sys.stderr)
    logger = RunLogger(run_dir, OmegaConf.to_container(cfg, resolve=True), tc.logger,
                       resume_update=start_update if ckpt is not None else None, wandb_id=wandb_id,
                       **_sweep_identity())
    extra = lambda: {"bc_done": True if not tc.bc.enabled else bc_done, "wandb_id": logger.wandb_id,  # noqa: E731
                     "config": OmegaConf.to_container(cfg, resolve=True), "num_replicas": num_replicas,
                     "feature_names": feature_names}
    train_demos = None
    try:
        if tc.bc.enabled and not bc_done:
            seeds = [int(s) for s in rng.integers(tc.eval.seed_base, size=tc.bc.episodes + tc.bc.holdout_episodes)]
            demos = collect_demos(probe, tc.bc.teacher, seeds)
            train_demos, held = demos[: tc.bc.episodes], demos[tc.bc.episodes:]
            bar = _progress_bar(tc.logger.progress, tc.bc.epochs, 0, f"BC from {tc.bc.teacher}")
            torch.set_num_threads(tc.torch_threads_update or os.cpu_count() or 1)  # no env workers yet
            losses = train_bc(model, train_demos, tc.bc.epochs, tc.bc.lr, tc.bc.seq_len,
                              progress=lambda e, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
            torch.set_num_threads(tc.torch_threads)
            bar.close()
            acc = agreement(model, held)
            logger.event("bc", 0, teacher=tc.bc.teacher, agreement=acc, final_loss=losses[-1],
                         decisions=int(sum(len(d.actions) for d in train_demos)))
            print(f"BC warm start from {tc.bc.teacher}: {100 * acc:.1f}% agreement on held-out episodes", file=sys.stderr)
            bc_done = True
            trainer_ckpt_update = 0
            checkpoint.save(run_dir, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "update": trainer_ckpt_update, "global_step": 0,
                                      "rng": checkpoint.rng_state(rng), **extra()})

        if tc.ppo.vector_mode == "policy_workers":  # the policy runs next to the envs, no lock-step
            from vidur_ppo.ppo.sampler import PolicyWorkerSampler

            envs = PolicyWorkerSampler(kw, tc.ppo.num_envs, tc.ppo.num_workers, OmegaConf.to_container(cfg.model),
                                       num_replicas, len(feature_names), seed=tc.seed)
        else:
            envs = make_vector_env(tc.ppo.num_envs, mode=tc.ppo.vector_mode, num_workers=tc.ppo.num_workers,
                                   autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, **kw)
        curriculum = make_curriculum(OmegaConf.to_container(cfg.curriculum, resolve=True), kw["workload"], kw["reward"])
        trainer = PPOTrainer(tc, envs, model, optimizer, logger, run_dir, rng, seed_limit=tc.eval.seed_base,
                             start_update=start_update, global_step=global_step, checkpoint_extra=extra,
                             curriculum=curriculum, feature_names=feature_names,
                             reward_scaler_state=ckpt.get("reward_scaler") if ckpt else None)
        if ckpt is not None:
            for key, obj in (("entropy_schedule", trainer.entropy), ("kl_controller", trainer.kl)):
                if key in ckpt:
                    obj.load_state_dict(ckpt[key])
        # fading BC (a demonstration loss in PPO) belongs to the BC option: bc.enabled=false turns both off
        if tc.bc.enabled and tc.ppo.bc_coef > 0 and tc.ppo.bc_fade_updates > start_update:
            if train_demos is None:
                seeds = [int(s) for s in rng.integers(tc.eval.seed_base, size=tc.bc.episodes)]
                train_demos = collect_demos(probe, tc.bc.teacher, seeds)
            trainer.bc_demos = train_demos
        bar = _progress_bar(tc.logger.progress, tc.ppo.num_updates, start_update, "PPO")

        last = {"ret": float("nan"), "e2e_p99": float("nan")}

        def on_update(row):  # episodes end every few updates: show the latest finished one
            if row["episodes"]:
                last.update(ret=row["episode_return"], e2e_p99=row["episode/e2e_p99"])
            bar.update(1)
            bar.set_postfix(ret=f"{last['ret']:.1f}", e2e_p99=f"{last['e2e_p99']:.2f}", sps=f"{row['sps']:.0f}")

        try:
            trainer.run(progress=on_update)
        finally:
            bar.close()
            envs.close()

        # --- held-out, paired evaluation ------------------------------------------------------
        eval_kw = {**kw, "safety": {**kw["safety"], "terminate": False}}  # evaluation serves every request
        if eval_kw["workload"].get("kind") == "synthetic":
            eval_kw["workload"] = {**eval_kw["workload"], "num_requests": tc.eval.num_requests}
        eval_env = VidurRoutingEnv(**eval_kw)
        model.eval()
        policies = {"ppo": TorchPolicy(model, deterministic=tc.eval.deterministic)}
        policies.update({b: b for b in tc.eval.baselines})
        seeds = eval_seeds(tc.eval.seed_base, tc.eval.seeds)
        bar = _progress_bar(tc.logger.progress, len(seeds) * len(policies), 0, "evaluate")
        details: Dict[str, Any] = {}
        rows = to_float_rows(evaluate(eval_env, policies, seeds, progress=lambda: bar.update(1), details=details))
        bar.close()
        table = summary_table(rows)
        import pandas as pd

        from vidur_ppo import report

        pd.DataFrame(rows).to_csv(run_dir / "eval.csv", index=False)
        figs = [report.learning_curves(run_dir / "metrics.csv", run_dir / "learning_curves.png"),
                report.latency_cdfs(details.get("e2e", {}), run_dir / "latency_cdf.png",
                                    f"E2E latency CDF, held-out seed {seeds[0]}")]
        for name, w in details.get("attention", {}).items():
            figs.append(report.attention_heatmap(w, run_dir / f"attention_{name}.png", f"{name}: mean attention, seed {seeds[0]}"))
        (run_dir / "report.md").write_text(
            f"# vidur-ppo run report\n\nRun dir: `{run_dir}`\n\n## Held-out evaluation "
            f"({len(seeds)} seeds from {tc.eval.seed_base}, {tc.eval.num_requests} requests, same traces for "
            f"every scheduler; mean ± 95% CI; \"vs\" = paired relative difference, negative = better)\n\n{table}\n\n"
            f"## Figures\n\n{report.figure_links([f for f in figs if f], run_dir)}\n")
        logger.log_images({f.stem: f for f in figs if f})
        logger.log_table("eval/summary", rows)
        print(table)
        ppo_p99 = float(np.mean([r["e2e_p99"] for r in rows if r["scheduler"] == "ppo"]))
        logger.event("eval", trainer.update, ppo_e2e_p99=ppo_p99)
        return ppo_p99
    finally:
        logger.close()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    try:
        if cfg.resume:
            run_dir = Path(cfg.resume)
            saved = run_dir / "config.yaml"
            if not saved.exists():
                raise ConfigError(f"resume={cfg.resume}: no config.yaml there (not a vidur-ppo run dir)")
            resume = cfg.resume
            cfg = OmegaConf.merge(cfg, OmegaConf.load(saved))
            cfg.resume = resume
        else:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            if cfg.smoke:
                explicit = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
                smoke_overrides(cfg, explicit)
        return run(cfg, run_dir)
    except ConfigError as exc:
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a failed job of a sweep: the sweeper records it and goes on
        print(f"config error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
