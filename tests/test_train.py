"""End-to-end CLI runs (smoke budgets): outputs, W&B offline files (kill -9, resume and signals: test_resume.py)."""

import csv
import os
import subprocess
import sys
from pathlib import Path


TRAIN = [sys.executable, "-m", "vidur_ppo.train", "logger.progress=false"]


def _updates(run_dir: Path):
    with (run_dir / "metrics.csv").open() as f:
        return [int(r["update"]) for r in csv.DictReader(f)]


def test_smoke_run_with_wandb_offline_writes_everything(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run(TRAIN + ["debug=smoke", "logger=wandb", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("metrics.csv", "events.csv", "eval.csv", "report.md", "checkpoint.pt", "config.yaml", "features.json"):
        assert (tmp_path / name).exists(), name
    assert _updates(tmp_path) == [1, 2]
    assert "| ppo |" in (tmp_path / "report.md").read_text() and "| round_robin |" in out.stdout
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("run-*.wandb")), "W&B offline run files missing"
    assert not (tmp_path / "simulator_output").exists()
    # the end says where the run is; the console stays plain, train.log keeps the run's messages, timestamped
    lines = out.stderr.splitlines()
    assert f"run dir: {tmp_path}" in lines and f"report: {tmp_path / 'report.md'}" in lines
    assert "[INFO]" not in out.stderr + out.stdout
    log = (tmp_path / "train.log").read_text()
    assert "BC warm start from jsq" in log and f"run dir: {tmp_path}" in log and "| round_robin |" in log


def test_resume_of_a_non_run_dir_is_a_clear_error(tmp_path):
    out = subprocess.run(TRAIN + [f"resume={tmp_path}", f"hydra.run.dir={tmp_path}/x"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "not a vidur-ppo run dir" in out.stderr
