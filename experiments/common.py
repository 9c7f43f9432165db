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


def suite_section(policies, ev, results: Path, name: str):
    """Run a suite (`eval/suite.run_suite`, with a progress bar) into results/<name>/ and return its
    generalisation section (figure links relative to results/) and the failed scenarios."""
    import pandas as pd
    from tqdm.auto import tqdm

    from vidur_ppo.eval.matrix import generalisation_report
    from vidur_ppo.eval.suite import run_suite, suite_size

    out_dir = results / name
    bar = tqdm(total=suite_size(policies, ev), desc=name)
    _, failed = run_suite(policies, ev, out_dir, progress=lambda: bar.update(1))
    bar.close()
    rows = pd.read_csv(out_dir / "metrics.csv")
    capacity = pd.read_csv(out_dir / "capacity.csv").fillna({"censored": ""}) if (out_dir / "capacity.csv").exists() else None
    section = generalisation_report(rows, capacity, out_dir).replace("](generalisation_heatmap", f"]({name}/generalisation_heatmap")
    return section, failed


def write_results(path: Path, header: List[str], section: str, failed: Dict[str, List[str]], wall: float) -> None:
    """results/<name>.md: the header, any failed scenarios, the suite's section; printed too."""
    md = list(header)
    if failed:
        md += ["Failed scenarios: " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    path.write_text("\n".join(md) + section + "\n")
    print(section)
    print(f"\nwritten: {path} ({wall / 60:.1f} min)", file=sys.stderr)


def eval_config(name: str, overrides: Sequence[str] = ()):
    """conf/eval/<name>.yaml with command-line overrides, as a validated EvalConfig."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vidur_ppo.config import register_configs

    register_configs()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return OmegaConf.to_object(compose("evaluate", overrides=[f"eval={name}", *overrides]).eval)
