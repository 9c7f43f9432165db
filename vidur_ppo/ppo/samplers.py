"""Where rollouts come from: a `Sampler` gives the trainer whole `RolloutBatch`es.

- `VectorEnvSampler`: the policy in this process steps a gymnasium vector env (sync, async or the
  grouped workers of ppo/vector.py), lock-stepped.
- `PolicyWorkerSampler`: a copy of the policy runs inside each worker process, next to its envs.
  Why: a lock-stepped vector env waits for its slowest worker at every decision, and one
  decision's simulation work is very uneven here (coefficient of variation ~5), so two
  lock-stepped workers reached at most ~1.35x one env (experiments/results/bench_env.md). A
  worker that runs the policy itself steps its envs back to back and meets the learner once per
  rollout: the learner sends the weights, each worker runs the same `RolloutCollector.collect`
  with its own seeded generator and returns its `RolloutBatch`. Episodes, recurrent states and
  env seeds persist in the workers across rollouts.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, List, Mapping, Protocol, Sequence, Union

import numpy as np
import torch

from vidur_ppo.ppo.rollout import RolloutBatch, RolloutCollector
from vidur_ppo.ppo.vector import close_workers, per_env, reap_at_exit


class Sampler(Protocol):
    num_envs: int

    def reset(self, seeds: Sequence[int]) -> None: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...

    def collect(self, model: torch.nn.Module, steps: int) -> RolloutBatch: ...

    def call(self, name: str, **kwargs: Any) -> tuple: ...

    def close(self) -> None: ...


class VectorEnvSampler:
    """The policy in this process, stepping a gymnasium vector env (SAME_STEP autoreset)."""

    def __init__(self, envs, model: torch.nn.Module) -> None:
        self.envs, self.num_envs = envs, envs.num_envs
        self.collector = RolloutCollector(envs, model.initial_state)

    def reset(self, seeds: Sequence[int]) -> None:
        self.collector.reset(seeds)

    def state_dict(self) -> Any:
        return self.collector.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.collector.load_state_dict(state)

    def collect(self, model: torch.nn.Module, steps: int) -> RolloutBatch:
        return self.collector.collect(model, steps)

    def call(self, name: str, **kwargs: Any) -> tuple:
        return self.envs.call(name, **kwargs)

    def close(self) -> None:
        self.envs.close()


def _worker(remote, env_kwargs: Sequence[Mapping[str, Any]], model_cfg: Any, num_replicas: int,
            num_features: int, seed: int) -> None:
    """A worker's envs (`env_kwargs`: one per env) and its copy of the policy, serving the sampler's commands."""
    import gymnasium as gym

    from vidur_ppo.models import make_model
    from vidur_ppo.ppo.vector import env_constructors, ignore_interrupts, send_error

    ignore_interrupts()
    torch.set_num_threads(1)
    envs = None
    try:
        envs = gym.vector.SyncVectorEnv(env_constructors(env_kwargs),
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        model = make_model(model_cfg, num_replicas, num_features).eval()
        collector = RolloutCollector(envs, model.initial_state)
        gen = torch.Generator().manual_seed(seed)
        while True:
            cmd, data = remote.recv()
            if cmd == "reset":
                collector.reset(data)
                remote.send(("ok", None))
            elif cmd == "call":
                name, kwargs = data
                remote.send(("ok", envs.call(name, **kwargs)))
            elif cmd == "collect":
                weights, steps = data
                model.load_state_dict(weights)
                remote.send(("ok", collector.collect(model, steps, gen)))
            elif cmd == "state":
                remote.send(("ok", {"collector": collector.state_dict(), "generator": gen.get_state()}))
            elif cmd == "restore":
                collector.load_state_dict(data["collector"])
                gen.set_state(data["generator"])
                remote.send(("ok", None))
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
    """`num_envs` envs in `num_workers` processes, each running its own copy of the policy. `env_kwargs`:
    every env's, or a list with one per slot (env k runs slot k % len(slots), as in `vector.per_env`)."""

    def __init__(self, env_kwargs: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], num_envs: int,
                 num_workers: int, model_cfg: Any, num_replicas: int, num_features: int, seed: int = 0) -> None:
        num_workers = max(1, min(num_workers, num_envs))
        kwargs = per_env(num_envs, [env_kwargs] if isinstance(env_kwargs, Mapping) else list(env_kwargs))
        self.num_envs = num_envs
        self._sizes = [len(g) for g in np.array_split(np.arange(num_envs), num_workers)]
        self._bounds = np.cumsum([0] + self._sizes)
        ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch/OpenMP state
        self._remotes, self._procs = [], []
        for w in range(len(self._sizes)):
            remote, work = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(work, kwargs[self._bounds[w]:self._bounds[w + 1]], model_cfg,
                                                  num_replicas, num_features, seed * 1000 + w), daemon=True)
            p.start()
            work.close()
            self._remotes.append(remote)
            self._procs.append(p)
        self._closed = False
        self._reaper = reap_at_exit(self, self._remotes, self._procs)

    def _gather(self) -> List[Any]:
        out = []
        for r in self._remotes:
            status, payload = r.recv()
            if status == "error":
                self.close()
                raise RuntimeError(f"a rollout worker failed:\n{payload}")
            out.append(payload)
        return out

    def reset(self, seeds: Sequence[int]) -> None:
        for w, r in enumerate(self._remotes):
            r.send(("reset", list(seeds[self._bounds[w]:self._bounds[w + 1]])))
        self._gather()

    def call(self, name: str, **kwargs: Any) -> tuple:
        for r in self._remotes:
            r.send(("call", (name, kwargs)))
        return tuple(x for part in self._gather() for x in part)

    def state_dict(self) -> List[Any]:
        for r in self._remotes:
            r.send(("state", None))
        return self._gather()

    def load_state_dict(self, state: List[Any]) -> None:
        for r, part in zip(self._remotes, state):
            r.send(("restore", part))
        self._gather()

    def collect(self, model: torch.nn.Module, steps: int) -> RolloutBatch:
        t0 = time.perf_counter()
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for r in self._remotes:
            r.send(("collect", (weights, steps)))
        return RolloutBatch.concat(self._gather(), time_env=time.perf_counter() - t0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_workers(self._remotes, self._procs)
        self._reaper.cancel()
