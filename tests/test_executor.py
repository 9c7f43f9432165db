"""Where suite jobs run (vidur_ppo/executor.py): the Ray executor gives the local executor's metrics.csv,
a job whose Ray worker is killed runs again with the same result, a journal of finished jobs makes a
re-run run only the missing ones, and `executor=...` is checked like every other config group. One
local Ray (2 CPUs) serves the whole module; the suites are tiny (one scenario, two seeds, 40 requests)."""

import sys

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vidur_ppo import CONF_DIR
from vidur_ppo.checks import ConfigError
from vidur_ppo.config import register_configs
from vidur_ppo.eval.suite import CSV_FLOAT_FORMAT, EvalConfig, run_jobs, run_suite, safe_suite_job, suite_jobs
from vidur_ppo.executor import (JOURNAL_DIR, ExecutorConfig, JobJournal, LocalExecutor, RayExecutor, ShieldedExecutor,
                                job_key, make_executor)
from vidur_ppo.evaluate import output_dir

import executor_jobs
from executor_jobs import die_once, environment_variable, recorded, sleep_for

ray = pytest.importorskip("ray")

TINY = dict(scenarios=[{"name": "r2", "num_replicas": 2, "qps_per_replica": 3.0}], seeds=2, num_requests=40,
            baselines=["round_robin", "jsq"], workers=2)
RAY = ExecutorConfig(kind="ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (the executor joins it: `connect` reuses an initialised Ray). Ray workers
    cannot import the tests' modules: their job functions travel by value."""
    ray.cloudpickle.register_pickle_by_value(executor_jobs)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_suite(tmp_path_factory):
    """The tiny suite on the local executor: its config and output dir (metrics.csv, report.md)."""
    ev = EvalConfig(**TINY)
    out = tmp_path_factory.mktemp("local")
    run_suite({}, ev, out)
    return ev, out


def _metrics(results) -> bytes:
    """Jobs' results as run_suite writes them into metrics.csv."""
    rows = pd.DataFrame([r for res in results for r in res["rows"]])
    return rows.to_csv(index=False, float_format=CSV_FLOAT_FORMAT).encode()


def test_ray_gives_the_local_executors_metrics(local_ray, local_suite, tmp_path):
    ev, local = local_suite
    done = []
    text, failed = run_suite({}, ev, tmp_path, progress=lambda: done.append(1), executor=RAY)
    assert not failed and len(done) == len(suite_jobs({}, ev)) == 2
    assert (tmp_path / "metrics.csv").read_bytes() == (local / "metrics.csv").read_bytes()
    assert (tmp_path / "report.md").read_text() == (local / "report.md").read_text()
    assert not (tmp_path / JOURNAL_DIR).exists() and not (local / JOURNAL_DIR).exists()  # cleared once written


def test_a_killed_ray_worker_is_retried_with_the_same_result(local_ray, local_suite, tmp_path):
    ev, local = local_suite
    marker = tmp_path / "killed"
    jobs = [(str(marker), job) for job in suite_jobs({}, ev)]
    results = run_jobs(jobs, RayExecutor(ExecutorConfig(kind="ray", max_retries=2), 2), fn=die_once)
    assert marker.exists()  # a worker did die
    assert _metrics(results) == (local / "metrics.csv").read_bytes()


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_journal_runs_only_the_missing_jobs(kind, local_ray, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    jobs = [(str(runs), s) for s in range(4)]
    journal = JobJournal(tmp_path / JOURNAL_DIR)
    for job in jobs[:2]:  # the jobs a killed driver had finished
        journal.put(job_key(recorded, job), recorded(job))
    for f in runs.iterdir():
        f.unlink()
    progress = []
    results = make_executor(ExecutorConfig(kind=kind), 2).map(recorded, jobs, lambda: progress.append(1), journal)
    assert results == [{"seed": s, "square": s * s} for s in range(4)]
    assert sorted(f.name for f in runs.iterdir()) == ["2", "3"] and len(progress) == 4
    assert len(journal) == 4


def test_an_interrupted_suite_resumes_from_its_journal(local_ray, local_suite, tmp_path):
    ev, local = local_suite
    jobs = suite_jobs({}, ev)
    first = run_jobs(jobs[:1], RayExecutor(RAY, 2))[0]  # what job 0 returns: the journal of a killed driver holds it
    marked = {**first, "rows": [{**r, "scheduler": f"{r['scheduler']}_journal"} for r in first["rows"]]}
    marked_dir = tmp_path / "marked"  # job 0's journaled result is read back, never re-run: its rows carry the mark
    JobJournal(marked_dir / JOURNAL_DIR).put(job_key(safe_suite_job, jobs[0]), marked)
    run_suite({}, ev, marked_dir, executor=RAY)
    rows = pd.read_csv(marked_dir / "metrics.csv")
    assert set(rows[rows.seed == jobs[0][2]].scheduler) == {"round_robin_journal", "jsq_journal"}
    assert set(rows[rows.seed == jobs[1][2]].scheduler) == {"round_robin", "jsq"}

    resumed = tmp_path / "resumed"  # a true interrupted suite: the journal holds what the job returned
    JobJournal(resumed / JOURNAL_DIR).put(job_key(safe_suite_job, jobs[0]), first)
    run_suite({}, ev, resumed, executor=RAY)
    assert (resumed / "metrics.csv").read_bytes() == (local / "metrics.csv").read_bytes()


def test_local_workers_see_the_environment_of_the_moment_not_the_fork_servers(monkeypatch):
    """Local workers fork from a fork server started once per process (executor.worker_context); a variable set
    after it started (VIDUR_PPO_CACHE_DIR in a test, a user's script) still reaches the jobs, as with spawn."""
    run_jobs(["VIDUR_PPO_TEST_VAR"], 1, fn=environment_variable)  # the fork server is running from here on
    monkeypatch.setenv("VIDUR_PPO_TEST_VAR", "set later")
    assert run_jobs(["VIDUR_PPO_TEST_VAR"] * 2, 2, fn=environment_variable) == ["set later"] * 2


def test_job_keys_are_stable_and_tell_jobs_apart(local_suite):
    ev, _ = local_suite
    a, b = suite_jobs({}, ev)
    assert job_key(safe_suite_job, a) == job_key(safe_suite_job, suite_jobs({}, EvalConfig(**TINY))[0])
    assert len({job_key(safe_suite_job, a), job_key(safe_suite_job, b), job_key(recorded, a)}) == 3


def _compose(app: str, *overrides: str):
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(app, overrides=list(overrides))


@pytest.mark.parametrize("app", ["evaluate"])
def test_executor_is_a_config_group_of_evaluate(app):
    cfg = OmegaConf.to_object(_compose(app, "executor=ray", "executor.address=auto").executor)
    assert (cfg.kind, cfg.address, cfg.max_retries, cfg.journal) == ("ray", "auto", 3, True)
    assert isinstance(make_executor(cfg, 2), RayExecutor)
    assert isinstance(make_executor(OmegaConf.to_object(_compose(app).executor), 2), LocalExecutor)
    assert isinstance(make_executor(2), LocalExecutor)  # run_jobs(jobs, ev.workers): the callers before executors


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "dask"}, "executor.kind must be one of ['local', 'ray'], got 'dask'"),
    ({"kind": "ray", "max_retries": -1}, "executor.max_retries must be >= 0, got -1"),
    ({"kind": "ray", "num_cpus": 0}, "executor.num_cpus must be > 0 (or null: eval.workers), got 0"),
    ({"address": "auto"}, "executor.address needs executor=ray (a Ray cluster's address), got 'auto'"),
])
def test_bad_executor_values_are_one_line_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError) as err:
        ExecutorConfig(**kwargs)
    assert str(err.value) == message


def test_executor_ray_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as err:
        ExecutorConfig(kind="ray")
    assert str(err.value) == "executor=ray needs ray, which is not installed: pip install -e '.[ray]'"
    assert ExecutorConfig().kind == "local"  # the local executor never needs it


def test_a_taken_default_dir_with_a_journal_is_named_for_resuming(tmp_path, capsys):
    first = output_dir(None, False, tmp_path, "s")
    (first / JOURNAL_DIR).mkdir()
    assert output_dir(None, False, tmp_path, "s") == tmp_path / "evaluate_s-2"
    assert f"evaluate_s holds an interrupted suite: out={first} resumes it" in capsys.readouterr().err


class _Stop(Exception):
    pass


@pytest.mark.parametrize("kind", ["local", "shielded", "ray"])
def test_a_raising_poll_ends_the_wait_and_the_jobs_within_a_poll(kind, local_ray):
    """A trainer stopping (its poll raises `StopRequested`) must not wait for jobs still out: each executor asks
    the poll while it waits, and leaving ends its workers (local: the pool's; shielded: killed, as they ignore
    SIGTERM; Ray: the tasks cancelled)."""
    import multiprocessing
    import time

    executor = {"local": LocalExecutor(2), "shielded": ShieldedExecutor(2), "ray": RayExecutor(RAY, 2)}[kind]
    polls = []

    def poll():
        polls.append(time.perf_counter())
        if len(polls) == 3:
            raise _Stop

    t0 = time.perf_counter()
    with pytest.raises(_Stop):
        executor.map(sleep_for, [60, 60, 60], poll=poll)
    assert time.perf_counter() - t0 < 20  # spawning the workers included; the jobs would take 90 s
    if kind == "ray":  # the cancelled tasks' workers gave their CPUs back
        deadline = time.time() + 20
        while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) == 2
    else:
        assert not multiprocessing.active_children()  # every local worker ended and reaped
