"""Load relative to capacity: a cluster's saturation throughput for a workload family.

`workload.load=rho` means "rho x what this cluster can serve of this workload": the request rate is
rho x `saturation_rps(cluster, workload)`, the sustained throughput (completions per second between
the 10th and the 90th percentile completion) of one short simulation in which a burst of the
family's requests all arrive at once and the `jsq` heuristic routes them. Only the lengths matter (prefill, decode, correlation, paired_mixture); rate, request
count and arrival process do not. Measured once per cluster and length family, then cached in
memory and in a JSON file (`$VIDUR_PPO_CACHE_DIR/capacity.json`, default
`~/.cache/vidur_ppo/capacity.json`), so "heavy" means the same on every family and cluster size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from vidur_ppo.checks import ConfigError
from vidur_ppo.sim.cluster import ClusterSpec

#: bump when the measurement changes (old cache entries are then ignored)
VERSION = 2
#: the completions the rate is measured over: the burst's start (batches filling) and its drain (a few
#: long decodes on emptying replicas) are left out, so it is the sustained rate of full batches; the
#: makespan rate (VERSION 1) understated it: requests met their SLOs at 1.4x "saturation" (issue 15)
STEADY = (0.2, 0.8)
#: requests per replica in the measuring burst (at least MIN_REQUESTS in all)
REQUESTS_PER_REPLICA = 1000
MIN_REQUESTS = 500
SEED = 0
#: the workload keys saturation depends on (the lengths); qps, num_requests, arrival... do not
LENGTH_KEYS = ("prefill", "decode", "correlation", "paired_mixture")

_MEMORY: Dict[str, float] = {}


def cache_path() -> Path:
    root = os.environ.get("VIDUR_PPO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "vidur_ppo") / "capacity.json"


def _require_synthetic(spec: Mapping[str, Any]) -> None:
    if spec.get("kind", "synthetic") != "synthetic":
        raise ConfigError("workload.load needs a synthetic workload")


def check_load(spec: Mapping[str, Any]) -> float:
    """`workload.load` of a spec, checked (one-line ConfigErrors naming workload.load)."""
    load = spec.get("load")
    _require_synthetic(spec)
    try:
        value = float(load)
    except (TypeError, ValueError):
        raise ConfigError(f"workload.load must be a number > 0 (rho, a fraction of capacity), got {load!r}") from None
    if isinstance(load, bool) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"workload.load must be a finite number > 0 (rho, a fraction of capacity), got {load!r}")
    if spec.get("qps_max") is not None:
        raise ConfigError("workload.load cannot be combined with workload.qps_max (set one of them)")
    return value


def cache_key(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> str:
    """Stable hash of the cluster and the workload's length fields (not rate, count or arrivals)."""
    from vidur_ppo.workloads import workload_spec as plain

    wl = plain({k: v for k, v in workload_spec.items() if k != "load"})
    spec = {k: v for k, v in ClusterSpec.from_mapping(cluster).to_dict().items() if not (k == "replicas" and v is None)}
    body = {"version": VERSION, "cluster": spec,
            "lengths": {k: wl.get(k) for k in LENGTH_KEYS}}
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def simulate(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> float:
    """One measuring run: a burst of the workload's requests at t=0, routed by jsq; throughput (req/s)."""
    from vidur_ppo.routing.env import VidurRoutingEnv, run_episode
    from vidur_ppo.routing.heuristics import make_heuristic
    from vidur_ppo.sim.trace import Trace
    from vidur_ppo.workloads import make_workload, workload_spec as plain

    cluster = ClusterSpec.from_mapping(cluster)
    n = max(MIN_REQUESTS, REQUESTS_PER_REPLICA * cluster.num_replicas)
    wl = plain({k: v for k, v in workload_spec.items() if k != "load"})
    wl.update(kind="synthetic", num_requests=n, qps=1.0, arrival="poisson", qps_max=None, start_time=0.0)
    for key in ("burst_factor", "mean_on", "mean_off", "amplitude", "period"):
        wl.pop(key, None)
    gen = make_workload(wl).generate(SEED)
    burst = Trace(np.zeros(n), gen.num_prefill_tokens, gen.num_decode_tokens)
    env = VidurRoutingEnv(cluster=cluster, workload=wl, safety={"terminate": False}, record_token_times=False)
    run_episode(env, make_heuristic("jsq"), seed=SEED, trace=burst)
    done = np.sort(np.asarray(env.driver.per_request()["e2e"], dtype=float))  # completion times (all arrive at 0)
    lo, hi = int(STEADY[0] * n), int(STEADY[1] * n) - 1
    return float((hi - lo) / (done[hi] - done[lo]))


def _read(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, key: str, value: float) -> None:
    """Add one entry to the cache file, atomically (temp file + rename); a failed write is not fatal."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read(path)
        data[key] = value
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".capacity.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def saturation_rps(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> float:
    """The cluster's saturation throughput (req/s) for the workload's length family (cached). A
    heterogeneous cluster's is the sum of its groups' (each measured on its own, so a capacity-blind
    router in the measuring run does not understate the fast replicas)."""
    cluster = ClusterSpec.from_mapping(cluster)
    if cluster.replicas:
        return float(sum(saturation_rps(spec, workload_spec) for _, spec in cluster.groups()))
    _require_synthetic(workload_spec)
    key = cache_key(cluster, workload_spec)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_path()
    value = _read(path).get(key)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        value = simulate(ClusterSpec.from_mapping(cluster), workload_spec)
        _write(path, key, value)
    _MEMORY[key] = float(value)
    return float(value)


def replica_speeds(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> "np.ndarray":
    """Each replica's share of the cluster's saturation throughput, relative to the mean (all ones
    for a homogeneous cluster, measured nothing): what capacity-aware routers weigh replicas by.
    Trace workloads are measured with the embedded chat lengths."""
    cluster = ClusterSpec.from_mapping(cluster)
    if not cluster.replicas:
        return np.ones(cluster.num_replicas)
    if workload_spec.get("kind", "synthetic") != "synthetic":
        from vidur_ppo.workloads import DEFAULT_WORKLOAD

        workload_spec = DEFAULT_WORKLOAD
    per = [saturation_rps(spec, workload_spec) / count for count, spec in cluster.groups() for _ in range(count)]
    per = np.asarray(per, dtype=float)
    return per / per.mean()


def qps_at_load(cluster: ClusterSpec, workload_spec: Mapping[str, Any], load: Any) -> "tuple[float, float]":
    """(rho checked, the request rate rho x saturation) for `workload.load=rho` on this cluster."""
    rho = check_load({**workload_spec, "load": load})
    return rho, rho * saturation_rps(cluster, workload_spec)
