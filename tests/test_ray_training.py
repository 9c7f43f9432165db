"""A training run on Ray (`executor=ray`: BC and DAgger episodes labelled as Ray tasks, the rollout workers as
Ray actors) learns exactly what the same run on local processes learns, and a SIGTERM to its whole process
group (a batch scheduler's stop) still checkpoints the actors' episodes, so `resume=` continues it exactly,
DAgger's effects on the model included."""

import os
import signal
import subprocess
import sys

import pytest
from test_resume import RUN, TRAIN, _group_gone, _numbers, _rows, _start, _wait_rows

pytest.importorskip("ray")

# the policy next to its envs in two workers; BC from 4 teacher episodes and a DAgger round of 2, labelled two at a
# time. After DAgger the model trains on recording its attention (its learner, a TorchPolicy, left it so), and
# debug=smoke's fading BC anchors to the teacher's own episodes: a resumed run must do both as the uninterrupted one
PARALLEL = ["ppo.vector_mode=policy_workers", "ppo.num_workers=2", "bc.enabled=true", "bc.episodes=4",
            "bc.holdout_episodes=1", "bc.dagger_rounds=1", "bc.dagger_episodes=2", "bc.label_workers=2"]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The uninterrupted run on local processes (shielded label workers, policy worker processes)."""
    run_dir = tmp_path_factory.mktemp("local")
    out = subprocess.run(TRAIN + RUN + PARALLEL + [f"hydra.run.dir={run_dir}"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


def test_ray_run_survives_a_group_sigterm_and_resumes_into_the_local_run(local_run, tmp_path):
    proc = _start(tmp_path, *PARALLEL, "executor=ray")
    try:
        _wait_rows(proc, tmp_path, 3)
        os.killpg(proc.pid, signal.SIGTERM)  # Ray's own services are in this group too
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    assert "ray: started a local Ray" in err and "checkpoint in" in err.strip().splitlines()[-1]
    assert _group_gone(proc.pid), "a process of the stopped run (or of its Ray) is still alive"
    assert len(_rows(tmp_path)) < 6
    out = subprocess.run(TRAIN + [f"resume={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ray: started a local Ray" in out.stderr  # the saved executor=ray
    assert _numbers(_rows(tmp_path)) == _numbers(_rows(local_run))  # BC, every rollout and update: the same
    with (local_run / "eval.csv").open() as a, (tmp_path / "eval.csv").open() as b:
        assert a.read() == b.read()


def test_a_local_ray_s_services_leave_a_group_sigterm_to_the_driver():
    """For a driver that traps SIGTERM (training), `executor.connect` starts a local Ray whose GCS and raylet
    have SIGTERM blocked, and gives the caller its SIGTERM handler back: a signal to the process group must not
    take the services (and the object store with them) from a driver that is still writing its checkpoint, nor
    Ray's handler abort it; the driver stops them at exit. (Ray's workers run in process groups of their own.)"""
    code = """
import signal
import ray
from vidur_ppo.executor import ExecutorConfig, connect
def mine(signum, frame):
    pass
signal.signal(signal.SIGTERM, mine)
connect(ExecutorConfig(kind="ray"), 1, traps_sigterm=True)
print("handler", signal.getsignal(signal.SIGTERM) is mine)
node = ray._private.worker._global_node
for kind in ("gcs_server", "raylet"):
    pid = node.all_processes[kind][0].process.pid
    status = open(f"/proc/{pid}/status").read()
    blocked = int(status.split("SigBlk:")[1].split()[0], 16)
    print(kind, bool(blocked & (1 << (15 - 1))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # and the caller's SIGTERM handler is its own again (ray.init installs one that aborts)
    assert out.stdout.split() == ["handler", "True", "gcs_server", "True", "raylet", "True"], out.stdout
