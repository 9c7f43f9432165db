"""Sweeps: Optuna on sqlite (a failing trial is recorded and the sweep goes on), two processes
sharing one study, a multirun aggregated into one table, the Ray launcher when installed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

HERE = Path(__file__).resolve().parent
TINY = ["debug=smoke", "bc.enabled=false", "ppo.vector_mode=sync", "eval.baselines=[round_robin]",
        "logger.progress=false", "ppo.num_updates=1"]


def _train(args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "vidur_ppo.train", "--multirun", *args, *TINY],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_optuna_sweep_on_sqlite_records_a_failed_trial_and_goes_on(tmp_path):
    db = f"sqlite:///{tmp_path}/optuna.db"
    out = _train([f"hydra.searchpath=[file://{HERE}/conf]", "experiment=tune_test", f"hydra.sweeper.storage={db}",
                  f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="tune_test", storage=db)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"][0]
    failed = [t for t in study.trials if t.state.name == "FAIL"][0]
    assert done.params["ppo.gae_lambda"] < 1.0 < failed.params["ppo.gae_lambda"]
    assert done.value > 0  # held-out E2E P99 of the trained policy
    assert "ppo.gae_lambda must be in [0, 1]" in failed.user_attrs["fail_reason"]
    assert Path(done.user_attrs["job_dir"]).is_dir()

    # a trial whose process died stays RUNNING; the next sweep marks it FAIL and adds new trials in new dirs
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = study.ask()
    study._storage.set_trial_system_attr(stale._trial_id, "pid", dead.pid)
    out = _train([f"hydra.searchpath=[file://{HERE}/conf]", "experiment=tune_test", f"hydra.sweeper.storage={db}",
                  f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = optuna.load_study(study_name="tune_test", storage=db).trials
    assert len(trials) == 5 and not [t for t in trials if t.state.name == "RUNNING"]
    assert "process died" in trials[stale.number].user_attrs["fail_reason"]
    assert len({t.user_attrs.get("job_dir") for t in trials if "job_dir" in t.user_attrs}) == 4


def test_two_processes_share_one_study(tmp_path):
    db = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(study_name="shared", storage=db, direction="minimize")  # as a coordinator would
    args = ["experiment=tune_ppo", f"hydra.sweeper.storage={db}", "hydra.sweeper.study_name=shared",
            "hydra.sweeper.n_trials=1", "model=gru"]
    procs = [subprocess.Popen([sys.executable, "-m", "vidur_ppo.train", "--multirun", *args, *TINY,
                               f"hydra.sweep.dir={tmp_path}/worker{i}"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errs)
    study = optuna.load_study(study_name="shared", storage=db)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 2


def test_multirun_aggregates_into_one_table(tmp_path):
    sweep = tmp_path / "sweep"
    out = _train(["experiment=ablate_ppo", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep / "2").mkdir()  # a crashed run: config written, no evaluation
    (sweep / "2" / "config.yaml").write_text((sweep / "0" / "config.yaml").read_text())
    agg = subprocess.run([sys.executable, "-m", "vidur_ppo.eval.aggregate", str(sweep), "--by", "ppo.name",
                          "--out", str(tmp_path / "table.md")], capture_output=True, text=True, timeout=120)
    assert agg.returncode == 0, agg.stderr
    table = (tmp_path / "table.md").read_text()
    assert "| ppo.name=legacy | 1 |" in table and "| ppo.name=adaptive | 1 |" in table
    assert "n/a" in table  # LOR was not evaluated in these runs: said, not shown as NaN
    assert "Failed or unfinished runs" in table and str(sweep / "2") in table


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason="hydra-ray-launcher not installed (pip install -e .[ray])")
def test_ray_launcher_runs_a_two_job_multirun(tmp_path):
    out = _train(["hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "seed=0,1",
                  f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((tmp_path / "sweep").glob("*/eval.csv"))) == 2
