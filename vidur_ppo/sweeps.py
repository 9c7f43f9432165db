"""Optuna sweeps that survive crashes: each trial is tagged with the process and job dir that runs
it and, when it fails, with the one-line reason (a config error, a divergence); a trial left
RUNNING by a process that died is marked FAIL when the next sweep on the study starts.

A Hydra callback (conf/config.yaml `hydra.callbacks`), a no-op outside Optuna sweeps.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _study(config: DictConfig):
    sweeper = config.hydra.get("sweeper") or {}
    storage, name = sweeper.get("storage"), sweeper.get("study_name")
    if not storage or not name:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # a new study: nothing to book yet
        return None


def _alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _quietly(fn, *args: Any) -> None:
    """Bookkeeping never fails a sweep: a trial another process just finished cannot change."""
    try:
        fn(*args)
    except RuntimeError:
        pass


class OptunaTrialBook(Callback):
    """Which process runs which trial, why a trial failed, and no trial RUNNING forever."""

    def __init__(self) -> None:
        self.trial_id: Optional[int] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from optuna.trial import TrialState

        study = _study(config)
        if study is None:
            return
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.system_attrs.get("pid")  # none yet: another sweep is just starting it
            if pid and not _alive(pid):
                _quietly(study._storage.set_trial_user_attr, t._trial_id, "fail_reason",
                         "its process died (found RUNNING when a later sweep started)")
                _quietly(study._storage.set_trial_state, t._trial_id, TrialState.FAIL)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from optuna.trial import TrialState

        self.trial_id = None
        study = _study(config)
        if study is None:
            return
        overrides = dict(o.split("=", 1) for o in config.hydra.overrides.task if "=" in o)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "pid" not in t.system_attrs and t.params and all(overrides.get(k) == str(v) for k, v in t.params.items()):
                _quietly(study._storage.set_trial_system_attr, t._trial_id, "pid", os.getpid())
                _quietly(study._storage.set_trial_user_attr, t._trial_id, "job_dir", HydraConfig.get().runtime.output_dir)
                self.trial_id = t._trial_id
                return

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        study = _study(config) if self.trial_id is not None else None
        if study is not None and job_return.status == JobStatus.FAILED:
            reason = str(job_return._return_value).strip().splitlines()
            _quietly(study._storage.set_trial_user_attr, self.trial_id, "fail_reason",
                     f"{type(job_return._return_value).__name__}: {reason[0] if reason else ''}")
