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
- `RayPolicyWorkerSampler`: the same workers as Ray actors, so a run's rollouts can use a Ray
  cluster's CPUs. One `PolicyWorker` class is the worker of both; same seeds, same weights: the
  same rollouts and the same `state_dict` (a run checkpointed with one resumes with the other).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing as mp
import re
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import torch

from vidur_ppo.ppo.rollout import RolloutBatch, RolloutCollector
from vidur_ppo.ppo.vector import close_workers, per_env, reap_at_exit

if TYPE_CHECKING:
    from vidur_ppo.executor import ExecutorConfig

log = logging.getLogger(__name__)


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


class PolicyWorker:
    """One rollout worker: its envs (`env_kwargs`, one per env), its copy of the policy, the collector and
    the seeded generator its actions are drawn with. Written once for both transports: a process's
    command loop (`_worker`) and a Ray actor (`RayPolicyWorkerSampler`) call these same methods."""

    def __init__(self, env_kwargs: Sequence[Mapping[str, Any]], model_cfg: Any, num_replicas: int,
                 num_features: int, seed: int) -> None:
        import gymnasium as gym

        from vidur_ppo.models import make_model
        from vidur_ppo.ppo.vector import env_constructors

        torch.set_num_threads(1)
        self.model = make_model(model_cfg, num_replicas, num_features).eval()
        self.envs = gym.vector.SyncVectorEnv(env_constructors(env_kwargs),
                                             autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.collector = RolloutCollector(self.envs, self.model.initial_state)
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self, seeds: Sequence[int]) -> None:
        self.collector.reset(seeds)

    def call(self, name: str, kwargs: Mapping[str, Any]) -> tuple:
        return self.envs.call(name, **kwargs)

    def collect(self, weights: Mapping[str, torch.Tensor], steps: int) -> RolloutBatch:
        self.model.load_state_dict(weights)
        return self.collector.collect(self.model, steps, self.generator)

    def state(self) -> Dict[str, Any]:
        return {"collector": self.collector.state_dict(), "generator": self.generator.get_state()}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.collector.load_state_dict(state["collector"])
        self.generator.set_state(state["generator"])

    def close(self) -> None:
        self.envs.close()


COMMANDS = ("reset", "call", "collect", "state", "restore")  # the PolicyWorker methods a sampler calls


def _worker(remote, *args: Any) -> None:
    """A worker process: `PolicyWorker(*args)` serving the sampler's (method, args) commands."""
    from vidur_ppo.ppo.vector import ignore_interrupts, send_error

    ignore_interrupts()
    worker = None
    try:
        worker = PolicyWorker(*args)
        while True:
            cmd, data = remote.recv()
            if cmd == "close":
                remote.send(("ok", None))
                break
            if cmd not in COMMANDS:
                raise ValueError(f"unknown command {cmd!r}")
            remote.send(("ok", getattr(worker, cmd)(*data)))
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # noqa: BLE001 - forwarded with its traceback
        send_error(remote)
    finally:
        if worker is not None:
            worker.close()
        remote.close()


class _WorkerSampler:
    """The `Sampler` API over PolicyWorkers, whatever carries the calls (`_run`). The split of envs into
    contiguous groups, each worker's seed (`seed * 1000 + w`) and the state format live here only, so
    every transport gives the same rollouts and reads the others' checkpoints."""

    def _split(self, env_kwargs: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], num_envs: int,
               num_workers: int, model_cfg: Any, num_replicas: int, num_features: int, seed: int) -> List[tuple]:
        """Each worker's `PolicyWorker` arguments."""
        num_workers = max(1, min(num_workers, num_envs))
        kwargs = per_env(num_envs, [env_kwargs] if isinstance(env_kwargs, Mapping) else list(env_kwargs))
        self.num_envs, self._closed = num_envs, False
        self._bounds = np.cumsum([0] + [len(g) for g in np.array_split(np.arange(num_envs), num_workers)])
        return [(group, model_cfg, num_replicas, num_features, seed * 1000 + w)
                for w, group in enumerate(self._groups(kwargs))]

    @property
    def num_workers(self) -> int:
        return len(self._bounds) - 1

    def _groups(self, items: Sequence[Any]) -> List[Any]:
        return [items[lo:hi] for lo, hi in zip(self._bounds[:-1], self._bounds[1:])]

    def _run(self, cmd: str, args: Sequence[tuple]) -> List[Any]:
        """`PolicyWorker.<cmd>(*args[w])` on every worker w at once; their results in worker order."""
        raise NotImplementedError

    def _share(self, weights: Dict[str, torch.Tensor]) -> Any:
        """The weights as sent to every worker."""
        return weights

    def reset(self, seeds: Sequence[int]) -> None:
        self._run("reset", [(list(s),) for s in self._groups(list(seeds))])

    def call(self, name: str, **kwargs: Any) -> tuple:
        return tuple(x for part in self._run("call", [(name, kwargs)] * self.num_workers) for x in part)

    def state_dict(self) -> List[Any]:
        return self._run("state", [()] * self.num_workers)

    def load_state_dict(self, state: List[Any]) -> None:
        if not isinstance(state, (list, tuple)) or len(state) != self.num_workers:
            n = len(state) if isinstance(state, (list, tuple)) else "no"
            raise ValueError(f"the sampler state holds {n} rollout workers' states, this sampler has "
                             f"{self.num_workers}: resume with the checkpoint's ppo.vector_mode and ppo.num_workers")
        self._run("restore", [(part,) for part in state])

    def collect(self, model: torch.nn.Module, steps: int) -> RolloutBatch:
        t0 = time.perf_counter()
        weights = self._share({k: v.detach().clone() for k, v in model.state_dict().items()})
        parts = self._run("collect", [(weights, steps)] * self.num_workers)
        return RolloutBatch.concat(parts, time_env=time.perf_counter() - t0)


class PolicyWorkerSampler(_WorkerSampler):
    """`num_envs` envs in `num_workers` processes, each running its own copy of the policy. `env_kwargs`:
    every env's, or a list with one per slot (env k runs slot k % len(slots), as in `vector.per_env`)."""

    def __init__(self, env_kwargs: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], num_envs: int,
                 num_workers: int, model_cfg: Any, num_replicas: int, num_features: int, seed: int = 0) -> None:
        workers = self._split(env_kwargs, num_envs, num_workers, model_cfg, num_replicas, num_features, seed)
        ctx = mp.get_context("spawn")  # a fresh interpreter: no forked torch/OpenMP state
        self._remotes, self._procs = [], []
        for args in workers:
            remote, work = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(work, *args), daemon=True)
            p.start()
            work.close()
            self._remotes.append(remote)
            self._procs.append(p)
        self._reaper = reap_at_exit(self, self._remotes, self._procs)

    def _run(self, cmd: str, args: Sequence[tuple]) -> List[Any]:
        for r, a in zip(self._remotes, args):
            r.send((cmd, a))
        out = []
        for r in self._remotes:
            status, payload = r.recv()
            if status == "error":
                self.close()
                raise RuntimeError(f"a rollout worker failed:\n{payload}")
            out.append(payload)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close_workers(self._remotes, self._procs)
        self._reaper.cancel()


WORKER_DIED = "a rollout worker (Ray actor) died: its process or node is gone"


class RolloutWorkerDied(RuntimeError):
    """A lost worker, not a bug: the run ends with one line naming its last checkpoint (train.py)."""


def _plain(ray_message: str) -> str:
    """Ray's error text without its terminal colours (it ends up in train.log)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", ray_message)


@functools.lru_cache(maxsize=None)
def _actor_class():
    import ray

    return ray.remote(num_cpus=1)(PolicyWorker)


class RayPolicyWorkerSampler(_WorkerSampler):
    """PolicyWorkerSampler's workers as Ray actors (one CPU each), on the Ray of `executor` (a local Ray,
    or the cluster at `executor.address`; an already initialised Ray is used as it is): a run's rollouts
    on a cluster's CPUs. Same arguments, rollouts and state as PolicyWorkerSampler."""

    def __init__(self, env_kwargs: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]], num_envs: int,
                 num_workers: int, model_cfg: Any, num_replicas: int, num_features: int, seed: int = 0,
                 executor: Optional[ExecutorConfig] = None) -> None:
        from vidur_ppo.executor import ExecutorConfig, ExecutorKind, connect

        workers = self._split(env_kwargs, num_envs, num_workers, model_cfg, num_replicas, num_features, seed)
        ray = connect(executor or ExecutorConfig(kind=ExecutorKind.ray), len(workers))
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < len(workers):  # an actor without a free CPU waits (for an autoscaler) rather than failing
            log.warning("%d rollout actors of one CPU each on a Ray of %g CPUs: the rest wait for free CPUs",
                        len(workers), cpus)
        self.actors = [_actor_class().remote(*args) for args in workers]

    def _share(self, weights: Dict[str, torch.Tensor]) -> Any:
        import ray

        return ray.put(weights)  # stored once, read by every actor

    def _run(self, cmd: str, args: Sequence[tuple]) -> List[Any]:
        import ray

        refs = [getattr(actor, cmd).remote(*a) for actor, a in zip(self.actors, args)]
        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as exc:
            self.close()
            if exc.actor_init_failed:  # its __init__ raised: a bug or a bad config, not a lost worker
                raise RuntimeError(f"a rollout worker failed:\n{_plain(exc.error_msg)}") from None
            raise RolloutWorkerDied(f"{WORKER_DIED} (Ray: {_plain(exc.error_msg).splitlines()[0]})") from None
        except ray.exceptions.RayTaskError as exc:  # the method raised; its text holds the actor's traceback
            self.close()
            raise RuntimeError(f"a rollout worker failed:\n{_plain(str(exc))}") from None

    def close(self) -> None:
        """Kills the actors: their envs hold nothing to release (gymnasium's no-op `close`)."""
        if self._closed:
            return
        self._closed = True
        import ray

        if ray.is_initialized():
            for actor in self.actors:
                ray.kill(actor)
