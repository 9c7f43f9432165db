"""Where a suite's jobs run: processes on this machine (`local`, the default) or Ray tasks on
a Ray cluster (`ray`: one started here, or a running one joined by `executor.address`, e.g. after
`ray start --head` or on KubeRay). Either way results come back in job order and a progress callback
fires once per finished job; the jobs are seeded, so both executors give the same results.

A `JobJournal` (one pickle per finished job, under `<suite out dir>/.jobs/`) lets a re-run of an
interrupted suite run only the jobs it lacks; a Ray task whose worker (or node) dies is run again by
Ray itself (`max_retries`). A job that *raises* is not retried: suite jobs report their own failures
(eval/suite.py `safe_suite_job`)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib.util
import logging
import os
import pickle
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from vidur_ppo.checks import ConfigError, StrEnum, check, choice

RAY_INSTALL = "pip install -e '.[ray]'"
JOURNAL_DIR = ".jobs"  # under a suite's output dir


class ExecutorKind(StrEnum):
    local = "local"  # a multiprocessing Pool of `eval.workers` processes (forkserver, worker_context)
    ray = "ray"  # Ray tasks: a local Ray of `num_cpus` CPUs, or the cluster at `address`


def ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (not importable)
        return False


@dataclass
class ExecutorConfig:
    """conf/executor/{local,ray}.yaml: `executor=ray` (and `executor.address=auto` to join a running cluster)."""

    kind: ExecutorKind = ExecutorKind.local
    # ray: a running cluster to join ("auto": the one `ray start` made on this machine; "host:6379"; "ray://host:10001");
    # None: start a local Ray of `num_cpus` CPUs for this process
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # the local Ray's CPUs (None: eval.workers; training: its parallel workers); a joined cluster has its own
    max_retries: int = 3  # ray: a job whose worker process or node died runs again, up to this many times
    journal: bool = True  # finished jobs' results in <suite out dir>/.jobs/: a re-run of an interrupted suite resumes

    def __post_init__(self) -> None:
        choice(self, "executor", "kind", ExecutorKind)
        check(self.max_retries >= 0, "executor.max_retries", "must be >= 0", self.max_retries)
        check(self.num_cpus is None or self.num_cpus > 0, "executor.num_cpus", "must be > 0 (or null: eval.workers)",
              self.num_cpus)
        check(self.address is None or self.kind == ExecutorKind.ray, "executor.address",
              "needs executor=ray (a Ray cluster's address)", self.address)
        check(self.num_cpus is None or self.address is None, "executor.num_cpus",
              "must be null when joining a cluster (executor.address): the cluster's nodes set their CPUs", self.num_cpus)
        if self.kind == ExecutorKind.ray and not ray_installed():
            raise ConfigError(f"executor=ray needs ray, which is not installed: {RAY_INSTALL}")


# ---------------------------------------------------------------------------------------------- journal


def _canonical(obj: Any) -> Any:
    """A job as plain, ordered data whose repr is the same in every process (sets and dicts sorted,
    dataclasses by field, arrays as lists), so its hash names the job across runs."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__, [(f.name, _canonical(getattr(obj, f.name))) for f in dataclasses.fields(obj)])
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return sorted(((repr(_canonical(k)), _canonical(v)) for k, v in obj.items()), key=lambda kv: kv[0])
    if isinstance(obj, (set, frozenset)):
        return sorted(repr(_canonical(v)) for v in obj)
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool, type(None))):
        return obj
    if hasattr(obj, "__dict__"):
        return (type(obj).__name__, _canonical(vars(obj)))
    return repr(obj)


def job_key(fn: Callable, job: Any) -> str:
    """A stable name of (function, job): the same in every process and run of the same suite."""
    text = repr((f"{fn.__module__}.{fn.__qualname__}", _canonical(job)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class JobJournal:
    """Finished jobs' results, one pickle per job named by `job_key`, each written atomically (a temp
    file renamed), so a driver killed at any moment leaves only whole results behind. Results that
    say `failed` are not kept: a re-run tries those jobs again."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)

    def get(self, key: str) -> Optional[Any]:
        try:
            with (self.path / f"{key}.pkl").open("rb") as f:
                return pickle.load(f)
        except (FileNotFoundError, EOFError, pickle.UnpicklingError):
            return None

    def put(self, key: str, result: Any) -> None:
        if isinstance(result, dict) and result.get("failed"):
            return
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{key}.{os.getpid()}.tmp"
        with tmp.open("wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.path / f"{key}.pkl")

    def __len__(self) -> int:
        return len(list(self.path.glob("*.pkl"))) if self.path.is_dir() else 0

    def clear(self) -> None:
        """The suite is written: its journal has served (a later run in this dir starts afresh)."""
        shutil.rmtree(self.path, ignore_errors=True)


# -------------------------------------------------------------------------------------------- executors


def _indexed(fn: Callable, item):
    """(i, fn(job)) in a pool process, so unordered completion can still be put back in job order."""
    i, job = item
    return i, fn(job)


class Executor:
    """Runs `fn` over jobs; results in job order, `progress()` once per finished job (journaled ones too)."""

    def map(self, fn: Callable, jobs: Sequence[Any], progress: Optional[Callable[[], Any]] = None,
            journal: Optional[JobJournal] = None, poll: Optional[Callable[[], Any]] = None) -> List[Any]:
        """`poll()` runs before each wait of at most POLL_S seconds for a job: a caller that traps its stop signals
        raises from it (`StopSignals.check`) and leaving ends the workers, even when a signal to the process
        group already killed them, so a stop is never stuck waiting on a job that will not come back."""
        keys = [job_key(fn, job) for job in jobs] if journal is not None else []
        results: Dict[int, Any] = {}
        if journal is not None:
            for i, key in enumerate(keys):
                res = journal.get(key)
                if res is not None:
                    results[i] = res
                    if progress:
                        progress()
        todo = [(i, job) for i, job in enumerate(jobs) if i not in results]

        def finished(i: int, res: Any) -> None:
            results[i] = res
            if journal is not None:
                journal.put(keys[i], res)
            if progress:
                progress()

        if todo:
            self._run(fn, todo, finished, poll or (lambda: None))
        return [results[i] for i in range(len(jobs))]

    def _run(self, fn: Callable, todo: List[tuple], finished: Callable[[int, Any], None],
             poll: Callable[[], Any]) -> None:
        raise NotImplementedError


POLL_S = 0.5  # how often `map` asks its caller's `poll` while it waits for jobs

#: what the local workers' fork server imports once (torch, vidur and the jobs' modules)
PRELOAD = ["torch", "vidur_ppo.eval.suite", "vidur_ppo.eval.headroom"]


def worker_context():
    """A forkserver context whose server imports PRELOAD once per process: every pool's workers fork from
    it in milliseconds instead of importing torch and vidur anew (~5 s of CPU per spawned worker, three
    pools per suite), and like spawned ones inherit nothing of the parent (the server is a fresh
    interpreter that ran no job)."""
    from multiprocessing import get_context

    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _adopt_environment(environ: Dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(environ)


class LocalExecutor(Executor):
    """`workers` processes on this machine, forked from a fresh fork server (no state of the parent leaks
    into a job)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))

    def _run(self, fn, todo, finished, poll) -> None:
        from multiprocessing import TimeoutError as Pending

        # the fork server kept the environment of its start: each worker takes this process's current one,
        # as a spawned worker would (VIDUR_PPO_CACHE_DIR, set after the server started, must reach the jobs)
        with worker_context().Pool(min(self.workers, len(todo)), initializer=_adopt_environment,
                                   initargs=(dict(os.environ),)) as pool:  # leaving terminates the workers
            results = pool.imap_unordered(functools.partial(_indexed, fn), todo)
            for _ in todo:
                while True:
                    poll()
                    try:
                        i, res = results.next(timeout=POLL_S)
                        break
                    except Pending:
                        pass
                finished(i, res)


def _serve_jobs(remote, fn: Callable) -> None:
    """A `ShieldedExecutor` worker: (index, job) in, ("ok", (index, result)) out, until told to stop (None)."""
    from vidur_ppo.ppo.vector import ignore_interrupts, send_error

    ignore_interrupts()
    try:
        while (item := remote.recv()) is not None:
            i, job = item
            remote.send(("ok", (i, fn(job))))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    except Exception:  # noqa: BLE001 - forwarded with its traceback
        send_error(remote)


class ShieldedExecutor(Executor):
    """`workers` spawned processes that ignore SIGINT and SIGTERM, for a caller that traps them and stops in
    order (training's BC labelling): a signal to the process group (Ctrl-C, `timeout`, a batch scheduler)
    leaves the workers to the caller, which at its next `poll` raises and kills them, so a stop neither waits
    on a job nor leaves a process behind. (`LocalExecutor`'s pool dies with the group, the fork server too;
    a suite resumes from its journal.)"""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))

    def _run(self, fn, todo, finished, poll) -> None:
        from multiprocessing import get_context
        from multiprocessing.connection import wait

        ctx, queue, procs, remotes, busy = get_context("spawn"), list(todo), [], [], {}
        try:
            for _ in range(min(self.workers, len(todo))):
                remote, work = ctx.Pipe()
                proc = ctx.Process(target=_serve_jobs, args=(work, fn), daemon=True)
                proc.start()
                work.close()
                procs.append(proc)
                remotes.append(remote)
                busy[remote] = proc
                remote.send(queue.pop(0))
            while busy:
                ready = wait([*busy, *(p.sentinel for p in busy.values())], timeout=POLL_S)
                poll()
                for remote in [r for r in busy if r in ready or busy[r].sentinel in ready]:
                    if not remote.poll():
                        busy[remote].join(1)  # its pipe closes a moment before it can be reaped
                        raise RuntimeError(f"a worker process died (exit code {busy[remote].exitcode})")
                    status, payload = remote.recv()
                    if status == "error":
                        raise RuntimeError(f"a job failed in its worker:\n{payload}")
                    finished(*payload)
                    job = queue.pop(0) if queue else None  # None: no more work, the worker ends
                    try:
                        remote.send(job)
                    except (BrokenPipeError, OSError):
                        raise RuntimeError("a worker process died between jobs") from None
                    if job is None:
                        del busy[remote]
        finally:
            for proc in procs:  # they ignore SIGTERM: leaving early (a stop, an error) kills them
                if proc.is_alive() and busy:
                    proc.kill()
                proc.join()
            for remote in remotes:
                remote.close()


def _call(fn: Callable, job: Any) -> Any:
    return fn(job)


class RayExecutor(Executor):
    """Each job a Ray task of one CPU; a task whose worker or node died is resubmitted by Ray
    (`max_retries`), an exception raised by the job is not (`retry_exceptions=False`)."""

    def __init__(self, cfg: ExecutorConfig, workers: int) -> None:
        self.cfg, self.workers = cfg, max(1, int(workers))

    def _run(self, fn, todo, finished, poll) -> None:
        ray = connect(self.cfg, self.workers)
        task = ray.remote(_call).options(num_cpus=1, max_retries=self.cfg.max_retries, retry_exceptions=False)
        fn_ref = ray.put(fn)
        index = {task.remote(fn_ref, job): i for i, job in todo}
        pending = list(index)
        try:
            while pending:
                poll()
                done, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                for ref in done:
                    finished(index[ref], ray.get(ref))
        finally:
            for ref in pending:  # left early (a stop, an error): the jobs still out are not wanted
                ray.cancel(ref, force=True)


def connect(cfg: ExecutorConfig, workers: int, traps_sigterm: bool = False):
    """Ray, initialised once per process: joins `cfg.address`, or starts a local Ray of `num_cpus`
    (default `workers`) CPUs; quiet (no dashboard, Ray's own logging at warnings) but for one line."""
    import ray

    if ray.is_initialized():
        return ray
    # the jobs' own stderr (a failed scenario's traceback) still reaches the driver, prefixed by Ray
    quiet = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    # `ray.init` installs Ray's own SIGTERM handler, which aborts the driver with no checkpoint: the caller's
    # handlers (training's StopSignals) are put back before a signal that came meanwhile is let through.
    # `traps_sigterm` (training): the local Ray starts with SIGTERM blocked, so its services (GCS, raylet), which
    # inherit the mask and share the driver's process group, outlive a SIGTERM sent to the group and the driver,
    # stopping in order, shuts them down at exit (~4 s more: Ray waits a second on each before SIGKILL). Not for a
    # driver that dies of SIGTERM (vidur-ppo-evaluate): the services would die with it, their agents not.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM} if traps_sigterm else set())
    try:
        if cfg.address:
            ray.init(address=cfg.address, **quiet)
        else:
            ray.init(num_cpus=cfg.num_cpus or workers, **quiet)
    finally:
        for s, handler in handlers.items():
            if handler is not None:
                signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if cfg.address:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        print(f"ray: joined the cluster at {cfg.address} ({len(ray.nodes())} nodes, {cpus} CPUs)", file=sys.stderr)
    else:
        print(f"ray: started a local Ray with {cfg.num_cpus or workers} CPUs", file=sys.stderr)
    return ray


def make_executor(executor: Union[int, ExecutorConfig, Executor, None], workers: int = 1,
                  shielded: bool = False) -> Executor:
    """The one dispatch: a worker count (the callers of `run_jobs` before executors existed) is the local
    executor; an ExecutorConfig its kind; an Executor itself. `shielded`: local workers that leave the
    process group's stop signals to the caller (`ShieldedExecutor`)."""
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, ExecutorConfig) and executor.kind == ExecutorKind.ray:
        return RayExecutor(executor, workers)
    if isinstance(executor, int):
        workers = executor
    return ShieldedExecutor(workers) if shielded else LocalExecutor(workers)
