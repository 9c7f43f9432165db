"""Every bad override or input is one line on stderr naming the key (or file and row), exit code 2,
no traceback: checked through the CLI, four processes at a time."""

import subprocess
import sys
from pathlib import Path

import pytest

TRACE_HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens\n"

# (override(s), what the line must name)
CASES = [
    ("ppo.lrr=1", "ppo.lrr"), ("env.num_replica=3", "env.num_replica"), ("reward.slope=3", "reward.slope"),
    ("ppo.lr=fast", "ppo.lr"), ("reward.credit=hindsight", "reward.credit"), ("ppo.vector_mode=threads", "ppo.vector_mode"),
    ("model=transformer", "model/transformer"), ("ppo.entropy_schedule=cosine", "ppo.entropy_schedule"),
    ("ppo.kl_control=maybe", "ppo.kl_control"), ("logger.wandb_mode=cloud", "logger.wandb_mode"),
    ("curriculum=load_ramp curriculum.mode=jump", "curriculum.mode"), ("workload.arrival=uniform", "workload.arrival"),
    ("ppo.num_envs=two", "ppo.num_envs"), ("ppo.lr=-1", "ppo.lr"), ("ppo.lr=inf", "ppo.lr"),
    ("ppo.gae_lambda=2", "ppo.gae_lambda"), ("ppo.seq_len=7", "ppo.seq_len"), ("ppo.minibatches=1000", "ppo.minibatches"),
    ("env.replica_scheduler=fcfs", "replica_scheduler"), ("env.num_replicas=0", "num_replicas"),
    ("env.model=foo/bar", "model='foo/bar'"), ("env.device=foo", "device='foo'"), ("bc.teacher=oracle", "bc.teacher"),
    ("eval.baselines=[rr]", "eval.baselines"), ("eval.seed_base=0", "eval.seed_base"), ("workload.qps=0", "workload.qps"),
    ("workload.qps_max=1", "workload.qps_max"), ("reward.weights={foo:1}", "reward.weights"),
    ("features.names=[waiting,foo]", "features.names"), ("slo_e2e=0", "slo_e2e"),
    ("checkpoint_every=0", "checkpoint_every"), ("length_predictor.sigma=-1", "length_predictor.sigma"), ("length_predictor.kind=psychic", "length_predictor.kind"),
    ("eval.grid.families=[nope]", "eval.grid.families"), ("eval.capacity.low=3", "eval.capacity.low"), ("seed=-1", "seed"),
    ("eval.guard.base=nope", "eval.guard.base"),
    ("eval.length_predictor=psychic", "eval.length_predictor.kind"), ("eval.length_predictor={sigma:-1}", "eval.length_predictor.sigma"),
    ("+ppo.lrr=1e-3", "ppo.lrr"), ("+foo=1", "foo"), ("reward.credit=decision workload.num_requests=50", "ppo.rollout_steps"),
    ("reward.decision_metric=slo", "reward.decision_metric"),
    ("workload=trace", "workload.path"), ("workload=trace workload.path={missing}", "workload.path"),
    ("workload=trace workload.path={good} workload.qps=-1", "workload.qps"),
    ("workload=trace workload.path={good} workload.subsample=2", "workload.subsample"),
    ("workload=trace workload.path={bad}", "row 2"), ("resume={tmp}", "not a vidur-ppo run dir"),
    # a length spec's keys: the default's (chat) work one at a time; a bad value names the spec's key
    ("workload.decode.median=-1", "workload.decode.median"), ("workload.prefill.kind=foo", "workload.prefill.kind"),
    ("workload=burstgpt workload.decode.median=3", "conf/workload/<name>.yaml"),
    ("workload.decode=null workload.decode.median=3", "set the whole value"),
    # an over-long request outside the first episode's window: the whole file is checked at start
    ("workload=trace workload.path={over} workload.num_requests=5", "2 of 30 requests can never run"),
    ("workload=trace workload.path={over} workload.num_requests=5 seed=7", "row 14 of"),
]


# One interpreter runs `python -m vidur_ppo.train` (runpy, as `-m` does) once per case, as a shell would with its argv: the exit code and stderr of each, ~0.3 s a case
# instead of ~3 s of imports per process.
RUNNER = """
import contextlib, io, json, runpy, sys
from hydra.core.global_hydra import GlobalHydra
out = []
for argv in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    sys.argv = ["vidur_ppo.train", *argv]
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module("vidur_ppo.train", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # noqa: BLE001 - reported as a failure of the case
            code, _ = 99, err.write(f"Traceback: {exc!r}")
    out.append((code, err.getvalue()))
print(json.dumps(out))
"""


def _run_all(cases, tmp_path):
    import json

    good, bad, over = tmp_path / "good.csv", tmp_path / "bad.csv", tmp_path / "over.csv"
    good.write_text(TRACE_HEADER + "0.0,10,5\n0.5,20,5\n")
    bad.write_text(TRACE_HEADER + "0.0,10,5\n0.5,abc,5\n")
    over.write_text(TRACE_HEADER + "".join(f"{0.1 * i:.1f},{5000 if i in (13, 19) else 100},20\n" for i in range(30)))
    argvs = []
    for i, (overrides, _) in enumerate(cases):
        args = (overrides.replace("{missing}", str(tmp_path / "nope.csv")).replace("{good}", str(good))
                .replace("{bad}", str(bad)).replace("{over}", str(over)).replace("{tmp}", str(tmp_path)).split())
        argvs.append([*args, "debug=smoke", "logger.progress=false", f"hydra.run.dir={tmp_path / str(i)}"])
    out = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(argvs)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(enumerate(json.loads(out.stdout.strip().splitlines()[-1])))


def test_at_least_40_bad_inputs_are_one_line_naming_the_key(tmp_path):
    assert len(CASES) >= 40
    results = _run_all(CASES, tmp_path)
    failures = []
    for i, (overrides, key) in enumerate(CASES):
        rc, err = results[i]
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if rc != 2 or len(lines) != 1 or key not in lines[0] or "Traceback" in err:
            failures.append(f"{overrides!r}: rc={rc}, stderr={lines[-3:]}")
        if (tmp_path / str(i)).exists():  # refused before Hydra made the run dir: nothing written
            failures.append(f"{overrides!r}: wrote {sorted(p.name for p in (tmp_path / str(i)).rglob('*'))}")
    assert not failures, "\n".join(failures)
    assert not list(tmp_path.rglob(".resume_hydra")), "a refused resume wrote Hydra's files into the dir"


def test_hydra_full_error_still_shows_the_report(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vidur_ppo.train", "ppo.lrr=1", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_a_refused_evaluation_writes_nothing(tmp_path):
    """A missing checkpoint: one line, exit 2, no `.evaluate_hydra/` anywhere (a bad suite option: test_readme)."""
    for args in ([f"checkpoint={tmp_path / 'nope'}"],):
        out = subprocess.run([sys.executable, "-m", "vidur_ppo.evaluate", *args], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("config error:"), out.stderr[-2000:]
    assert not any(tmp_path.iterdir()), sorted(p.name for p in tmp_path.rglob("*"))


def test_one_key_of_the_default_length_spec_changes_alone():
    """`workload.decode.median=150` on the default workload: that key, the rest of the chat spec kept."""
    from hydra import compose, initialize_config_dir

    from vidur_ppo.config import register_configs, validate
    from vidur_ppo.workloads import CHAT_DECODE

    register_configs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        tc = validate(compose("config", ["workload.decode.median=150"]))
    assert tc.workload.decode == {**CHAT_DECODE, "median": 150}
