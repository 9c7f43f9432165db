"""Every check a run's input must pass, before anything is written.

Hydra makes the run dir (and `.hydra/`, `train.log`) before the task function starts, so a check in
the task leaves a dir behind for every typo. `CheckInputs` is a Hydra callback whose `on_run_start`
runs on the composed config *before* that: a bad value, a resume of a dir that is not a run, an
evaluation of a missing checkpoint, or a trace holding requests the cluster can never serve is one
line on stderr and exit code 2, with nothing written. (Hydra turns exceptions of callbacks into
warnings, hence the exit from here.) The task functions run the same checks again (`train.run`,
`evaluate.inputs`), so code that calls them without Hydra is checked too.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from vidur_ppo.input_checks import INPUT_ERRORS, probe_env, reject


def train_inputs(cfg: DictConfig, overrides: Iterable[str] = ()) -> Any:
    """The checks of `python -m vidur_ppo.train`: the resumed run (if any), every config value, the
    env and its workload. Returns the validated TrainConfig."""
    from vidur_ppo import rundir
    from vidur_ppo.config import validate

    if cfg.get("resume"):
        cfg, _ = rundir.resumed_config(cfg, cfg.resume, overrides)
    tc = validate(cfg)
    probe_env(tc)
    return tc


class CheckInputs(Callback):
    """`hydra.callbacks` entry of the train (`app: train`) and evaluate (`app: evaluate`) configs."""

    def __init__(self, app: str = "train") -> None:
        self.app = app

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        task = copy.deepcopy(config)  # the task's config, as Hydra's run_job makes it
        with read_write(task), open_dict(task):
            del task["hydra"]
        try:
            if self.app == "evaluate":
                from vidur_ppo.evaluate import inputs

                inputs(task)
            else:
                train_inputs(task, [str(o) for o in config.hydra.overrides.task])
        except tuple(INPUT_ERRORS) as exc:
            reject(exc)
