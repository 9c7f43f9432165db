"""Bad input, in one place: the exceptions that mean "the input is wrong" (exit code 2, one line),
how they are reported, and the checks of a run's env and workload that every entry point runs
(`train`, and `preflight.CheckInputs` before Hydra writes anything)."""

from __future__ import annotations

import sys
from typing import Any, List, Optional, Tuple

from vidur_ppo.checks import ConfigError
from vidur_ppo.sim.cluster import ScenarioError
from vidur_ppo.sim.trace_csv import TraceError

#: exception type -> the word a one-line report starts with (exit code 2: the input, not the run)
INPUT_ERRORS = {ConfigError: "config error", TraceError: "trace error", ScenarioError: "scenario error"}


def label(exc: BaseException) -> Optional[str]:
    """"config error" / "trace error" / "scenario error" for a bad-input exception, else None."""
    return next((word for kind, word in INPUT_ERRORS.items() if isinstance(exc, kind)), None)


def reject(exc: BaseException) -> None:
    """Bad input: one line, exit 2."""
    print(f"{label(exc) or 'error'}: {exc}", file=sys.stderr)
    sys.exit(2)


def probe_env(tc: Any) -> Tuple[Any, List[Any], List[Any]]:
    """(the run's EnvSpec, the spec each env slot trains on (build.slot_specs: the run's own without
    `slots`), one env of each) with the input checked: a bad slot, a malformed trace, a request the
    cluster can never serve; raises ConfigError / TraceError / ScenarioError."""
    from vidur_ppo import build

    spec = build.env_spec(tc)  # a trace's rows are checked there, before its load is measured
    slots = build.slot_specs(tc, spec)
    probes = [s.make() for s in slots]
    for probe in probes:
        probe.workload.generate(tc.eval.seed_base)
    return spec, slots, probes


def one_line(exc: BaseException) -> str:
    """Hydra's composition errors (several lines, the key in a `full_key:` line) as one line."""
    import re

    cause = exc.__cause__
    text = f"{exc}\n{cause or ''}"
    detail = str(cause or exc).strip().splitlines()[0]
    key = re.search(r"full_key: (\S+)", text)
    options = re.findall(r"^\t(?!schema\b|schema_)(\w+)$", text.split("Config search path")[0], re.M)
    out = f"{key[1]}: {detail}" if key and key[1] not in detail else detail
    spec = re.match(r"(.*\.(?:prefill|decode))\.\w+$", key[1]) if key and "not in struct" in detail else None
    if spec:  # a key of another length kind: the spec is replaced whole, not merged
        out += (f" (on the command line {spec[1]} keeps its kind's keys: set one of those, or write a spec of "
                "another kind in a workload file, conf/workload/<name>.yaml)")
    return f"{out} (options: {', '.join(options)})" if options else out


def run_app(main) -> None:
    """Run a Hydra app (`train.main`, `evaluate.main`): a config Hydra cannot compose is one line
    naming the key, exit 2 (HYDRA_FULL_ERROR=1 still shows Hydra's full report)."""
    import os

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's report
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        if previous == "1":
            raise
        print(f"config error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except AssertionError as exc:  # OmegaConf.update of a key under a null node (Hydra's override step)
        if previous == "1" or "Unexpected type for root" not in str(exc):
            raise
        print("config error: an override sets a key inside a value that is null here (e.g. x.y=null x.y.z=1); "
              "set the whole value instead", file=sys.stderr)
        sys.exit(2)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
