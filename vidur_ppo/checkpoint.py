"""Checkpoint files: atomic save/load, the RNG states a checkpoint carries, and a trained run as
a policy (`load_policy`). What a checkpoint holds is `rundir.RunState.save`'s payload (the
trainer's state, every RNG, the episodes in flight, BC seeds, the W&B id). Written atomically
(temp file + rename), so a run killed mid-write keeps its previous checkpoint.
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
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
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

