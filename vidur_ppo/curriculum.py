"""Curricula: the workload and reward a run trains on, as a function of the update number.

A curriculum maps an update to effective `workload` and `reward` specs (the config groups' dicts).
The trainer asks before every rollout; when the specs change it reconfigures every env (in
worker processes too, through the vector env's `call`), resets them so the next rollout runs
entirely under the new stage, and logs the switch as an event (CSV and W&B). The cluster itself
(`env`) is not changed by a curriculum: the observation and action spaces stay fixed.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping

import numpy as np

from vidur_ppo.registry import lookup, split_spec


class Curriculum:
    """No curriculum: the target workload and reward from the start."""

    def __init__(self, workload: Mapping[str, Any], reward: Mapping[str, Any], **_: Any) -> None:
        self.workload, self.reward = dict(workload), dict(reward)

    def at(self, update: int) -> Dict[str, Dict[str, Any]]:
        return {"workload": copy.deepcopy(self.workload), "reward": copy.deepcopy(self.reward)}


def _progress(update: int, ramp_updates: int, mode: str, steps: int) -> float:
    p = min(1.0, update / max(ramp_updates, 1))
    if mode == "stepwise":
        p = np.floor(p * steps) / steps
    return float(p)


class LoadRamp(Curriculum):
    """Start at `start_qps` and raise the arrival rate to the workload's target QPS by update
    `ramp_updates`, linearly or in `steps` equal steps (`mode: stepwise`)."""

    def __init__(self, workload, reward, start_qps: float = 8.0, ramp_updates: int = 10, mode: str = "linear",
                 steps: int = 4, **_: Any) -> None:
        super().__init__(workload, reward)
        if "qps" not in self.workload or self.workload["qps"] is None:
            raise ValueError("curriculum=load_ramp needs a workload with a target qps")
        self.start, self.target = float(start_qps), float(self.workload["qps"])
        self.ramp, self.mode, self.steps = int(ramp_updates), mode, int(steps)

    def at(self, update):
        out = super().at(update)
        p = _progress(update, self.ramp, self.mode, self.steps)
        out["workload"]["qps"] = round(self.start + (self.target - self.start) * p, 6)
        return out


class RewardRamp(Curriculum):
    """Start forgiving (clip `start_clip`, latency threshold x `start_threshold_scale`) and tighten
    to the reward's own clip and threshold by update `ramp_updates`."""

    def __init__(self, workload, reward, start_clip: float = 2.0, start_threshold_scale: float = 1.5,
                 ramp_updates: int = 10, mode: str = "linear", steps: int = 4, **_: Any) -> None:
        super().__init__(workload, reward)
        self.start_clip, self.start_scale = float(start_clip), float(start_threshold_scale)
        self.ramp, self.mode, self.steps = int(ramp_updates), mode, int(steps)

    def at(self, update):
        out = super().at(update)
        p = _progress(update, self.ramp, self.mode, self.steps)
        r = out["reward"]
        r["clip"] = round(self.start_clip + (float(r["clip"]) - self.start_clip) * p, 6)
        r["latency_threshold"] = round(float(r["latency_threshold"]) * (self.start_scale + (1 - self.start_scale) * p), 9)
        return out


class Staged(Curriculum):
    """A list of stages `{start: update, workload: {...}, reward: {...}}`; from its start update a
    stage's overrides apply on top of the target specs (the last stage started wins)."""

    def __init__(self, workload, reward, stages: List[Mapping[str, Any]] = (), **_: Any) -> None:
        super().__init__(workload, reward)
        self.stages = sorted((dict(s) for s in stages), key=lambda s: int(s.get("start", 0)))
        for i, s in enumerate(self.stages):
            unknown = set(s) - {"start", "workload", "reward", "name"}
            if unknown:
                raise ValueError(f"curriculum.stages[{i}] has unknown keys {sorted(unknown)}; "
                                 "allowed: start, name, workload, reward (the cluster cannot change mid-run)")

    def at(self, update):
        out = super().at(update)
        for s in self.stages:
            if int(s.get("start", 0)) <= update:
                out["workload"].update(dict(s.get("workload") or {}))
                out["reward"].update(dict(s.get("reward") or {}))
        return out


CURRICULA = {"none": Curriculum, "load_ramp": LoadRamp, "reward_ramp": RewardRamp, "staged": Staged}


def make_curriculum(spec: Mapping[str, Any], workload: Mapping[str, Any], reward: Mapping[str, Any]) -> Curriculum:
    name, params = split_spec(spec, "none")
    return lookup(CURRICULA, name, "curriculum")(workload, reward, **params)
