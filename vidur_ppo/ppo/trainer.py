"""The recurrent PPO loop (after CleanRL's ppo_atari_lstm.py): collect a rollout from N envs,
compute GAE, update on whole sequence chunks, log one CSV row per update, checkpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch.distributions import Categorical

from vidur_ppo import checkpoint
from vidur_ppo.ppo import credit
from vidur_ppo.ppo.buffer import RolloutBuffer
from vidur_ppo.ppo.loss import ppo_loss
from vidur_ppo.ppo.reward_scale import RewardScaler
from vidur_ppo.ppo.schedules import EntropySchedule, KLController, bc_weight

EPISODE_KEYS = ("e2e_p50", "e2e_p90", "e2e_p99", "ttft_p90", "ttft_p99", "tbt_p99", "throughput_rps",
                "throughput_tps", "imbalance_util_std", "slo_violation_rate", "restarts",
                "safety_latency_triggers", "safety_queue_triggers", "safety_terminated")


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the last good checkpoint is kept."""


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = target.var()
    return float("nan") if var == 0 else float(1 - (target - pred).var() / var)


def _finished_episodes(info: Dict[str, Any]) -> List[Dict[str, float]]:
    """Episode summaries of the envs that finished this step (SAME_STEP autoreset infos)."""
    fi = info.get("final_info")
    if not fi or "episode_metrics" not in fi:
        return []
    mask, m = fi["_episode_metrics"], fi["episode_metrics"]
    return [{k: float(m[k][i]) for k in m if not k.startswith("_")} for i in np.flatnonzero(mask)]


class PPOTrainer:
    def __init__(self, cfg, envs, model, optimizer, logger, run_dir: Path, rng: np.random.Generator,
                 seed_limit: int, start_update: int = 0, global_step: int = 0,
                 checkpoint_extra: Optional[Callable[[], Dict[str, Any]]] = None, curriculum=None,
                 feature_names: Optional[List[str]] = None, reward_scaler_state: Optional[Dict[str, float]] = None) -> None:
        self.cfg, self.ppo = cfg, cfg.ppo
        self.envs, self.model, self.opt, self.logger = envs, model, optimizer, logger
        self.run_dir, self.rng, self.seed_limit = Path(run_dir), rng, seed_limit
        self.update, self.global_step = start_update, global_step
        self.checkpoint_extra = checkpoint_extra or (lambda: {})
        self.loss_fn = ppo_loss
        self.num_envs = envs.num_envs
        self.curriculum = curriculum
        self._specs = None
        self.feature_names = feature_names
        p = self.ppo
        g = lambda k, d: getattr(p, k, d)  # noqa: E731 - older configs lack the strategy fields
        self.entropy = EntropySchedule(g("entropy_schedule", "constant"), p.entropy_coef, g("entropy_end", 0.0),
                                       g("entropy_decay_updates", 0) or p.num_updates, g("target_entropy", None),
                                       g("entropy_lr", 0.05))
        self.kl = KLController(g("kl_control", "none"), g("target_kl", 0.1), g("kl_coef", 0.2),
                               g("early_stop_factor", 1.5), g("kl_adapt_lr", False))
        self.bc_coef, self.bc_fade = g("bc_coef", 0.0), g("bc_fade_updates", 0)
        self.bc_demos = None
        self.reward_scaler = RewardScaler(self.num_envs, self.ppo.gamma, bool(getattr(self.ppo, "normalize_reward", False)))
        if reward_scaler_state:
            self.reward_scaler.load_state_dict(reward_scaler_state)
        self.update_threads = int(getattr(cfg, "torch_threads_update", 0) or os.cpu_count() or 1)

    # --- rollout -----------------------------------------------------------------------------

    def _reset_envs(self):
        seeds = [int(s) for s in self.rng.integers(self.seed_limit, size=self.num_envs)]
        obs, _ = self.envs.reset(seed=seeds)
        return obs

    def _final_rewards(self, raw: torch.Tensor, dones: torch.Tensor, credits, stats: Dict[str, Any]) -> torch.Tensor:
        """Decision credit (if on), then reward normalisation, step by step in rollout order."""
        if getattr(self.ppo, "credit", "completion") == "decision":
            raw = credit.assign(raw, credits)
            stats["reward_parts"]["reward/decision"] = [float(raw.mean())]
        return torch.stack([torch.as_tensor(self.reward_scaler(raw[t].double().numpy(), dones[t].numpy() > 0),
                                            dtype=torch.float32) for t in range(raw.shape[0])])

    def collect(self, obs, state, starts, buf: RolloutBuffer, stats: Dict[str, Any]):
        T = self.ppo.rollout_steps
        credits: List[credit.Credit] = []
        for t in range(T):
            feats = torch.as_tensor(obs["features"])
            t0 = time.perf_counter()
            with torch.no_grad():
                logits, v_norm, new_state = self.model(feats[None], state, starts[None])
                dist = Categorical(logits=logits[0])
                action = dist.sample()
                logp = dist.log_prob(action)
                value = self.model.value_norm.denormalize(v_norm[0])
            t1 = time.perf_counter()
            obs, reward, term, trunc, info = self.envs.step(action.numpy())
            stats["time_env"] += time.perf_counter() - t1
            stats["time_policy"] += t1 - t0
            done_np = np.logical_or(term, trunc)
            done = torch.as_tensor(done_np, dtype=torch.float32)
            raw = torch.as_tensor(np.asarray(reward, dtype=np.float64), dtype=torch.float32)
            buf.add(t, feats, state, starts, action, logp, value, raw, done)  # scaled below
            credits += [(t, i, arr) for i, arr in credit.finished_decision_rewards(info).items()]
            for k in [k for k in info if k.startswith("reward/")]:
                stats["reward_parts"].setdefault(k, []).append(float(np.mean(info[k])))
            self._ep_return += np.asarray(reward, dtype=float)
            for i in np.flatnonzero(done.numpy()):
                stats["returns"].append(float(self._ep_return[i]))
                self._ep_return[i] = 0.0
            stats["episodes"].extend(_finished_episodes(info))
            state, starts = new_state, done
        buf.rewards = self._final_rewards(buf.rewards, buf.dones, credits, stats)
        with torch.no_grad():
            _, v_norm, _ = self.model(torch.as_tensor(obs["features"])[None], state, starts[None])
            last_value = self.model.value_norm.denormalize(v_norm[0])
        self.global_step += T * self.num_envs
        return obs, state, starts, last_value

    def collect_in_workers(self, stats: Dict[str, Any]) -> RolloutBuffer:
        """A rollout from a `PolicyWorkerSampler` (the policy runs next to the envs)."""
        T = self.ppo.rollout_steps
        t0 = time.perf_counter()
        res = self.envs.collect(self.model, T)
        stats["time_env"] += time.perf_counter() - t0
        a = res["arrays"]
        buf = RolloutBuffer(T, self.num_envs, a["feats"].shape[2:], tuple(s[0] for s in a["states"]))
        buf.feats, buf.starts, buf.actions, buf.logp, buf.values = a["feats"], a["starts"], a["actions"], a["logp"], a["values"]
        buf.states, buf.dones = a["states"], a["dones"]
        stats["reward_parts"] = res["reward_parts"]
        buf.rewards = self._final_rewards(a["rewards"], a["dones"], res.get("credits", []), stats)
        stats["returns"], stats["episodes"] = res["returns"], res["episodes"]
        buf.finish(a["last_value"], self.ppo.gamma, self.ppo.gae_lambda)
        self.global_step += T * self.num_envs
        return buf

    # --- update ------------------------------------------------------------------------------

    def learn(self, buf: RolloutBuffer) -> Dict[str, float]:
        # the env workers are idle during the update: let torch use every core, then give them back
        rollout_threads = torch.get_num_threads()
        torch.set_num_threads(self.update_threads)
        try:
            return self._learn(buf)
        finally:
            torch.set_num_threads(rollout_threads)

    def _learn(self, buf: RolloutBuffer) -> Dict[str, float]:
        p = self.ppo
        self.model.value_norm.update(buf.returns)
        sums: Dict[str, List[float]] = {}
        ent_coef = self.entropy.value(self.update)
        bc_w = bc_weight(self.bc_coef, self.bc_fade, self.update) if self.bc_demos else 0.0
        epochs_done, stopped = 0, False
        for _ in range(p.epochs):
            for mb in buf.chunks(p.seq_len, p.minibatches, self.rng):
                logits, v_norm, _ = self.model(mb["feats"], mb["state"], mb["starts"])
                loss, parts = self.loss_fn(logits, v_norm, mb, self.model.value_norm, p.clip, p.value_coef,
                                           ent_coef, p.clip_value, p.norm_adv, kl_coef=self.kl.penalty)
                if bc_w > 0:
                    from vidur_ppo.bc import demo_loss

                    bc_loss = demo_loss(self.model, self.bc_demos, p.seq_len, max(1, mb["feats"].shape[1]), self.rng)
                    loss = loss + bc_w * bc_loss
                    parts["bc_loss"] = bc_loss.item()
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"non-finite loss ({loss.item()}) at update {self.update + 1}: training stopped; "
                        f"the last good checkpoint is {self.run_dir / checkpoint.CHECKPOINT}"
                    )
                if self.kl.should_stop(parts.get("approx_kl", 0.0)):
                    stopped = True
                    break
                self.opt.zero_grad()
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), p.max_grad_norm)
                self.opt.step()
                parts["grad_norm"] = float(grad_norm)
                for k, v in parts.items():
                    sums.setdefault(k, []).append(v)
            if stopped:
                break
            epochs_done += 1
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

    # --- loop --------------------------------------------------------------------------------

    def save(self) -> Path:
        return checkpoint.save(self.run_dir, {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "update": self.update,
            "global_step": self.global_step, "rng": checkpoint.rng_state(self.rng),
            "reward_scaler": self.reward_scaler.state_dict(), "entropy_schedule": self.entropy.state_dict(),
            "kl_controller": self.kl.state_dict(), **self.checkpoint_extra(),
        })

    def _apply_curriculum(self) -> bool:
        """Reconfigure every env when the curriculum's stage changes; True if it did."""
        if self.curriculum is None:
            return False
        specs = self.curriculum.at(self.update)
        if specs == self._specs:
            return False
        first = self._specs is None
        self.envs.call("configure", **specs)
        self._specs = specs
        if not first or self.update > 0:
            self.logger.event("curriculum", self.update, qps=specs["workload"].get("qps"),
                              clip=specs["reward"].get("clip"), latency_threshold=specs["reward"].get("latency_threshold"))
        return True

    def run(self, progress=None) -> None:
        p = self.ppo
        in_workers = hasattr(self.envs, "collect")  # PolicyWorkerSampler: workers keep obs and state
        self._apply_curriculum()
        obs = self._reset_envs()
        state = self.model.initial_state(self.num_envs)
        starts = torch.ones(self.num_envs)
        self._ep_return = np.zeros(self.num_envs)
        while self.update < p.num_updates:
            if self._apply_curriculum():  # a new stage: every env starts a fresh episode under it
                obs = self._reset_envs()
                state = self.model.initial_state(self.num_envs)
                starts = torch.ones(self.num_envs)
                self._ep_return = np.zeros(self.num_envs)
            t_start = time.perf_counter()
            stats: Dict[str, Any] = {"time_env": 0.0, "time_policy": 0.0, "returns": [], "episodes": [],
                                     "reward_parts": {}}
            if in_workers:
                buf = self.collect_in_workers(stats)
            else:
                buf = RolloutBuffer(p.rollout_steps, self.num_envs, obs["features"].shape[1:], state)
                obs, state, starts, last_value = self.collect(obs, state, starts, buf, stats)
                buf.finish(last_value, p.gamma, p.gae_lambda)
            t_update = time.perf_counter()
            learn = self.learn(buf)
            t_end = time.perf_counter()
            self.update += 1
            row = {"update": self.update, "global_step": self.global_step,
                   "reward_mean": float(buf.rewards.mean()),
                   "episode_return": float(np.mean(stats["returns"])) if stats["returns"] else float("nan"),
                   "episodes": len(stats["episodes"])}
            for k in EPISODE_KEYS:
                vals = [e[k] for e in stats["episodes"] if k in e]
                row[f"episode/{k}"] = float(np.mean(vals)) if vals else float("nan")
            for k, v in stats["reward_parts"].items():
                row[k] = float(np.mean(v))
            if self.feature_names:  # are the features non-zero and evolving?
                flat = buf.feats.reshape(-1, buf.feats.shape[-1])
                for i, name in enumerate(self.feature_names):
                    row[f"feat/{name}/mean"] = float(flat[:, i].mean())
                    row[f"feat/{name}/std"] = float(flat[:, i].std())
            if self._specs is not None:
                row["curriculum/qps"] = float(self._specs["workload"].get("qps") or float("nan"))
            row.update(learn)
            wall = t_end - t_start
            row.update({"sps": p.rollout_steps * self.num_envs / wall, "time_env": stats["time_env"],
                        "time_policy": stats["time_policy"], "time_update": t_end - t_update, "time_update_total": wall})
            self.logger.log(row)
            if self.update % self.cfg.checkpoint_every == 0 or self.update == p.num_updates:
                self.save()
            if progress:
                progress(row)
