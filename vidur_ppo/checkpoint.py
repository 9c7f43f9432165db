"""Checkpoints: everything needed to continue a run exactly where it stopped.

Model (with its value normaliser), optimiser, update/step counters, RNG states (python, numpy,
torch and the trainer's episode-seed generator) and the W&B run id. Written atomically (temp
file + rename), so a run killed mid-write keeps its previous checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


def rng_state(trainer_rng: np.random.Generator) -> Dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "trainer": trainer_rng.bit_generator.state}


def restore_rng(state: Dict[str, Any], trainer_rng: np.random.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    trainer_rng.bit_generator.state = state["trainer"]


def save(run_dir: Path, payload: Dict[str, Any]) -> Path:
    path = Path(run_dir) / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load(run_dir: Path) -> Optional[Dict[str, Any]]:
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def load_policy(run_dir, deterministic: bool = True):
    """The trained model of a run dir (its config.yaml + checkpoint.pt) as a policy, plus its config."""
    from omegaconf import OmegaConf

    from vidur_ppo.eval.paired import TorchPolicy
    from vidur_ppo.models import make_model

    run_dir = Path(run_dir)
    ckpt = load(run_dir)
    if ckpt is None or not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a finished vidur-ppo run dir (needs config.yaml and checkpoint.pt)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = make_model(OmegaConf.to_container(cfg.model, resolve=True), int(cfg.env.num_replicas),
                       len(ckpt["feature_names"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return TorchPolicy(model, deterministic=deterministic), cfg


def resumed_config(cli_cfg, run_dir: Path):
    """`resume=<run dir>`: the run's saved config, with `resume` set."""
    from omegaconf import OmegaConf

    from vidur_ppo.checks import ConfigError

    saved = Path(run_dir) / "config.yaml"
    if not saved.exists():
        raise ConfigError(f"resume={run_dir}: no config.yaml there (not a vidur-ppo run dir)")
    cfg = OmegaConf.merge(cli_cfg, OmegaConf.load(saved))
    cfg.resume = str(run_dir)
    return cfg


class RunState:
    """What a run dir holds besides the logs: its config, feature names, and the checkpoint that
    continues it (the trainer's state, every RNG, whether BC is done, the W&B run id)."""

    def __init__(self, run_dir: Path, cfg, feature_names, num_replicas: int) -> None:
        import json

        from omegaconf import OmegaConf

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.config))
        (self.run_dir / "features.json").write_text(json.dumps({"names": list(feature_names)}, indent=1))
        self.feature_names, self.num_replicas = list(feature_names), num_replicas
        self.bc_done, self.wandb_id, self.logger = not bool(self.config["bc"]["enabled"]), None, None

    def restore(self, trainer, rng: np.random.Generator) -> Optional[int]:
        """Load the run dir's checkpoint into the trainer and the RNGs; the update it continues from."""
        import sys

        ckpt = load(self.run_dir)
        if ckpt is None:
            return None
        trainer.load_state_dict(ckpt)
        restore_rng(ckpt["rng"], rng)
        self.bc_done, self.wandb_id = ckpt.get("bc_done", False) or self.bc_done, ckpt.get("wandb_id")
        print(f"resuming {self.run_dir} from update {trainer.update}", file=sys.stderr)
        return trainer.update

    def attach(self, logger) -> None:
        self.logger = logger

    def save(self, trainer, rng: np.random.Generator) -> Path:
        return save(self.run_dir, {**trainer.state_dict(), "rng": rng_state(rng), "bc_done": self.bc_done,
                                   "wandb_id": self.logger.wandb_id if self.logger else self.wandb_id,
                                   "config": self.config, "num_replicas": self.num_replicas,
                                   "feature_names": self.feature_names})
