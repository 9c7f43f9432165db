"""`python -m vidur_ppo.evaluate checkpoint=<run dir> [eval=suite|generalisation|default|smoke] [eval.seeds=5]`:
a trained run (or several: `policies={a: <dir>, b: <dir>}`) on a suite of scenarios (light/heavy
load, 2/4/8 replicas, workload families, user traces); writes report.md, metrics.csv and plots into <run dir>/evaluate_<suite>/ (a new
evaluate_<suite>-2, -3, ... when that is taken) or `out=`. Scenarios that fail are listed in
report.md and the exit code is 1; everything that ran is still written. `executor=ray` runs the jobs on
a Ray cluster (docs/ray.md); an interrupted suite resumes when re-run with `out=<its dir>`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import hydra
from omegaconf import DictConfig, OmegaConf

from vidur_ppo import CONF_DIR
from vidur_ppo.config import ConfigError, register_configs
from vidur_ppo.executor import JOURNAL_DIR

register_configs()


def interrupted(path: Path) -> bool:
    """A dir holding an unfinished suite's journal (executor.journal): `out=<it>` resumes it."""
    return (path / JOURNAL_DIR).is_dir()


def output_dir(out, overwrite: bool, run_dir: Path, suite: str) -> Path:
    """A dir of this evaluate run alone, so two runs never overwrite each other: the default one
    gets a numeric suffix when taken (claimed by an atomic mkdir, said on stderr); a named `out=`
    that holds files was refused by `inputs` unless overwrite=true or it is an interrupted suite."""
    if out:  # emptiness checked by `inputs`
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = run_dir / f"evaluate_{suite}"
    if overwrite:
        base.mkdir(exist_ok=True)
        return base
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        if i > 1:
            print(f"{base.name} exists: writing to {path.name} (overwrite=true writes into {base.name})",
                  file=sys.stderr)
            for taken in (base, *(base.with_name(f"{base.name}-{j}") for j in range(2, i))):
                if interrupted(taken):
                    print(f"{taken.name} holds an interrupted suite: out={taken} resumes it", file=sys.stderr)
        return path
    raise RuntimeError(f"no free output dir next to {base}")


def inputs(cfg: DictConfig) -> Tuple[Any, Dict[str, str], Any]:
    """(the suite config, name -> run dir of every evaluated policy, the executor config), checked: raises
    ConfigError (run before Hydra writes anything by `preflight.CheckInputs`, and again by `main`)."""
    from vidur_ppo.checkpoint import load_policy

    try:
        ev = OmegaConf.to_object(cfg.eval)
        executor = OmegaConf.to_object(cfg.executor)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - omegaconf's errors: their first line
        raise ConfigError(str(exc).splitlines()[0]) from None
    policies = {str(k): str(v) for k, v in (cfg.policies or {}).items()}
    if cfg.checkpoint:
        policies = {"ppo": str(cfg.checkpoint), **policies}
    if not policies:
        raise ConfigError("checkpoint=<run dir> (or policies={name: run dir, ...}) is required")
    for name, d in policies.items():
        try:
            load_policy(d)
        except FileNotFoundError as exc:  # named by the key that gave the dir
            key = "checkpoint" if cfg.checkpoint and name == "ppo" and d == str(cfg.checkpoint) else f"policies.{name}"
            raise ConfigError(f"{key}: {exc}") from None
    if not isinstance(cfg.overwrite, bool):
        raise ConfigError(f"overwrite must be true or false, got {cfg.overwrite!r}")
    if cfg.out and Path(cfg.out).is_dir() and any(Path(cfg.out).iterdir()) and not cfg.overwrite \
            and not interrupted(Path(cfg.out)):
        raise ConfigError(f"out={cfg.out} is not empty; pick another out= or pass overwrite=true")
    return ev, policies, executor


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from tqdm.auto import tqdm

    from vidur_ppo.eval.suite import run_suite, suite_size
    from vidur_ppo.input_checks import reject

    try:
        ev, policies, executor = inputs(cfg)
    except ConfigError as exc:
        reject(exc)
    run_dir = Path(next(iter(policies.values())))
    arg = str(run_dir) if list(policies) == ["ppo"] else policies
    out = output_dir(cfg.out, cfg.overwrite, run_dir, ev.name)
    if interrupted(out):
        print(f"resuming the interrupted suite in {out}", file=sys.stderr)
    bar = tqdm(total=suite_size(arg, ev), desc=f"evaluate {ev.name}")
    try:
        text, failed = run_suite(arg, ev, out, progress=lambda: bar.update(1), executor=executor)
    except ConfigError as exc:
        reject(exc)
    bar.close()
    print(text)
    print(f"\nwritten: {out}/report.md, metrics.csv, *.png", file=sys.stderr)
    if failed:
        for sc, errs in failed.items():
            print(f"failed scenario {sc}: {'; '.join(errs)}", file=sys.stderr)
        sys.exit(1)


def cli() -> None:
    """`python -m vidur_ppo.evaluate` (and the `vidur-ppo-evaluate` console script)."""
    from vidur_ppo.input_checks import run_app

    run_app(main)


if __name__ == "__main__":
    cli()
