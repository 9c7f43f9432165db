"""The recurrent PPO loop (after CleanRL's ppo_atari_lstm.py): take a rollout from a sampler, put
the rewards in place (decision credit, normalisation), compute GAE, update on whole sequence
chunks, log one row per update, checkpoint. `state_dict()` holds everything a resume needs."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from vidur_ppo.ppo.bc import FadingBC
from vidur_ppo.ppo.buffer import RolloutBuffer
from vidur_ppo.ppo.config import PPOConfig
from vidur_ppo.ppo.loss import ppo_loss
from vidur_ppo.ppo.reward_scale import RewardScaler
from vidur_ppo.ppo.rollout import RolloutBatch
from vidur_ppo.ppo.samplers import Sampler
from vidur_ppo.ppo.schedules import EntropySchedule, KLController
from vidur_ppo.routing import credit
from vidur_ppo.routing.rewards import Credit

EPISODE_KEYS = ("e2e_p50", "e2e_p90", "e2e_p99", "ttft_p90", "ttft_p99", "tbt_p99", "throughput_rps",
                "throughput_tps", "imbalance_util_std", "slo_violation_rate", "restarts",
                "safety_latency_triggers", "safety_queue_triggers", "safety_terminated")


class TrainingDiverged(RuntimeError):
    """Something the update computed became NaN/inf; raised before the bad values are used or
    saved, so the last checkpoint is still a good one."""


def _require_finite(ok: bool, what: str, update: int) -> None:
    if not ok:
        raise TrainingDiverged(f"non-finite {what} at update {update}")


def _finite_module(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in list(module.parameters()) + list(module.buffers())
               if t.is_floating_point())


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


def _mean(values: List[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def update_row(batch: RolloutBuffer, rollout: RolloutBatch, feature_names: Optional[List[str]]) -> Dict[str, float]:
    """The rollout's part of an update's metrics row: rewards, finished episodes, feature stats."""
    row = {"reward_mean": float(batch.rewards.mean()), "episode_return": _mean(rollout.returns),
           "episodes": len(rollout.episodes)}
    for k in EPISODE_KEYS:
        row[f"episode/{k}"] = _mean([e[k] for e in rollout.episodes if k in e])
    row.update({k: float(np.mean(v)) for k, v in rollout.reward_parts.items()})
    flat = batch.feats.reshape(-1, batch.feats.shape[-1])
    for i, name in enumerate(feature_names or ()):  # are the features non-zero and evolving?
        row[f"feat/{name}/mean"] = float(flat[:, i].mean())
        row[f"feat/{name}/std"] = float(flat[:, i].std())
    return row


class PPOTrainer:
    def __init__(self, cfg: PPOConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 rng: np.random.Generator, seed_limit: int, reward_credit: Credit = Credit.completion,
                 update_threads: int = 0, fading_bc: Optional[FadingBC] = None,
                 feature_names: Optional[List[str]] = None) -> None:
        self.ppo, self.model, self.opt, self.rng, self.seed_limit = cfg, model, optimizer, rng, seed_limit
        self.reward_credit, self.fading_bc, self.feature_names = reward_credit, fading_bc, feature_names
        self.update_threads = int(update_threads or os.cpu_count() or 1)
        self.update, self.global_step = 0, 0
        self.loss_fn = ppo_loss
        self.entropy = EntropySchedule.from_config(cfg)
        self.kl = KLController.from_config(cfg)
        self.reward_scaler = RewardScaler(cfg.num_envs, cfg.gamma, cfg.normalize_reward)

    # --- state --------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "update": self.update,
                "global_step": self.global_step, "reward_scaler": self.reward_scaler.state_dict(),
                "entropy_schedule": self.entropy.state_dict(), "kl_controller": self.kl.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.update, self.global_step = state["update"], state["global_step"]
        for key, obj in (("reward_scaler", self.reward_scaler), ("entropy_schedule", self.entropy),
                         ("kl_controller", self.kl)):
            if key in state:
                obj.load_state_dict(state[key])

    # --- rollout -> buffer --------------------------------------------------------------------

    def episode_seeds(self, n: int) -> List[int]:
        return [int(s) for s in self.rng.integers(self.seed_limit, size=n)]

    def rewards(self, batch: RolloutBatch) -> torch.Tensor:
        """The rewards PPO learns from: decision credit (if on), then normalisation, in rollout order."""
        raw = batch.rewards
        _require_finite(bool(torch.isfinite(raw).all()), "rewards", self.update + 1)
        if self.reward_credit == Credit.decision:
            raw = credit.assign(raw, batch.credits)
            batch.reward_parts["reward/decision"] = [float(raw.mean())]
        scaled = torch.stack([torch.as_tensor(self.reward_scaler(raw[t].double().numpy(), batch.dones[t].numpy() > 0),
                                              dtype=torch.float32) for t in range(raw.shape[0])])
        _require_finite(bool(torch.isfinite(scaled).all()) and np.isfinite(self.reward_scaler.var),
                        "reward normaliser statistics", self.update + 1)
        return scaled

    def buffer(self, batch: RolloutBatch) -> RolloutBuffer:
        buf = RolloutBuffer.from_batch(batch, self.rewards(batch))
        buf.finish(batch.last_value, self.ppo.gamma, self.ppo.gae_lambda)
        self.global_step += batch.rewards.numel()
        return buf

    # --- update -------------------------------------------------------------------------------

    def learn(self, buf: RolloutBuffer) -> Dict[str, float]:
        # the env workers are idle during the update: let torch use every core, then give them back
        rollout_threads = torch.get_num_threads()
        torch.set_num_threads(self.update_threads)
        try:
            return self._learn(buf)
        finally:
            torch.set_num_threads(rollout_threads)

    def _minibatch_loss(self, mb: Dict[str, Any], ent_coef: float, bc_w: float):
        p = self.ppo
        logits, v_norm, _ = self.model(mb["feats"], mb["state"], mb["starts"])
        _require_finite(bool(torch.isfinite(logits).all()), "policy logits", self.update + 1)
        loss, parts = self.loss_fn(logits, v_norm, mb, self.model.value_norm, p.clip, p.value_coef,
                                   ent_coef, p.clip_value, p.norm_adv, kl_coef=self.kl.penalty)
        if bc_w > 0:
            bc_loss = self.fading_bc.loss(self.model, p.seq_len, max(1, mb["feats"].shape[1]), self.rng)
            loss = loss + bc_w * bc_loss
            parts["bc_loss"] = bc_loss.item()
        _require_finite(bool(torch.isfinite(loss)), f"loss ({loss.item()})", self.update + 1)
        return loss, parts

    def _learn(self, buf: RolloutBuffer) -> Dict[str, float]:
        p = self.ppo
        self.model.value_norm.update(buf.returns)
        _require_finite(_finite_module(self.model.value_norm), "value normaliser statistics", self.update + 1)
        sums: Dict[str, List[float]] = {}
        ent_coef = self.entropy.value(self.update)
        bc_w = self.fading_bc.weight(self.update) if self.fading_bc else 0.0
        epochs_done, stopped = 0, False
        for _ in range(p.epochs):
            for mb in buf.chunks(p.seq_len, p.minibatches, self.rng):
                loss, parts = self._minibatch_loss(mb, ent_coef, bc_w)
                if self.kl.should_stop(parts.get("approx_kl", 0.0)):
                    stopped = True
                    break
                self.opt.zero_grad()
                loss.backward()
                parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), p.max_grad_norm))
                _require_finite(np.isfinite(parts["grad_norm"]), "gradients", self.update + 1)
                self.opt.step()
                for k, v in parts.items():
                    sums.setdefault(k, []).append(v)
            if stopped:
                break
            epochs_done += 1
        _require_finite(_finite_module(self.model), "model parameters", self.update + 1)
        out = {k: float(np.mean(v)) for k, v in sums.items()}
        out["explained_variance"] = explained_variance(buf.values.flatten(), buf.returns.flatten())
        kl = out.get("approx_kl", 0.0)
        out.update({"entropy_coef": ent_coef, "kl_coef": self.kl.penalty, "epochs_done": epochs_done,
                    "early_stopped": int(stopped), "bc_coef": bc_w, "lr": self.opt.param_groups[0]["lr"]})
        self.entropy.observe(out.get("entropy", 0.0))
        self.kl.update(kl)
        new_lr = self.kl.adapt(self.opt.param_groups[0]["lr"], kl)
        for g in self.opt.param_groups:
            g["lr"] = new_lr
        return out

    # --- loop ---------------------------------------------------------------------------------

    def fit(self, sampler: Sampler, log: Callable[[Dict[str, float]], None], save: Callable[[], Any],
            checkpoint_every: int, curriculum=None, on_event: Optional[Callable[..., None]] = None,
            restore: Any = None, stop: Callable[[], bool] = lambda: False) -> bool:
        """Train until `ppo.num_updates`: one rollout and one update per iteration; `log(row)` every
        update, `save()` every `checkpoint_every` updates and at the end. A curriculum stage change
        reconfigures every env and starts fresh episodes under it; `restore` (a sampler state from
        a checkpoint) continues the episodes in flight instead. `stop()` is asked after every
        update: True saves and returns False (the run was stopped before its budget)."""
        stage = None
        while self.update < self.ppo.num_updates:
            specs = curriculum.at(self.update) if curriculum is not None else None
            if stage is None or specs != stage:
                if specs is not None:
                    sampler.call("configure", **specs)
                    switched = stage is not None or (self.update > 0 and specs != curriculum.at(self.update - 1))
                    if switched:
                        on_event and on_event("curriculum", qps=(specs["workload"] or {}).get("qps"),
                                              clip=specs["reward"].get("clip"),
                                              latency_threshold=specs["reward"].get("latency_threshold"))
                if restore is not None:
                    sampler.load_state_dict(restore)
                    restore = None
                else:
                    sampler.reset(self.episode_seeds(sampler.num_envs))
                stage = specs if specs is not None else {}
            t_start = time.perf_counter()
            rollout = sampler.collect(self.model, self.ppo.rollout_steps)
            buf = self.buffer(rollout)
            t_update = time.perf_counter()
            learn = self.learn(buf)
            t_end = time.perf_counter()
            self.update += 1
            row = {"update": self.update, "global_step": self.global_step, **update_row(buf, rollout, self.feature_names)}
            if specs is not None:
                row["curriculum/qps"] = float((specs["workload"] or {}).get("qps") or float("nan"))  # None: per slot
            row.update(learn)
            row.update({"sps": buf.rewards.numel() / (t_end - t_start), "time_env": rollout.time_env,
                        "time_policy": rollout.time_policy, "time_update": t_end - t_update,
                        "time_update_total": t_end - t_start})
            log(row)
            if self.update % checkpoint_every == 0 or self.update == self.ppo.num_updates:
                save()
            elif stop():
                save()
            if stop():
                return False
        return True
