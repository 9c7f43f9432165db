"""`python -m vidur_ppo.train [group=option ...]`: BC warm start, recurrent PPO, held-out evaluation.

Wiring only: the config (vidur_ppo.config), the env and sampler factory (vidur_ppo.build), the
model (vidur_ppo.models), BC (vidur_ppo.ppo.bc), PPO (vidur_ppo.ppo.trainer), logging
(vidur_ppo.runlog), checkpoints (vidur_ppo.checkpoint), evaluation (vidur_ppo.eval).
Returns the held-out E2E P99 of the trained policy (the objective of Optuna sweeps).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any, Dict

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from vidur_ppo import CONF_DIR, build, checkpoint, rundir
from vidur_ppo.config import TrainConfig, register_configs, validate

register_configs()
#: the run's messages: plain on stderr and timestamped in <run dir>/train.log (`hydra.job_logging`)
log = logging.getLogger("vidur_ppo.train")  # not __name__: that is __main__ under `python -m`
#: the evaluation table: stdout (and train.log)
results = logging.getLogger("vidur_ppo.results")


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


def warm_start(tc: TrainConfig, trainer, env, rng, run_state, logger, stop, demos_needed: bool, slots=()):
    """BC from the teacher (once per run, then a checkpoint), and the demonstrations fading BC
    needs (a resumed run re-collects the warm start's from their seeds); returns them. `env`: one env
    per slot (ppo/bc.py: the episodes go round them). A stop during BC raises StopRequested with
    nothing of BC kept: a resume runs it again, from the start."""
    from vidur_ppo.ppo.bc import EpisodeLabeller, collect_demos, warm_start as bc_warm_start

    def bar(total: int, desc: str):
        return progress_bar(tc.logger.progress, total, 0, desc)

    # bc.label_workers > 1: episodes labelled in parallel on the run's executor, each made from its slot's spec
    labeller = EpisodeLabeller(slots, tc.executor, tc.bc.label_workers) if tc.bc.label_workers > 1 else None

    if tc.bc.enabled and not run_state.bc_done:
        demos, result, run_state.bc_seeds = bc_warm_start(trainer.model, env, tc.bc, rng, tc.eval.seed_base,
                                                          trainer.update_threads, stop=stop, bar=bar,
                                                          labeller=labeller)
        logger.event("bc", 0, **result)
        log.info(f"BC warm start from {tc.bc.teacher}: {100 * result['agreement']:.1f}% agreement on held-out episodes")
        run_state.bc_done = True
        run_state.save(trainer, rng)
        run_state.snapshot(rundir.DISTILLED)  # the distilled policy before PPO: PPO is judged against it
        return demos[: tc.bc.episodes]  # fading BC: the teacher's own episodes (not DAgger's), as a resume re-collects
    if not demos_needed:
        return None
    seeds = run_state.bc_seeds or [int(s) for s in rng.integers(tc.eval.seed_base, size=tc.bc.episodes)]
    return collect_demos(env, tc.bc.teacher, seeds, stop=stop, bar=bar, desc=f"fading BC: {tc.bc.teacher} labels",
                         labeller=labeller)


def final_evaluation(tc: TrainConfig, spec: build.EnvSpec, model, run_dir: Path, logger, update: int, stop) -> float:
    """The trained policy and the baselines on the held-out seeds; writes the run's report and says where."""
    from vidur_ppo.eval import report
    from vidur_ppo.eval.paired import TorchPolicy, evaluate, summary_table, to_float_rows

    model.eval()
    policies = {"ppo": TorchPolicy(model, deterministic=tc.eval.deterministic), **{b: b for b in tc.eval.baselines}}
    seeds = tc.eval.seed_list()
    bar = progress_bar(tc.logger.progress, len(seeds) * len(policies), 0, "evaluate")
    details: Dict[str, Any] = {}
    env = build.eval_env_spec(tc, spec).make()
    rows = to_float_rows(evaluate(env, policies, seeds, progress=lambda: (stop.check(), bar.update(1)), details=details))
    bar.close()
    figs = report.run_report(run_dir, rows, details, seeds, tc.eval)
    logger.log_images({f.stem: f for f in figs})
    logger.log_table("eval/summary", rows)
    results.info(summary_table(rows))
    ppo_p99 = float(np.mean([r["e2e_p99"] for r in rows if r["scheduler"] == "ppo"]))
    logger.event("eval", update, ppo_e2e_p99=ppo_p99)
    log.info(f"run dir: {run_dir}")
    log.info(f"report: {run_dir / 'report.md'}")
    return ppo_p99


def run(cfg: DictConfig, run_dir: Path, resumed_overrides=()) -> float:
    """One training run in `run_dir` (locked for its duration); returns the held-out E2E P99."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from vidur_ppo.interrupts import StopSignals

    tc = validate(cfg)
    if not logging.getLogger().handlers:  # called without Hydra's job logging: the messages still show
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    lock = rundir.claim(run_dir, resume=bool(tc.resume), overwrite=tc.overwrite)
    try:  # messages (a stop signal's too) print above the progress bars, not through them
        with StopSignals() as stop, logging_redirect_tqdm():
            return train(tc, cfg, run_dir, stop, resumed_overrides)
    finally:
        rundir.release_lock(lock)


def train(tc: TrainConfig, cfg: DictConfig, run_dir: Path, stop, resumed_overrides=()) -> float:
    """build -> warm start -> fit -> evaluate -> report."""
    from vidur_ppo.executor import ExecutorKind, connect
    from vidur_ppo.interrupts import StopRequested
    from vidur_ppo.models import make_model
    from vidur_ppo.ppo.bc import FadingBC
    from vidur_ppo.input_checks import probe_env
    from vidur_ppo.ppo.curriculum import make_curriculum
    from vidur_ppo.ppo.trainer import PPOTrainer, TrainingDiverged
    from vidur_ppo.runlog import RunLogger

    torch.set_num_threads(tc.torch_threads)
    rng = seed_everything(tc.seed)
    spec, slots, probes = probe_env(tc)  # bad input (a malformed trace, a bad slot) fails before anything is written
    probe = probes[0]  # every slot has the run's replica count and feature set
    features = list(probe.features.names)
    model = make_model(tc.model, probe.cluster.num_replicas, len(features))
    trainer = PPOTrainer(tc.ppo, model, torch.optim.Adam(model.parameters(), lr=tc.ppo.lr, eps=1e-5), rng,
                         tc.eval.seed_base, spec.reward.credit, tc.torch_threads_update, feature_names=features)
    state = rundir.RunState(run_dir, cfg, features, probe.cluster.num_replicas)
    resumed = state.restore(trainer, rng) if tc.resume else None
    if state.bc_done and tc.bc.enabled and tc.bc.dagger_rounds > 0 and hasattr(model, "record_attention"):
        # DAgger's learner (a TorchPolicy) left the uninterrupted run's model recording its attention maps, which
        # routes its attention through another kernel: a run resumed after DAgger trains on the same way
        model.record_attention = True
    logger = state.logger = RunLogger(run_dir, state.config, tc.logger, resume_update=resumed,
                                      wandb_id=state.wandb_id, **_sweep_identity())
    if resumed_overrides:
        logger.event("resume", trainer.update, overrides=list(resumed_overrides))
    try:
        fading = tc.bc.enabled and tc.ppo.bc_coef > 0 and tc.ppo.bc_fade_updates > trainer.update
        if tc.slots:
            clusters = [" + ".join(f"{n} x {g.device}" for n, g in s.cluster.groups()) for s in slots]
            log.info("training on slots " + ", ".join(f"{slot.name} ({c})" for slot, c in zip(tc.slots, clusters)))
        if tc.executor.kind == ExecutorKind.ray:  # the labelling tasks and the rollout actors share one Ray
            connect(tc.executor, tc.parallel_workers(), traps_sigterm=True)  # StopSignals: a stop checkpoints first
        demos = warm_start(tc, trainer, probes, rng, state, logger, stop, demos_needed=fading, slots=slots)
        stop.check()
        trainer.fading_bc = FadingBC(demos, tc.ppo.bc_coef, tc.ppo.bc_fade_updates) if fading else None
        state.sampler = build.make_sampler(slots, tc.ppo, model, tc.model, len(features), tc.seed,
                                           executor=tc.executor)
        # a multi-cluster run's curriculum leaves each slot's own workload alone (workload None)
        curriculum = make_curriculum(tc.curriculum, None if tc.slots else spec.workload,
                                     dataclasses.asdict(spec.reward))
        bar = progress_bar(tc.logger.progress, tc.ppo.num_updates, trainer.update, "PPO")
        try:
            finished = trainer.fit(state.sampler, lambda row: (logger.log(row), _show(bar, row)),
                                   lambda: state.save(trainer, rng), tc.checkpoint_every, curriculum,
                                   on_event=lambda name, **data: logger.event(name, trainer.update, **data),
                                   restore=state.sampler_state, stop=stop)
        finally:
            bar.close()
            state.sampler.close()
            state.sampler = None
        if not finished:
            raise StopRequested(stop.signum)
        return final_evaluation(tc, spec, model, run_dir, logger, trainer.update, stop)
    except TrainingDiverged as exc:
        logger.event("diverged", trainer.update, reason=str(exc))
        raise TrainingDiverged(f"{exc}; the last good checkpoint is {run_dir / checkpoint.CHECKPOINT}") from None
    finally:
        logger.close()


def _show(bar, row: Dict[str, Any]) -> None:
    """Progress: episodes end every few updates, so show the latest finished one."""
    if row["episodes"]:
        bar.last = (row["episode_return"], row["episode/e2e_p99"])
    ret, p99 = getattr(bar, "last", (float("nan"), float("nan")))
    bar.update(1)
    bar.set_postfix(ret=f"{ret:.1f}", e2e_p99=f"{p99:.2f}", sps=f"{row['sps']:.0f}")


def _how_to_continue(run_dir: Path) -> str:
    """What a stopped run kept, and the command that continues it."""
    kept = f"checkpoint in {run_dir}" if (run_dir / checkpoint.CHECKPOINT).exists() else "before the first checkpoint"
    return f"{kept}; continue with: python -m vidur_ppo.train resume={run_dir}"


def _exit(message: str, code: int) -> None:
    """The run's last line: on stderr and in train.log."""
    log.error(message)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vidur_ppo.interrupts import StopRequested
    from vidur_ppo.ppo.samplers import RolloutWorkerDied
    from vidur_ppo.ppo.trainer import TrainingDiverged
    from vidur_ppo.input_checks import INPUT_ERRORS, label

    hc = HydraConfig.get()
    run_dir, applied = Path(cfg.resume or hc.runtime.output_dir), ()
    try:
        if cfg.resume:
            cfg, applied = rundir.resumed_config(cfg, run_dir, hc.overrides.task)
        return run(cfg, run_dir, applied)
    except (*INPUT_ERRORS, TrainingDiverged) as exc:
        if hc.mode == RunMode.MULTIRUN:
            raise  # a failed job of a sweep: the sweeper records it (Optuna: a failed trial) and goes on
        _exit(f"{label(exc) or 'training diverged'}: {exc}", 2 if label(exc) else 3)
    except RolloutWorkerDied as exc:
        if hc.mode == RunMode.MULTIRUN:
            raise
        _exit(f"{exc}: {_how_to_continue(run_dir)}", 1)
    except StopRequested as exc:
        _exit(f"stopped by {exc}: {_how_to_continue(run_dir)}", 128 + exc.signum)
    except KeyboardInterrupt:
        _exit(f"aborted (second Ctrl-C); the last checkpoint is in {run_dir}", 130)


def cli() -> None:
    """`python -m vidur_ppo.train` (and the `vidur-ppo` console script)."""
    from vidur_ppo.input_checks import run_app

    run_app(main)


if __name__ == "__main__":
    cli()
