"""An evaluation suite with a failing scenario still writes every other one, lists the failure
with its one-line error and exits 1; each evaluate run writes its own output dir."""

import csv
import subprocess
import sys


from vidur_ppo.eval.suite import failed_scenarios
from vidur_ppo.evaluate import output_dir

from test_evaluate import _save


def _evaluate(run_dir, *overrides):
    return subprocess.run([sys.executable, "-m", "vidur_ppo.evaluate", f"checkpoint={run_dir}", "eval=smoke",
                           "eval.sampled=false", *overrides], capture_output=True, text=True, timeout=300)


def test_a_bad_scenario_fails_alone_and_two_runs_do_not_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _save(run, "attn_gru")
    missing = tmp_path / "missing.csv"
    scenarios = (f"eval.scenarios=[{{name:good,num_replicas:2}},{{name:bad,workload:{{kind:trace,path:{missing}}}}},"
                 "{name:badspec,workload:{kind:synthetic,prefill:{kind:uniform,min:5,max:1}}}]")
    out = _evaluate(run, scenarios)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert f"failed scenario bad: ConfigError: workload.path file not found: {missing}" in out.stderr
    first = run / "evaluate_smoke"
    report = (first / "report.md").read_text()
    assert "## Failed scenarios" in report and "## good (2 replicas" in report and "| ppo |" in report
    failed = [line for line in report.splitlines() if line.startswith("- `")]
    assert len(failed) == 2 and f"- `bad`: ConfigError: workload.path file not found: {missing}" in failed
    assert failed[1].startswith("- `badspec`: ConfigError: ") and "must be >=" in failed[1]
    with (first / "metrics.csv").open() as f:
        assert {r["scenario"] for r in csv.DictReader(f)} == {"good"}

    again = _evaluate(run, "eval.scenarios=[{name:good,num_replicas:2}]")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "evaluate_smoke exists: writing to evaluate_smoke-2" in again.stderr
    assert (first / "report.md").read_text() == report  # the first run's output is untouched
    assert "Failed scenarios" not in (run / "evaluate_smoke-2" / "report.md").read_text()

    refused = _evaluate(run, f"out={first}")
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"config error: out={first} is not empty; pick another out= or pass overwrite=true"]


def test_output_dirs_are_never_shared(tmp_path, capsys):
    assert output_dir(None, False, tmp_path, "s") == tmp_path / "evaluate_s"
    assert output_dir(None, False, tmp_path, "s") == tmp_path / "evaluate_s-2"  # taken, even while still empty
    assert output_dir(None, False, tmp_path, "s") == tmp_path / "evaluate_s-3"
    assert "evaluate_s exists: writing to evaluate_s-3" in capsys.readouterr().err
    assert output_dir(None, True, tmp_path, "s") == tmp_path / "evaluate_s"
    named = tmp_path / "named"
    assert output_dir(str(named), False, tmp_path, "s") == named  # new or empty: used
    (named / "report.md").write_text("old")  # a non-empty out= is refused before this (evaluate.inputs, above)
    assert output_dir(str(named), True, tmp_path, "s") == named


def test_failed_scenarios_name_the_seeds_only_when_some_ran():
    jobs = [(".", {"name": "a"}, 1), (".", {"name": "a"}, 2), (".", {"name": "b"}, 1), (".", {"name": "b"}, 2),
            (".", {"name": "c"}, 1)]
    ok, bad = {"rows": [{}], "errors": [], "details": {}}, {"rows": [], "errors": ["x"], "details": None, "failed": "E"}
    assert failed_scenarios(jobs, [bad, bad, ok, bad, ok]) == {"a": ["E"], "b": ["seed 2: E"]}
