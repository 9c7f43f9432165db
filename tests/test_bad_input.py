"""Every bad override or input is one line on stderr naming the key (or file and row), exit code 2,
no traceback: checked through the CLI (tests/cli_runner.py: all cases in one interpreter)."""

import subprocess
import sys
from pathlib import Path

from cli_runner import run_cli

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
    ("eval.guard.base=nope", "eval.guard.base"), ("bc.label_workers=0", "bc.label_workers"),
    ("executor=ray", "executor =ray needs work to run there"), ("executor=ray executor.max_retries=-1", "executor.max_retries"),
    ("executor=ray ppo.vector_mode=policy_workers ppo.num_workers=2 executor.num_cpus=1", "executor.num_cpus"),
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


def _run_all(cases, tmp_path):
    """Every case through the CLI in one interpreter (cli_runner), from an empty working directory."""
    good, bad, over = tmp_path / "good.csv", tmp_path / "bad.csv", tmp_path / "over.csv"
    good.write_text(TRACE_HEADER + "0.0,10,5\n0.5,20,5\n")
    bad.write_text(TRACE_HEADER + "0.0,10,5\n0.5,abc,5\n")
    over.write_text(TRACE_HEADER + "".join(f"{0.1 * i:.1f},{5000 if i in (13, 19) else 100},20\n" for i in range(30)))
    calls = []
    for i, (overrides, _) in enumerate(cases):
        args = (overrides.replace("{missing}", str(tmp_path / "nope.csv")).replace("{good}", str(good))
                .replace("{bad}", str(bad)).replace("{over}", str(over)).replace("{tmp}", str(tmp_path)).split())
        calls.append(("vidur_ppo.train", [*args, "debug=smoke", "logger.progress=false", f"hydra.run.dir={tmp_path / str(i)}"]))
    # a refused evaluation (a missing checkpoint; a bad suite option: test_readme) writes nothing either
    calls.append(("vidur_ppo.evaluate", [f"checkpoint={tmp_path / 'nope'}"]))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    results = run_cli(calls, cwd=cwd)
    assert not any(cwd.iterdir()), sorted(p.name for p in cwd.rglob("*"))  # no outputs/, no .evaluate_hydra/
    return dict(enumerate(results))


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
    rc, err = results[len(CASES)]  # the evaluation CLI's refusal
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc != 2 or len(lines) != 1 or not lines[0].startswith("config error: checkpoint: ") \
            or "not a finished vidur-ppo run dir" not in lines[0]:
        failures.append(f"evaluate checkpoint=nope: rc={rc}, stderr={lines[-3:]}")
    assert not failures, "\n".join(failures)
    assert not list(tmp_path.rglob(".resume_hydra")), "a refused resume wrote Hydra's files into the dir"
    gae = CASES.index(("ppo.gae_lambda=2", "ppo.gae_lambda"))  # the whole line, word for word
    assert results[gae][1].strip() == "config error: ppo.gae_lambda must be in [0, 1], got 2.0"


def test_hydra_full_error_still_shows_the_report(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vidur_ppo.train", "ppo.lrr=1", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr


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
