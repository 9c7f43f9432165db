"""Nothing lost or corrupted: kill -9 at any update and `resume=` reproduce the uninterrupted run
exactly; SIGTERM / Ctrl-C checkpoint and exit 128+n (during BC too); every option of every group
resumes; a run dir has one writer (checked inside the kill and signal tests: each start costs ~5 s of
imports); divergence stops with one line and a finite checkpoint."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli

TRAIN = [sys.executable, "-m", "vidur_ppo.train", "logger.progress=false"]
# 40-step rollouts of 60-request episodes: checkpoints fall inside episodes (replayed on resume)
RUN = ["debug=smoke", "ppo.num_updates=6", "checkpoint_every=2", "ppo.rollout_steps=40", "eval.baselines=[round_robin]"]


def _rows(run_dir: Path):
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _numbers(rows, skip=("sps",)):
    return [{k: v for k, v in r.items() if not k.startswith("time") and k not in skip} for r in rows]


def _start(run_dir: Path, *extra):
    return subprocess.Popen(TRAIN + RUN + list(extra) + [f"hydra.run.dir={run_dir}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_rows(proc, run_dir: Path, n: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run_dir / "metrics.csv").exists() and len(_rows(run_dir)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before update {n}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"no update {n} within {timeout} s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    out = subprocess.run(TRAIN + RUN + [f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


@pytest.mark.parametrize("kill_after", [4])  # mid-run of 6 updates; one kill point keeps CI under its 10 min
def test_kill_9_then_resume_equals_the_uninterrupted_run(reference, tmp_path, kill_after):
    proc = _start(tmp_path)
    try:
        _wait_rows(proc, tmp_path, kill_after)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # a run dir has one writer: a new run into the killed run's dir takes the stale lock, not the dir
    out = subprocess.run(TRAIN + RUN + [f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "already holds a run" in out.stderr, out.stderr[-2000:]
    out = subprocess.run(TRAIN + [f"resume={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _numbers(_rows(tmp_path)) == _numbers(_rows(reference))  # every row once, every number equal
    with (reference / "eval.csv").open() as a, (tmp_path / "eval.csv").open() as b:
        assert a.read() == b.read()
    assert (tmp_path / ".resume_hydra").is_dir()  # Hydra's files of the resume, not a stray outputs/ dir


def test_resume_applies_budget_overrides_and_refuses_the_rest(reference, tmp_path):
    out = subprocess.run(TRAIN + [f"resume={reference}", "ppo.lr=1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "ppo.lr cannot change" in out.stderr
    ckpt = torch.load(reference / "checkpoint.pt", weights_only=False)
    assert ckpt["update"] == 6
    out = subprocess.run(TRAIN + [f"resume={reference}", "ppo.num_updates=7"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [int(r["update"]) for r in _rows(reference)] == [1, 2, 3, 4, 5, 6, 7]
    events = (reference / "events.csv").read_text()
    assert "ppo.num_updates=7" in events and "curriculum" not in events


def _said(err: str, sig) -> int:
    """How many "SIGTERM: stopping ..." lines (one per process that acted on the signal)."""
    return sum(ln.startswith(f"{signal.Signals(sig).name}: stopping") for ln in err.splitlines())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_and_exits_128_plus_n(tmp_path, sig):
    proc = _start(tmp_path, "ppo.num_updates=50", "checkpoint_every=100")
    _wait_rows(proc, tmp_path, 2)
    if sig == signal.SIGINT:  # a run dir has one writer: a second run into it while this one lives is refused
        out = subprocess.run(TRAIN + RUN + [f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and f"in use by process {proc.pid}" in out.stderr, out.stderr[-2000:]
    os.killpg(proc.pid, sig)  # to the whole group, as Ctrl-C, `timeout` or a batch scheduler send it: env workers too
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err and f"resume={tmp_path}" in err.strip().splitlines()[-1]
    assert _said(err, sig) == 1, err[-2000:]  # the trainer says it once; its workers say nothing
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["update"] == len(_rows(tmp_path)) >= 2


DIVERGING = [["ppo.lr=1e6"], ["ppo=legacy", "reward.bonus=1e30", "reward.clip=1e30", "reward.penalty_max=1e30"]]


def test_divergence_stops_with_one_line_and_a_finite_checkpoint(tmp_path):
    dirs = [tmp_path / str(i) for i in range(len(DIVERGING))]
    results = run_cli([("vidur_ppo.train", ["debug=smoke", "ppo.num_updates=6", "logger.progress=false", *overrides,
                                            f"hydra.run.dir={d}"]) for overrides, d in zip(DIVERGING, dirs)])
    for overrides, run_dir, (code, err) in zip(DIVERGING, dirs, results):
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 3 and lines[-1].startswith("training diverged: ") and "non-finite" in lines[-1], (overrides, lines[-3:])
        assert "at update" in lines[-1] and "Traceback" not in err
        ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
        tensors = list(ckpt["model"].values())
        assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
        assert "diverged" in (run_dir / "events.csv").read_text()


def _label_workers_busy(proc, n: int, timeout: float = 240) -> None:
    """Wait until the run has `n` label workers (bc.label_workers=n) and spawn's resource tracker under it."""
    import psutil

    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if len(psutil.Process(proc.pid).children(recursive=True)) >= n + 1:
            return
        time.sleep(0.05)
    pytest.fail(f"no {n} label workers within {timeout} s: {proc.poll()}")


def _group_gone(pgid: int, timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_during_bc_stops_there_and_resume_runs_bc_again(tmp_path):
    # the legacy pipeline, BC from 20 teacher episodes labelled by two local workers (seconds); SIGTERM to the
    # whole group while they label: the workers ignore it (ShieldedExecutor), the trainer's next poll (within
    # half a second) ends the labelling and kills them, and no process of the run is left behind
    proc = _start(tmp_path, "experiment=legacy", "bc.episodes=20", "bc.label_workers=2", "ppo.num_updates=1")
    _label_workers_busy(proc, 2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert _group_gone(proc.pid), "a process of the stopped run is still alive"
    assert _said(err, signal.SIGTERM) == 1 and "Traceback" not in err
    assert "BC warm start" not in err and not (tmp_path / "checkpoint.pt").exists()  # stopped inside BC
    assert f"continue with: python -m vidur_ppo.train resume={tmp_path}" in err.strip().splitlines()[-1]
    out = subprocess.run(TRAIN + [f"resume={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BC warm start from jsq" in out.stderr  # BC ran again, from the start, then PPO and the evaluation
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["update"] == 1
    log = (tmp_path / "train.log").read_text()  # both invocations' messages, in the run dir's own log
    assert "SIGTERM: stopping" in log and "BC warm start from jsq" in log and f"report: {tmp_path}" in log
    assert not list((tmp_path / ".resume_hydra").rglob("train.log"))


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    from vidur_ppo.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _saved_run(run_dir: Path, *overrides):
    """A run dir's config.yaml as a run writes it (RunState); returns the saved config."""
    from vidur_ppo.rundir import RunState

    return RunState(run_dir, _compose(*overrides), ["f"], 2).config


def _options(group):
    conf = Path(__file__).resolve().parents[1] / "conf" / group
    return sorted(p.stem for p in conf.glob("*.yaml") if "sweeper" not in p.read_text())  # single runs only


@pytest.fixture(scope="module")
def resume_cli():
    """`resume=<dir> ppo.num_updates=7`'s composed command line: the defaults, of which resuming reads
    only the budget keys given (composed once: each compose is ~0.3 s of Hydra)."""
    return _compose("ppo.num_updates=7")


@pytest.mark.parametrize("group,option", [(g, o) for g in ("env", "workload", "reward", "features", "model", "ppo",
                                                            "curriculum", "experiment") for o in _options(g)])
def test_every_option_resumes_with_its_saved_values(tmp_path, group, option, resume_cli):
    from omegaconf import OmegaConf

    from vidur_ppo.config import validate
    from vidur_ppo.rundir import RunState, resumed_config

    extra = ["workload.path=trace.csv"] if (group, option) == ("workload", "trace") else []
    cfg = _compose(f"{group}={option}", *extra)
    saved = RunState(tmp_path, cfg, ["f"], 2).config  # config.yaml as a run writes it
    tc = validate(cfg)
    resumed, applied = resumed_config(resume_cli, tmp_path, [f"resume={tmp_path}", "ppo.num_updates=7"])
    again = validate(resumed)
    assert applied == ["ppo.num_updates=7"] and again.ppo.num_updates == 7
    assert OmegaConf.to_container(resumed, resolve=True, enum_to_str=True) == {
        **saved, "resume": str(tmp_path), "ppo": {**saved["ppo"], "num_updates": 7}}
    for g in ("workload", "reward", "features", "model", "curriculum"):  # typed by the run's options, not the CLI's
        assert type(getattr(again, g)) is type(getattr(tc, g))


def test_a_saved_config_that_fits_no_schema_is_one_config_error(tmp_path):
    from omegaconf import OmegaConf

    from vidur_ppo.checks import ConfigError
    from vidur_ppo.rundir import resumed_config

    saved = _saved_run(tmp_path)
    for reward, error in (({"name": "gone"}, "config.yaml's reward names no option"), ({"renamed_key": 1}, "renamed_key")):
        (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml({**saved, "reward": {**saved["reward"], **reward}}))
        with pytest.raises(ConfigError, match=error):
            resumed_config(None, tmp_path)
