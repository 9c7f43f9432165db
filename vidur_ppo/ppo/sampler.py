"""Rollouts with a copy of the policy inside each worker process, next to its envs.

Why: a lock-stepped vector env waits for its slowest worker at every decision, and one decision's
simulation work is very uneven here (coefficient of variation ~5), so two lock-stepped workers
reached at most ~1.35x one env (experiments/results/bench_env.md). A worker that runs the policy
itself steps its envs back to back and only meets the learner once per rollout: each rollout,
the learner sends the current weights, every worker collects `T` steps for its envs with its own
seeded sampler and returns the arrays a `RolloutBuffer` holds (inputs, recurrent states before
each step, episode starts, actions, log-probs, values, rewards, dones) plus episode statistics.
Episodes, recurrent states and env seeds persist in the workers across rollouts.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from vidur_ppo.vector import close_workers


def _worker(remote, env_kwargs: Mapping[str, Any], num_envs: int, model_spec: Mapping[str, Any],
            num_replicas: int, num_features: int, seed: int) -> None:
    import gymnasium as gym

    from vidur_ppo.env import VidurRoutingEnv
    from vidur_ppo.models import make_model
    from vidur_ppo.ppo.credit import finished_decision_rewards
    from vidur_ppo.ppo.trainer import _finished_episodes
    from vidur_ppo.vector import send_error

    torch.set_num_threads(1)
    envs = None
    try:
        envs = gym.vector.SyncVectorEnv([lambda: VidurRoutingEnv(**env_kwargs) for _ in range(num_envs)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        model = make_model(dict(model_spec), num_replicas, num_features).eval()
        gen = torch.Generator().manual_seed(seed)
        obs = state = starts = None
        ep_return = np.zeros(num_envs)
        while True:
            cmd, data = remote.recv()
            if cmd == "reset":
                obs, _ = envs.reset(seed=data)
                state, starts = model.initial_state(num_envs), torch.ones(num_envs)
                ep_return[:] = 0.0
                remote.send(("ok", None))
            elif cmd == "call":
                name, kwargs = data
                remote.send(("ok", envs.call(name, **kwargs)))
            elif cmd == "collect":
                weights, T = data
                model.load_state_dict(weights)
                out = {k: [] for k in ("feats", "starts", "actions", "logp", "values", "rewards", "dones")}
                states: List[List[torch.Tensor]] = [[] for _ in state]
                parts: Dict[str, List[float]] = {}
                returns, episodes, credits = [], [], []
                for t in range(T):
                    feats = torch.as_tensor(obs["features"])
                    with torch.no_grad():
                        logits, v_norm, new_state = model(feats[None], state, starts[None])
                        log_probs = torch.log_softmax(logits[0], -1)
                        action = torch.multinomial(log_probs.exp(), 1, generator=gen)[:, 0]
                        logp = log_probs.gather(1, action[:, None])[:, 0]
                        value = model.value_norm.denormalize(v_norm[0])
                    for buf, s in zip(states, state):
                        buf.append(s)
                    obs, reward, term, trunc, info = envs.step(action.numpy())
                    done = np.logical_or(term, trunc)
                    for k, v in (("feats", feats), ("starts", starts), ("actions", action), ("logp", logp),
                                 ("values", value), ("rewards", torch.as_tensor(reward, dtype=torch.float32)),
                                 ("dones", torch.as_tensor(done, dtype=torch.float32))):
                        out[k].append(v)
                    for k in [k for k in info if k.startswith("reward/")]:
                        parts.setdefault(k, []).append(float(np.mean(info[k])))
                    ep_return += np.asarray(reward, dtype=float)
                    for i in np.flatnonzero(done):
                        returns.append(float(ep_return[i]))
                        ep_return[i] = 0.0
                    episodes.extend(_finished_episodes(info))
                    credits += [(t, i, arr) for i, arr in finished_decision_rewards(info).items()]
                    state, starts = new_state, torch.as_tensor(done, dtype=torch.float32)
                with torch.no_grad():
                    _, v_norm, _ = model(torch.as_tensor(obs["features"])[None], state, starts[None])
                    last_value = model.value_norm.denormalize(v_norm[0])
                arrays = {k: torch.stack(v) for k, v in out.items()}
                arrays["states"] = tuple(torch.stack(b) for b in states)  # [T, L, k, H]
                arrays["last_value"] = last_value
                remote.send(("ok", {"arrays": arrays, "parts": parts, "returns": returns, "episodes": episodes,
                                    "credits": credits}))
            elif cmd == "close":
                remote.send(("ok", None))
                break
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # noqa: BLE001 - forwarded with its traceback
        send_error(remote)
    finally:
        if envs is not None:
            envs.close()
        remote.close()


class PolicyWorkerSampler:
    """`num_envs` envs in `num_workers` processes, each running its own copy of the policy.

    Offers the pieces of the vector-env API the trainer needs (`num_envs`, `reset(seed=[...])`,
    `call(name, **kwargs)`, `close()`) plus `collect(model, T)`.
    """

    def __init__(self, env_kwargs: Mapping[str, Any], num_envs: int, num_workers: int, model_spec: Mapping[str, Any],
                 num_replicas: int, num_features: int, seed: int = 0) -> None:
        num_workers = max(1, min(num_workers, num_envs))
        self.num_envs = num_envs
        self._sizes = [len(g) for g in np.array_split(np.arange(num_envs), num_workers)]
        self._bounds = np.cumsum([0] + self._sizes)
        ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch/OpenMP state
        self._remotes, self._procs = [], []
        for w, k in enumerate(self._sizes):
            remote, work = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(work, dict(env_kwargs), k, dict(model_spec), num_replicas,
                                                  num_features, seed * 1000 + w), daemon=True)
            p.start()
            work.close()
            self._remotes.append(remote)
            self._procs.append(p)
        self._closed = False

    def _gather(self) -> List[Any]:
        out = []
        for r in self._remotes:
            status, payload = r.recv()
            if status == "error":
                self.close()
                raise RuntimeError(f"a rollout worker failed:\n{payload}")
            out.append(payload)
        return out

    def reset(self, seed: Sequence[int]):
        for w, r in enumerate(self._remotes):
            r.send(("reset", list(seed[self._bounds[w]:self._bounds[w + 1]])))
        self._gather()
        return None, {}

    def call(self, name: str, **kwargs: Any) -> tuple:
        for r in self._remotes:
            r.send(("call", (name, kwargs)))
        return tuple(x for part in self._gather() for x in part)

    def collect(self, model: torch.nn.Module, steps: int) -> Dict[str, Any]:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for r in self._remotes:
            r.send(("collect", (weights, steps)))
        parts = self._gather()
        arrays = {k: torch.cat([p["arrays"][k] for p in parts], dim=1)
                  for k in ("feats", "starts", "actions", "logp", "values", "rewards", "dones")}
        arrays["states"] = tuple(torch.cat([p["arrays"]["states"][i] for p in parts], dim=2)
                                 for i in range(len(parts[0]["arrays"]["states"])))
        arrays["last_value"] = torch.cat([p["arrays"]["last_value"] for p in parts])
        reward_parts: Dict[str, List[float]] = {}
        for p in parts:
            for k, v in p["parts"].items():
                reward_parts.setdefault(k, []).extend(v)
        offsets = np.cumsum([0] + [p["arrays"]["rewards"].shape[1] for p in parts])
        credits = [(t, int(off) + i, arr) for p, off in zip(parts, offsets) for t, i, arr in p["credits"]]
        return {"arrays": arrays, "reward_parts": reward_parts, "credits": credits,
                "returns": [x for p in parts for x in p["returns"]],
                "episodes": [e for p in parts for e in p["episodes"]]}

    def close(self, **_: Any) -> None:
        if self._closed:
            return
        self._closed = True
        close_workers(self._remotes, self._procs)
