"""Shared by the ablation scripts: train every (configuration, seed) once, keeping finished runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence


def train_all(configs: Dict[str, List[str]], seeds: Sequence[int], root: Path, updates: int,
              extra: Sequence[str] = (), t0: float | None = None) -> None:
    """`python -m vidur_ppo.train` for each configuration and seed into root/cfg<i>/seed<s>/;
    a run with an eval.csv is finished and skipped, so an interrupted ablation continues."""
    t0 = time.time() if t0 is None else t0
    for i, (name, overrides) in enumerate(configs.items()):
        for seed in seeds:
            run_dir = root / f"cfg{i}" / f"seed{seed}"
            if (run_dir / "eval.csv").exists():
                continue
            print(f"[{time.time() - t0:6.0f}s] {name} seed {seed}", flush=True)
            out = subprocess.run([sys.executable, "-m", "vidur_ppo.train", *overrides, f"seed={seed}",
                                  f"ppo.num_updates={updates}", "logger.progress=false", f"hydra.run.dir={run_dir}",
                                  *extra], capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], flush=True)
