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
