"""A two-node Ray cluster on loopback (`ray start --head` + `ray start --address=...`, one CPU each, in a
temp dir of its own): a suite run with `executor=ray executor.address=...` whose worker node is killed
mid-suite still gives the local executor's metrics.csv (Ray resubmits the lost jobs), and a driver
killed mid-suite leaves a journal from which a re-run runs only the missing jobs; a training run whose worker
node dies mid-PPO stops with one line and resumes exactly. Run by `make test-cluster` (`pytest -m ray_cluster`;
deselected by default: it takes about a minute and a half)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vidur_ppo.eval.suite import CSV_FLOAT_FORMAT, EvalConfig, run_jobs, run_suite, suite_jobs
from vidur_ppo.executor import JOURNAL_DIR, ExecutorConfig, JobJournal, connect

psutil = pytest.importorskip("psutil")
ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray_cluster

RAY = str(Path(sys.executable).with_name("ray"))
SUITE = dict(scenarios=[{"name": "r2", "num_replicas": 2, "qps_per_replica": 3.0},
                        {"name": "r3", "num_replicas": 3, "qps_per_replica": 3.0}],
             seeds=3, num_requests=60, baselines=["round_robin", "jsq", "lor"], workers=2)
# a loopback test cluster needs no token (Ray 2.5x turns token authentication on by default)
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list:
    """Every port a node binds, free ones: two nodes on one machine (and any other Ray here) never clash."""
    return [arg for flag in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                             "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
            for arg in (flag, str(_free_port()))]


def _processes(temp: str):
    """The processes of this test's cluster: those whose command line names its temp dir."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in arg for arg in p.info["cmdline"] or []):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _kill_tree(procs) -> None:
    everything = {p.pid: p for p in procs}
    for p in procs:
        try:
            everything.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    for p in everything.values():
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(everything.values()), timeout=10)


def _start_worker_node(address: str, temp: str, ports=None) -> str:
    """A worker node of one CPU joining `address`; its node-manager port."""
    ports = ports or _node_ports()
    subprocess.run([RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                    f"--temp-dir={temp}", *ports], check=True, capture_output=True, timeout=120)
    return ports[1]


@pytest.fixture(scope="module")
def cluster():
    """(address, the worker node's node-manager port, temp dir). Stopped by killing exactly its own processes:
    `ray stop` would stop every Ray on this machine, other users' and other tests' too."""
    temp = tempfile.mkdtemp(prefix="vpray", dir="/tmp")  # short: Ray's socket paths must stay under 108 chars
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    head = _free_port()
    worker_ports = _node_ports()
    try:
        subprocess.run([RAY, "start", "--head", f"--port={head}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                        "--include-dashboard=false", f"--temp-dir={temp}", "--ray-client-server-port", str(_free_port()),
                        "--dashboard-port", str(_free_port()), "--disable-usage-stats", *_node_ports()],
                       check=True, capture_output=True, timeout=120)
        _start_worker_node(f"127.0.0.1:{head}", temp, worker_ports)
        yield f"127.0.0.1:{head}", worker_ports[1], temp
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _kill_tree(_processes(temp))
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def local_metrics(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("local")
    run_suite({}, EvalConfig(**SUITE), out)
    return (out / "metrics.csv").read_bytes()


def _worker_raylet(temp: str, node_manager_port: str):
    return [p for p in _processes(temp) if p.name() == "raylet"
            and f"--node_manager_port={node_manager_port}" in p.cmdline()]


def test_a_killed_worker_node_leaves_the_report_unchanged(cluster, local_metrics, tmp_path):
    address, port, temp = cluster
    executor = ExecutorConfig(kind="ray", address=address)
    connect(executor, 1)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    raylet = _worker_raylet(temp, port)
    assert len(raylet) == 1
    killed = []

    def kill_the_worker_node_once() -> None:
        if not killed:  # the first job is back, the others are running on both nodes or waiting
            _kill_tree(raylet)
            killed.append(time.time())

    _, failed = run_suite({}, EvalConfig(**SUITE), tmp_path, progress=kill_the_worker_node_once, executor=executor)
    assert killed and not failed
    assert not any(p.is_running() for p in raylet)
    assert (tmp_path / "metrics.csv").read_bytes() == local_metrics


DRIVER = """
import sys
from vidur_ppo.eval.suite import EvalConfig, run_jobs, suite_jobs
from vidur_ppo.executor import ExecutorConfig, JobJournal
ev = EvalConfig(**{suite!r})
run_jobs(suite_jobs({{}}, ev), ExecutorConfig(kind="ray", address={address!r}), journal=JobJournal({journal!r}))
"""


def test_a_killed_driver_resumes_from_its_journal(cluster, local_metrics, tmp_path):
    import pandas as pd

    address = cluster[0]
    journal = tmp_path / JOURNAL_DIR
    driver = subprocess.Popen([sys.executable, "-c", DRIVER.format(suite=SUITE, address=address, journal=str(journal))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while len(JobJournal(journal)) < 2 and driver.poll() is None and time.time() < deadline:
            time.sleep(0.2)
    finally:
        driver.kill()
        driver.wait()
    ev = EvalConfig(**SUITE)
    jobs = suite_jobs({}, ev)
    before = {f.name: f.stat().st_ino for f in journal.glob("*.pkl")}
    assert 2 <= len(before) < len(jobs)  # killed mid-suite, after some jobs finished
    results = run_jobs(jobs, ExecutorConfig(kind="ray", address=address), journal=JobJournal(journal))
    after = {f.name: f.stat().st_ino for f in journal.glob("*.pkl")}
    assert len(after) == len(jobs) and all(after[k] == ino for k, ino in before.items())  # never re-run, never rewritten
    rows = pd.DataFrame([r for res in results for r in res["rows"]])
    assert rows.to_csv(index=False, float_format=CSV_FLOAT_FORMAT).encode() == local_metrics


def test_training_whose_worker_node_dies_stops_with_one_line_and_resumes_exactly(cluster, tmp_path):
    """A training run on the cluster (`executor.address`: BC labelled as Ray tasks, two rollout actors, one per
    node) loses its worker node mid-PPO: it stops with one line naming the last checkpoint and `resume=`; resumed
    once the cluster has a second node again, it writes every row of the same run on local processes."""
    from test_resume import RUN, TRAIN, _numbers, _rows, _start, _wait_rows
    from test_ray_training import PARALLEL

    address, _, temp = cluster
    if ray.is_initialized():
        ray.shutdown()  # this process's driver (the tests above) would hold the cluster's CPUs
    port = _start_worker_node(address, temp)  # a fresh worker node: an earlier test killed the first
    local = tmp_path / "local"
    out = subprocess.run(TRAIN + RUN + PARALLEL + [f"hydra.run.dir={local}"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "cluster"
    proc = _start(run_dir, *PARALLEL, "executor=ray", f"executor.address={address}")
    try:
        _wait_rows(proc, run_dir, 3)  # past the checkpoint at update 2
        _kill_tree(_worker_raylet(temp, port))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 1, err[-3000:]
    assert "a rollout worker (Ray actor) died" in last and f"resume={run_dir}" in last and "Traceback" not in err
    _start_worker_node(address, temp)
    out = subprocess.run(TRAIN + [f"resume={run_dir}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _numbers(_rows(run_dir)) == _numbers(_rows(local))
