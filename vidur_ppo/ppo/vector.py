"""A vector env with several envs per worker process (gymnasium has one env per process).

Why: measured in experiments/bench_env.py, one routing decision costs ~0.7 ms of simulation
with a coefficient of variation of ~5 (some decisions run many batch iterations), and a
gymnasium `AsyncVectorEnv` round trip costs ~0.25 ms. Lock-stepping one env per process
therefore wastes most of a second core: two workers reached ~1.1x one env. Giving each worker a
group of envs (stepped by gymnasium's own `SyncVectorEnv`, so reset/autoreset semantics are
gymnasium's) amortises the round trip over the group and averages the uneven work.

The public API is gymnasium's `VectorEnv` (either autoreset mode, infos in the vector-env
format with `_key` masks), so training code does not know which vector env it drives.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import SyncVectorEnv
from gymnasium.vector.utils import batch_space


def send_error(remote) -> None:
    """In a worker process: forward the current exception, with its traceback, to the parent."""
    try:
        remote.send(("error", traceback.format_exc()))
    except (BrokenPipeError, EOFError):
        pass


def close_workers(remotes: Sequence, procs: Sequence, terminate: bool = False) -> None:
    """Ask each live worker to close (unless `terminate`), then join it, killing stragglers."""
    for remote, proc in zip(remotes, procs):
        if not terminate and proc.is_alive():
            try:
                remote.send(("close", None))
                remote.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        remote.close()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()  # it ignores SIGTERM (`ignore_interrupts`)


def reap_at_exit(owner: Any, remotes: Sequence, procs: Sequence):
    """Workers ignore SIGTERM, so multiprocessing's exit (SIGTERM, then join) would wait on any left
    open: close them first, at exit or when `owner` is collected. `.cancel()` it after a close."""
    from multiprocessing.util import Finalize

    return Finalize(owner, close_workers, args=(remotes, procs, True), exitpriority=10)


def ignore_interrupts() -> None:
    """In a worker process: Ctrl-C (and a SIGTERM sent to the process group) reaches every process;
    only the parent acts on it (one message, a checkpoint, then it closes its workers in order)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _worker(remote, parent_remote, env_fns: Sequence[Callable[[], gym.Env]], autoreset_mode) -> None:
    ignore_interrupts()
    parent_remote.close()
    envs = None
    try:
        envs = SyncVectorEnv(list(env_fns), autoreset_mode=autoreset_mode)
        while True:
            cmd, data = remote.recv()
            if cmd == "step":
                remote.send(("ok", envs.step(data)))
            elif cmd == "reset":
                remote.send(("ok", envs.reset(**data)))
            elif cmd == "spaces":
                remote.send(("ok", (envs.single_observation_space, envs.single_action_space, envs.metadata)))
            elif cmd == "call":
                name, args, kwargs = data
                remote.send(("ok", envs.call(name, *args, **kwargs)))
            elif cmd == "set_attr":
                name, values = data
                remote.send(("ok", envs.set_attr(name, values)))
            elif cmd == "close":
                remote.send(("ok", None))
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except (KeyboardInterrupt, EOFError):
        pass
    except Exception:  # noqa: BLE001 - forwarded to the parent with its traceback
        send_error(remote)
    finally:
        if envs is not None:
            envs.close()
        remote.close()


def _cat(parts: List[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {k: _cat([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts, axis=0)


def _empty_like_info(value: Any, n: int) -> Any:
    if isinstance(value, dict):
        return {k: _empty_like_info(v, n) for k, v in value.items()}
    value = np.asarray(value)
    return np.zeros((n,) + value.shape[1:], dtype=value.dtype)


def _merge_infos(parts: List[Dict[str, Any]], sizes: List[int]) -> Dict[str, Any]:
    """Concatenate per-worker vector infos; a key absent in one worker gets zeros (mask False)."""
    keys: Dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            keys.setdefault(k, v)
    out = {}
    for k, proto in keys.items():
        chunks = []
        for p, n in zip(parts, sizes):
            if k in p:
                chunks.append(p[k])
            else:
                chunks.append(_empty_like_info(proto, n))
        if isinstance(proto, dict):
            out[k] = _merge_infos(chunks, sizes)
        else:
            out[k] = np.concatenate([np.asarray(c) for c in chunks], axis=0)
    return out


class GroupedAsyncVectorEnv(gym.vector.VectorEnv):
    """`num_envs` envs in `num_workers` processes, each stepping its group with SyncVectorEnv."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], num_workers: int = 2,
                 context: Optional[str] = None,
                 autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP) -> None:
        if not 1 <= num_workers <= len(env_fns):
            raise ValueError(f"num_workers must be in [1, {len(env_fns)}], got {num_workers}")
        self.num_envs = len(env_fns)
        groups = np.array_split(np.arange(self.num_envs), num_workers)
        self._sizes = [len(g) for g in groups]
        self._bounds = np.cumsum([0] + self._sizes)
        ctx = mp.get_context(context)
        self._remotes, self._procs = [], []
        for g in groups:
            remote, work_remote = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(work_remote, remote, [env_fns[i] for i in g], autoreset_mode), daemon=True)
            proc.start()
            work_remote.close()
            self._remotes.append(remote)
            self._procs.append(proc)
        self._closed = False
        self._reaper = reap_at_exit(self, self._remotes, self._procs)
        self._remotes[0].send(("spaces", None))
        self.single_observation_space, self.single_action_space, self.metadata = self._recv(self._remotes[0])
        self.metadata = dict(self.metadata or {}, autoreset_mode=autoreset_mode)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def _recv(self, remote):
        status, payload = remote.recv()
        if status == "error":
            self.close(terminate=True)
            raise RuntimeError(f"an env worker failed:\n{payload}")
        return payload

    def _gather(self):
        return [self._recv(r) for r in self._remotes]

    def reset(self, *, seed: Optional[int | Sequence[Optional[int]]] = None, options: Optional[dict] = None):
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        for w, remote in enumerate(self._remotes):
            lo, hi = self._bounds[w], self._bounds[w + 1]
            remote.send(("reset", {"seed": seeds[lo:hi], "options": options}))
        parts = self._gather()
        return _cat([p[0] for p in parts]), _merge_infos([p[1] for p in parts], self._sizes)

    def step(self, actions):
        actions = np.asarray(actions)
        for w, remote in enumerate(self._remotes):
            remote.send(("step", actions[self._bounds[w]:self._bounds[w + 1]]))
        parts = self._gather()
        obs = _cat([p[0] for p in parts])
        rewards, terms, truncs = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
        return obs, rewards, terms, truncs, _merge_infos([p[4] for p in parts], self._sizes)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple:
        for remote in self._remotes:
            remote.send(("call", (name, args, kwargs)))
        return tuple(x for part in self._gather() for x in part)

    def set_attr(self, name: str, values: Any) -> None:
        """gymnasium's set_attr: one value for every env, or a list with one per env."""
        values = list(values) if isinstance(values, (list, tuple)) else [values] * self.num_envs
        for w, remote in enumerate(self._remotes):
            remote.send(("set_attr", (name, values[self._bounds[w]:self._bounds[w + 1]])))
        self._gather()

    def close_extras(self, terminate: bool = False, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        close_workers(self._remotes, self._procs, terminate)
        self._reaper.cancel()


def per_env(num_envs: int, slots: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """Each env's kwargs from each slot's: env k runs slot k % len(slots) (multi-cluster training,
    build.slot_specs; one slot: every env alike)."""
    return [slots[k % len(slots)] for k in range(num_envs)]


def env_constructors(env_kwargs: Sequence[Mapping[str, Any]]) -> List[Callable[[], gym.Env]]:
    """One env constructor per env kwargs."""
    from vidur_ppo.routing.env import VidurRoutingEnv

    return [functools.partial(VidurRoutingEnv, **kw) for kw in env_kwargs]


def make_vector_env(
    num_envs: int,
    mode: str = "grouped",
    num_workers: int = 2,
    autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP,
    slots: Sequence[Mapping[str, Any]] = (),
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """N independent envs of `env_kwargs`, or with `slots` (env kwargs per slot) env k of slot k % len(slots).

    mode: "sync" (one process), "async" (gymnasium, one process per env) or "grouped"
    (`num_workers` processes, each stepping num_envs/num_workers envs; fastest here, see
    `vidur_ppo.ppo.vector`).
    """
    fns = env_constructors(per_env(num_envs, slots or [env_kwargs]))
    if mode == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=autoreset_mode)
    if mode == "async":
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False, autoreset_mode=autoreset_mode)
    if mode == "grouped":
        return GroupedAsyncVectorEnv(fns, num_workers=min(num_workers, num_envs), autoreset_mode=autoreset_mode)
    raise ValueError(f"vector env mode={mode!r}; choose sync, async or grouped")
