"""A run with a DAgger warm start, killed mid-PPO and resumed, reproduces the uninterrupted run exactly: DAgger's
learner leaves the model recording its attention maps, which changes its training kernel, and the resumed model
must train the same way (train.py sets it again after a DAgger warm start); and fading BC (debug=smoke's ppo=adaptive)
anchors to the teacher's own episodes, which a resume re-collects, not to DAgger's labels."""

import os
import signal
import subprocess

from test_resume import RUN, TRAIN, _numbers, _rows, _start, _wait_rows

DAGGER = ["bc.enabled=true", "bc.episodes=2", "bc.holdout_episodes=1", "bc.dagger_rounds=1", "bc.dagger_episodes=1"]


def test_a_dagger_run_killed_mid_ppo_resumes_exactly(tmp_path):
    reference = tmp_path / "reference"
    out = subprocess.run(TRAIN + RUN + DAGGER + [f"hydra.run.dir={reference}"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "killed"
    proc = _start(run_dir, *DAGGER)
    try:
        _wait_rows(proc, run_dir, 3)  # past the checkpoint at update 2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = subprocess.run(TRAIN + [f"resume={run_dir}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _numbers(_rows(run_dir)) == _numbers(_rows(reference))
