"""`python -m vidur_ppo.evaluate checkpoint=<run dir> [eval=suite|default|smoke] [eval.seeds=5]`:
a trained run on a suite of scenarios (light/heavy load, 2/4/8 replicas, two workload shapes,
user traces); writes report.md, metrics.csv and plots into <run dir>/evaluate_<suite>/."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from vidur_ppo.config import ConfigError, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from tqdm.auto import tqdm

    from vidur_ppo.checkpoint import load_policy
    from vidur_ppo.eval.suite import run_suite

    try:
        ev = OmegaConf.to_object(cfg.eval)
    except Exception as exc:  # noqa: BLE001 - one clear line
        print(f"config error: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    run_dir = Path(cfg.checkpoint)
    try:
        load_policy(run_dir)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    out = Path(cfg.out) if cfg.out else run_dir / f"evaluate_{ev.name}"
    bar = tqdm(total=max(1, len(ev.scenarios)) * ev.seeds, desc=f"evaluate {ev.name}")
    text = run_suite(run_dir, ev, out, progress=lambda: bar.update(1))
    bar.close()
    print(text)
    print(f"\nwritten: {out}/report.md, metrics.csv, *.png", file=sys.stderr)


if __name__ == "__main__":
    main()
