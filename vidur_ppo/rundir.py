"""A run dir belongs to one run: its lock, its config and feature names, its log (train.log), and
the checkpoint that continues it exactly (the trainer's state, every RNG, the episodes in flight in
every env, whether BC is done and on which seeds, the W&B run id).

A second writer is refused with one line (`run.lock` holds the owner's pid; a lock whose process
is gone is stale and taken over). A new run into a dir that already holds one is refused unless it
resumes it (`resume=<dir>`) or starts over (`overwrite=true`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from vidur_ppo import checkpoint
from vidur_ppo.checks import ConfigError

LOCK = "run.lock"
RUN_FILES = ("metrics.csv", "events.csv", checkpoint.CHECKPOINT, "config.yaml", "features.json", "eval.csv", "report.md")
#: <run dir>/distilled/: the policy right after BC (+ DAgger), a policy dir of its own (RunState.snapshot)
DISTILLED = "distilled"
#: what `resume=` may change: budgets and reporting, never what the run has learnt from so far
RESUMABLE_KEYS = ("ppo.num_updates", "checkpoint_every", "logger", "logger.", "eval", "eval.", "torch_threads",
                  "torch_threads_update", "executor", "executor.", "bc.label_workers")


log = logging.getLogger(__name__)


class RunLog(logging.FileHandler):
    """`hydra.job_logging`'s file handler: Hydra's job log (`filename`, <run dir>/train.log), or with
    `resume` the resumed run dir's own, appended to (Hydra's output dir of a resume is under
    .resume_hydra/). Opened at the first message."""

    def __init__(self, filename: str, resume: Optional[str] = None) -> None:
        path = Path(resume) / Path(filename).name if resume else Path(filename)
        super().__init__(path, mode="a", encoding="utf-8", delay=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(run_dir: Path) -> Path:
    """Take `run.lock` for this process, or fail naming the live owner (stale locks are taken over)."""
    lock = Path(run_dir) / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise ConfigError(f"run dir {run_dir} is in use by process {owner} (its {LOCK}); "
                                  "wait for it, or choose another hydra.run.dir")
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    raise ConfigError(f"run dir {run_dir}: could not take {LOCK}")


def release_lock(lock: Optional[Path]) -> None:
    if lock is not None and lock.exists() and lock.read_text().strip() == str(os.getpid()):
        lock.unlink(missing_ok=True)


def claim(run_dir: Path, resume: bool, overwrite: bool) -> Path:
    """Lock the run dir; refuse to mix a new run into one that holds another run's files."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(run_dir)
    used = [f for f in RUN_FILES if (run_dir / f).exists()]
    if used and not resume:
        if not overwrite:
            release_lock(lock)
            raise ConfigError(f"run dir {run_dir} already holds a run ({', '.join(used)}); resume={run_dir} "
                              "continues it, overwrite=true starts it over")
        for f in used:
            (run_dir / f).unlink()
        shutil.rmtree(run_dir / DISTILLED, ignore_errors=True)  # the old run's warm start (RunState.snapshot)
    return lock


def saved_config(run_dir: Path):
    """A run dir's config.yaml, typed as it was run: each group section by the schema of its own
    option (its `name`, or a workload's `kind`), not by the command line's default options."""
    from omegaconf import OmegaConf

    from vidur_ppo.config import SCHEMAS, TrainConfig

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"resume={run_dir}: no config.yaml there (not a vidur-ppo run dir)")
    saved = OmegaConf.load(path)
    cfg = OmegaConf.structured(TrainConfig)
    for group, options in SCHEMAS.items():
        section = saved.get(group) or {}
        option = next((section[k] for k in ("name", "kind") if section.get(k) in options), None)
        if option is None:
            raise ConfigError(f"resume={run_dir}: its config.yaml's {group} names no option of {', '.join(options)}")
        cfg[group] = OmegaConf.structured(options[option])
    try:
        return OmegaConf.merge(cfg, saved)
    except Exception as exc:  # omegaconf's errors carry the key; a run of an older schema
        raise ConfigError(f"resume={run_dir}: its config.yaml does not fit this version "
                          f"({getattr(exc, 'full_key', '')}: {str(exc).splitlines()[0]})") from None


def resumed_config(cli_cfg, run_dir: Path, overrides: Iterable[str] = ()):
    """`resume=<run dir>`: the run's saved config (`saved_config`), plus the command line's budget and
    reporting overrides (`RESUMABLE_KEYS`, returned as applied); any other override is refused by key."""
    from omegaconf import OmegaConf

    cfg = saved_config(run_dir)
    applied: List[str] = []
    for o in overrides:
        key, _, _ = o.lstrip("+~").partition("=")
        if key in ("resume", "overwrite") or key.startswith("hydra."):
            continue
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS):
            raise ConfigError(f"resume: {key} cannot change in a resumed run (it shaped what was learnt); "
                              f"resumable: {', '.join(RESUMABLE_KEYS)}")
        OmegaConf.update(cfg, key, OmegaConf.select(cli_cfg, key), merge=False)
        applied.append(o)
    cfg.resume = str(run_dir)
    return cfg, applied


class RunState:
    """What a run dir holds besides the logs, and the checkpoint that continues the run."""

    def __init__(self, run_dir: Path, cfg, feature_names, num_replicas: int) -> None:
        from omegaconf import OmegaConf

        self.run_dir = Path(run_dir)
        self.config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.config))
        (self.run_dir / "features.json").write_text(json.dumps({"names": list(feature_names)}, indent=1))
        self.feature_names, self.num_replicas = list(feature_names), num_replicas
        self.bc_done, self.bc_seeds = not bool(self.config["bc"]["enabled"]), None
        self.wandb_id, self.logger, self.sampler, self.sampler_state = None, None, None, None

    def restore(self, trainer, rng: np.random.Generator) -> Optional[int]:
        """Load the run dir's checkpoint into the trainer and the RNGs; the update it continues from."""
        ckpt = checkpoint.load(self.run_dir)
        if ckpt is None:
            return None
        try:
            trainer.load_state_dict(ckpt)
        except (RuntimeError, KeyError, ValueError) as exc:  # torch's state_dict mismatch lists every key
            raise ConfigError(f"resume={self.run_dir}: its {checkpoint.CHECKPOINT} does not fit the run's model "
                              f"({str(exc).splitlines()[0][:160]})") from None
        checkpoint.restore_rng(ckpt["rng"], rng)
        self.bc_done = ckpt.get("bc_done", False) or self.bc_done
        self.bc_seeds, self.wandb_id, self.sampler_state = ckpt.get("bc_seeds"), ckpt.get("wandb_id"), ckpt.get("sampler")
        log.info(f"resuming {self.run_dir} from update {trainer.update}")
        return trainer.update

    def snapshot(self, name: str) -> Path:
        """run_dir/<name>/: a copy of the checkpoint with the run's config and features, a policy dir
        of its own (`evaluate checkpoint=<run dir>/distilled` evaluates the warm start without PPO)."""
        out = self.run_dir / name
        out.mkdir(exist_ok=True)
        for f in (checkpoint.CHECKPOINT, "config.yaml", "features.json"):
            shutil.copy2(self.run_dir / f, out / f)
        return out

    def save(self, trainer, rng: np.random.Generator) -> Path:
        extra: Dict[str, Any] = {"sampler": self.sampler.state_dict()} if self.sampler is not None else {}
        return checkpoint.save(self.run_dir, {
            **trainer.state_dict(), **extra, "rng": checkpoint.rng_state(rng), "bc_done": self.bc_done,
            "bc_seeds": self.bc_seeds, "wandb_id": self.logger.wandb_id if self.logger else self.wandb_id,
            "config": self.config, "num_replicas": self.num_replicas, "feature_names": self.feature_names})
