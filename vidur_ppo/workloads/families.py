"""The workload zoo as data: each family is a file `conf/workload/<name>.yaml` (its shape and a
one-line source), loaded here for suites that run many families in one process, and matched back
from a run's workload so a suite can tell which family a policy was trained on (leave-family-out)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from vidur_ppo import CONF_DIR
from vidur_ppo.checks import check, from_mapping
from vidur_ppo.workloads.specs import SLO_KEYS

WORKLOAD_CONF = CONF_DIR / "workload"
#: keys that set how much and how long, not the family's shape
RATE_KEYS = ("qps", "qps_max", "num_requests", "load", "start_time", "max_requests")


def family_names() -> List[str]:
    """The workload files that are one family (zoo.yaml draws from several: not a family itself)."""
    return sorted(p.stem for p in WORKLOAD_CONF.glob("*.yaml") if p.stem != "zoo")


def family_spec(name: str) -> Dict[str, Any]:
    """conf/workload/<name>.yaml as a whole workload spec (schema defaults filled in)."""
    from omegaconf import OmegaConf

    from vidur_ppo.workloads.specs import BASE_WORKLOADS, length_shapes, workload_spec

    path = WORKLOAD_CONF / f"{name}.yaml"
    check(path.exists(), "family", f"must be a workload file of {WORKLOAD_CONF} ({', '.join(family_names())})", name)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    defaults = [d for d in raw.pop("defaults", []) if isinstance(d, str)]
    schema = next((d for d in defaults if d.startswith("schema_")), "schema_synthetic")
    for shared in (d for d in defaults if d.startswith("/lengths/")):  # `- /lengths/<name>@_here_`
        raw = {**length_shapes(shared.removeprefix("/lengths/").split("@")[0]), **raw}
    kind = schema.removeprefix("schema_")
    return workload_spec(from_mapping(BASE_WORKLOADS[kind], {**raw, "kind": kind}, f"workload ({name})"))


def shape(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """A workload spec without its rate and size keys: what makes two workloads the same family."""
    from vidur_ppo.workloads.specs import workload_spec

    return {k: v for k, v in workload_spec(spec).items() if k not in RATE_KEYS + SLO_KEYS}  # its SLOs are promises, not its shape


def family_of(spec: Mapping[str, Any], names: List[str]) -> Optional[str]:
    """The family of `names` whose shape `spec` has; None if none matches."""
    mine = shape(spec)
    return next((n for n in names if shape(family_spec(n)) == mine), None)
