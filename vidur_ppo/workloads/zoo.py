"""Training over the zoo: domain randomisation over workload families and loads.

`workload=zoo` draws, per episode and from its seed, one of `families` (conf/workload files, uniformly)
and a load rho ~ U[load_min, load_max] of the cluster's measured capacity for that family
(routing/capacity.py, the same cached measurement as `workload.load`), so a policy meets both the
workloads where a size split pays and those where balancing does, at light and heavy load. The
families a policy trains on are its training families: the generalisation suite holds out the rest
(`eval.grid.train_families` must include every one of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np

from vidur_ppo.checks import check, positive


@dataclass
class ZooWorkloadConfig:
    kind: str = "zoo"
    families: List[str] = field(default_factory=lambda: ["chat"])  # conf/workload/<name>.yaml, synthetic ones
    load_min: float = 0.5  # rho per episode ~ U[load_min, load_max] of the cluster's capacity for its family
    load_max: float = 0.95
    num_requests: int = 1000
    # each family's spec at rho = 1 (qps = its saturation on the run's cluster): filled by build.py
    members: Optional[List[Dict[str, Any]]] = None

    def __post_init__(self) -> None:
        from vidur_ppo.workloads.families import family_names, family_spec

        check(len(self.families) > 0, "workload.families", "must name at least one family", self.families)
        bad = [f for f in self.families if f not in family_names()]
        check(not bad, "workload.families", f"must name files of conf/workload ({', '.join(family_names())})", bad)
        from vidur_ppo.workloads.specs import PREFIX_CONFIGS

        traces = [f for f in self.families if family_spec(f).get("kind") not in ("synthetic", *PREFIX_CONFIGS)]
        check(not traces, "workload.families", "must be synthetic or prefix-sharing families (a trace has its own "
              "rate)", traces)
        check(0 < self.load_min <= self.load_max <= 2, "workload.load_min",
              "must satisfy 0 < load_min <= load_max <= 2", [self.load_min, self.load_max])
        positive(self, "workload", "num_requests")


def resolve(spec: Mapping[str, Any], saturation: Callable[[Mapping[str, Any]], float]) -> Dict[str, Any]:
    """The zoo spec with `members`: each family at its saturation rate (rho = 1), `saturation(member)`
    (build.py passes the cluster's measured one, routing/capacity.py: measuring routes, so it is not here)."""
    from vidur_ppo.workloads.families import family_spec

    members = []
    for name in spec["families"]:
        member = {**family_spec(name), "num_requests": int(spec["num_requests"])}
        member.pop("qps_max", None)
        member["qps"] = float(saturation(member))
        members.append(member)
    return {**dict(spec), "members": members}


@dataclass
class ZooWorkload:
    """The simulator-side zoo: `generate(seed)` picks a member and a load by the seed."""

    members: List[Any]  # sim workloads at rho = 1
    families: List[str]
    load_min: float
    load_max: float

    def draw(self, seed: int) -> tuple:
        """(member index, rho) of the episode with this seed."""
        rng = np.random.default_rng([int(seed), 0x200])
        return int(rng.integers(len(self.members))), float(rng.uniform(self.load_min, self.load_max))

    def generate(self, seed: int):
        i, rho = self.draw(seed)
        member = self.members[i]
        return replace(member, qps=member.qps * rho).generate(seed)


def make_zoo(spec: Mapping[str, Any]) -> ZooWorkload:
    from vidur_ppo.checks import ConfigError
    from vidur_ppo.workloads.specs import make_sim_workload

    if not spec.get("members"):
        raise ConfigError("workload.kind=zoo needs a cluster to resolve each family's capacity against: build the "
                          "env through vidur_ppo.build.env_spec")
    return ZooWorkload([make_sim_workload(m) for m in spec["members"]], list(spec["families"]),
                       float(spec["load_min"]), float(spec["load_max"]))
