"""Curricula: the workload and reward a run trains on, as a function of the update number.

A curriculum maps an update to effective `workload` and `reward` specs (the config groups' dicts).
The trainer asks before every rollout; when the specs change it reconfigures every env (in
worker processes too, through the vector env's `call`), resets them so the next rollout runs
entirely under the new stage, and logs the switch as an event (CSV and W&B). The cluster itself
(`env`) is not changed by a curriculum: the observation and action spaces stay fixed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from vidur_ppo.checks import StrEnum, check, choice, positive
from vidur_ppo.registry import build


class RampMode(StrEnum):
    linear = "linear"
    stepwise = "stepwise"


@dataclass
class CurriculumConfig:
    name: str = "none"


@dataclass
class RampConfig(CurriculumConfig):
    ramp_updates: int = 10
    mode: RampMode = RampMode.linear
    steps: int = 4

    def __post_init__(self) -> None:
        positive(self, "curriculum", "ramp_updates", "steps")
        choice(self, "curriculum", "mode", RampMode)


@dataclass
class LoadRampConfig(RampConfig):
    name: str = "load_ramp"
    start_qps: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "curriculum", "start_qps")


@dataclass
class RewardRampConfig(RampConfig):
    name: str = "reward_ramp"
    start_clip: float = 2.0
    start_threshold_scale: float = 1.5

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "curriculum", "start_clip", "start_threshold_scale")


@dataclass
class StagedConfig(CurriculumConfig):
    name: str = "staged"
    stages: List[Dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, st in enumerate(self.stages):
            unknown = sorted(set(st) - {"start", "name", "workload", "reward"})
            check(not unknown, f"curriculum.stages[{i}]",
                  "may only set start, name, workload, reward (the cluster cannot change mid-run)", unknown)
            check(int(st.get("start", 0)) >= 0, f"curriculum.stages[{i}].start", "must be >= 0", st.get("start"))


def check_keeps_workload(cfg: CurriculumConfig) -> None:
    """A multi-cluster run (`slots`, one workload per slot) can only follow a curriculum that never
    changes the workload (load_ramp and staged workload stages do); one line naming `curriculum`."""
    changes = any(st.get("workload") for st in cfg.stages) if isinstance(cfg, StagedConfig) else \
        isinstance(cfg, LoadRampConfig)
    check(not changes, "curriculum", "changes the workload, which slots cannot follow (each slot keeps its own "
          "workload; a reward-only curriculum works)", cfg.name)


class Curriculum:
    """No curriculum: the target workload and reward from the start. `workload` None (a multi-cluster
    run): every stage leaves each env's own workload as it is (`VidurRoutingEnv.configure(workload=None)`)."""

    def __init__(self, cfg: CurriculumConfig, workload: Optional[Mapping[str, Any]], reward: Mapping[str, Any]) -> None:
        if workload is None:
            check_keeps_workload(cfg)
        self.cfg, self.reward = cfg, dict(reward)
        self.workload = None if workload is None else dict(workload)

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

    def __init__(self, cfg: LoadRampConfig, workload, reward) -> None:
        super().__init__(cfg, workload, reward)
        check(self.workload.get("qps") is not None, "curriculum", "=load_ramp needs a workload with a target qps",
              self.workload.get("kind"))
        self.start, self.target = float(cfg.start_qps), float(self.workload["qps"])
        self.ramp, self.mode, self.steps = int(cfg.ramp_updates), cfg.mode, int(cfg.steps)

    def at(self, update):
        out = super().at(update)
        p = _progress(update, self.ramp, self.mode, self.steps)
        out["workload"]["qps"] = round(self.start + (self.target - self.start) * p, 6)
        return out


class RewardRamp(Curriculum):
    """Start forgiving (clip `start_clip`, latency threshold x `start_threshold_scale`) and tighten
    to the reward's own clip and threshold by update `ramp_updates`."""

    def __init__(self, cfg: RewardRampConfig, workload, reward) -> None:
        super().__init__(cfg, workload, reward)
        self.start_clip, self.start_scale = float(cfg.start_clip), float(cfg.start_threshold_scale)
        self.ramp, self.mode, self.steps = int(cfg.ramp_updates), cfg.mode, int(cfg.steps)

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

    def __init__(self, cfg: StagedConfig, workload, reward) -> None:
        super().__init__(cfg, workload, reward)
        self.stages = sorted((dict(s) for s in cfg.stages), key=lambda s: int(s.get("start", 0)))

    def at(self, update):
        out = super().at(update)
        for s in self.stages:
            if int(s.get("start", 0)) <= update:
                out["workload"].update(dict(s.get("workload") or {}))
                out["reward"].update(dict(s.get("reward") or {}))
        return out


CURRICULA = {"none": (CurriculumConfig, Curriculum), "load_ramp": (LoadRampConfig, LoadRamp),
             "reward_ramp": (RewardRampConfig, RewardRamp), "staged": (StagedConfig, Staged)}


def make_curriculum(spec: Union[CurriculumConfig, Mapping[str, Any], str, None], workload: Optional[Mapping[str, Any]],
                    reward: Mapping[str, Any]) -> Curriculum:
    """The curriculum of a config over the target workload and reward specs (plain mappings); workload
    None: each env keeps its own (multi-cluster runs)."""
    return build(CURRICULA, spec, "none", "curriculum", workload, reward)
