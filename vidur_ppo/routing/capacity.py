"""Load relative to capacity: a cluster's saturation throughput for a workload's lengths.

`workload.load=rho` means "rho x what this cluster can serve of this workload": the request rate is
rho x `saturation_rps(cluster, workload)`, the sustained throughput (completions per second between
the 20th and the 80th percentile completion) of one short simulation in which a burst of the
workload's requests all arrive at once and the `jsq` heuristic routes them. Only the lengths matter:
a synthetic family's distributions (prefill, decode, correlation, paired_mixture), a trace's own
requests (drawn with a fixed seed from the whole file, after its `overlong` handling at the cluster's
limit), or a prefix family's whole structure; and on a cluster with prefix caching the prefixes they
share. Rate, request count, windows and arrival process do not. Measured once per cluster and
lengths (a trace's by a hash of its parsed columns), then cached in memory and in a JSON file
(`$VIDUR_PPO_CACHE_DIR/capacity.json`, default `~/.cache/vidur_ppo/capacity.json`), so "heavy"
means the same on every family, trace and cluster size. It lives in routing/ because measuring
routes (a bare driver and `jsq`): the env reads `replica_speeds` from here, workloads/ never does.
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

from vidur_ppo.routing.heuristics import make_heuristic
from vidur_ppo.sim.cluster import ClusterSpec
from vidur_ppo.sim.driver import SimDriver
from vidur_ppo.sim.trace import Trace
from vidur_ppo.sim.trace_csv import check_path, read_trace_file
from vidur_ppo.sim.workload import PREFIX_WORKLOADS
from vidur_ppo.workloads import DEFAULT_WORKLOAD, SLO_KEYS, check_load, make_workload, workload_spec as plain

#: bump when the measurement changes (old cache entries are then ignored)
VERSION = 2
#: the completions the rate is measured over: the burst's start (batches filling) and its drain (a few
#: long decodes on emptying replicas) are left out, so it is the sustained rate of full batches; the
#: makespan rate (VERSION 1) understated it: requests met their SLOs at 1.4x "saturation"
STEADY = (0.2, 0.8)
#: requests per replica in the measuring burst (at least MIN_REQUESTS in all)
REQUESTS_PER_REPLICA = 1000
MIN_REQUESTS = 500
SEED = 0
#: the workload keys saturation depends on (the lengths); qps, num_requests, arrival... do not
LENGTH_KEYS = ("prefill", "decode", "correlation", "paired_mixture")
#: a trace's: its file's length columns (hashed) and what its over-long requests become
TRACE_LENGTH_KEYS = ("overlong", "max_total_tokens")
#: a prefix family's (multi_turn, system_prompt, rag) keys that do not shape its requests; every other key does
PREFIX_RATE_KEYS = ("qps", "num_requests", *SLO_KEYS)

_MEMORY: Dict[str, float] = {}
_DIGESTS: Dict[tuple, str] = {}  # (real path, mtime, size) -> hash of the parsed length columns


def cache_path() -> Path:
    root = os.environ.get("VIDUR_PPO_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "vidur_ppo") / "capacity.json"


def trace_digest(path: str, prefixes: bool = False, format: str = "auto") -> str:
    """Hash of a trace file's parsed prefill/decode columns: the same lengths, the same capacity,
    whatever the file's name, arrival times or formatting; with `prefixes` (a cluster with prefix
    caching) its prefix hashes too, if it has them."""
    key = (check_path(os.fspath(path)), prefixes, format)
    if key not in _DIGESTS:
        f = read_trace_file(path, format)
        h = hashlib.sha256()
        for column in (f.num_prefill_tokens, f.num_decode_tokens):
            h.update(np.ascontiguousarray(column, dtype="<i8").tobytes())
        if prefixes and f.prefix_hashes is not None:
            h.update(np.int64(f.prefix_block_tokens).tobytes())
            for hashes in f.prefix_hashes:
                h.update(np.int64(len(hashes)).tobytes() + np.ascontiguousarray(hashes, dtype="<i8").tobytes())
        _DIGESTS[key] = h.hexdigest()[:32]
    return _DIGESTS[key]


def lengths_at(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> Dict[str, Any]:
    """The workload's length-defining spec on this cluster: a trace's token limit is the cluster's (or
    its own, if lower), as the env applies it to `overlong`."""
    wl = plain({k: v for k, v in workload_spec.items() if k != "load"})
    if wl.get("kind") == "trace":
        own, limit = wl.get("max_total_tokens"), ClusterSpec.from_mapping(cluster).request_token_limit()
        wl["max_total_tokens"] = int(limit) if own is None else min(int(own), int(limit))
    return wl


def cache_key(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> str:
    """Stable hash of the cluster and the workload's lengths (not rate, count or arrivals), and on a cluster
    with prefix caching its prefixes. Keys without a mix or a cache are those from before either existed."""
    cluster = ClusterSpec.from_mapping(cluster)
    wl = plain({k: v for k, v in workload_spec.items() if k != "load"})
    if wl.get("kind") == "trace":
        lengths = {"trace": trace_digest(wl["path"], cluster.prefix_caching, wl.get("format", "auto")), **{k: wl.get(k) for k in TRACE_LENGTH_KEYS}}
    elif wl.get("kind") in PREFIX_WORKLOADS:
        lengths = {k: v for k, v in wl.items() if k not in PREFIX_RATE_KEYS}
    else:
        lengths = {k: wl.get(k) for k in LENGTH_KEYS}
    spec = {k: v for k, v in cluster.to_dict().items()
            if not (k == "replicas" and v is None) and not (k == "prefix_caching" and not v)}
    text = json.dumps({"version": VERSION, "cluster": spec, "lengths": lengths}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def burst(workload_spec: Mapping[str, Any], n: int) -> Trace:
    """n requests of the workload's lengths, all arriving at t=0 (drawn with the fixed SEED), with their
    prefix hashes if they have any (a cluster without prefix caching ignores them). With the cache on, a
    request reuses the prefixes earlier ones have computed, but none still being prefilled, as the whole
    burst arrives at once: it reuses less than the same requests spread over time, a conservative capacity."""
    wl = plain({k: v for k, v in workload_spec.items() if k != "load"})
    zeros = np.zeros(n)
    if wl.get("kind") == "trace":  # the whole file, over-long requests handled, then n draws of its rows
        wl.update(arrival="poisson", qps=1.0, time_window=None, subsample=None, max_requests=None, window="first")
        whole = make_workload(wl).generate(SEED)
        return whole.rows(np.random.default_rng(SEED).integers(0, len(whole), n), zeros)
    if wl.get("kind") in PREFIX_WORKLOADS:  # the family's first n requests (its sessions, tenants, documents)
        wl.update(num_requests=n, qps=1.0)
        return make_workload(wl).generate(SEED).rows(np.arange(n), zeros)
    wl.update(kind="synthetic", num_requests=n, qps=1.0, arrival="poisson", qps_max=None, start_time=0.0)
    for key in ("burst_factor", "mean_on", "mean_off", "amplitude", "period"):
        wl.pop(key, None)
    gen = make_workload(wl).generate(SEED)
    return Trace(zeros, gen.num_prefill_tokens, gen.num_decode_tokens)


def simulate(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> float:
    """One measuring run: a burst of the workload's requests at t=0, routed by jsq; throughput (req/s)."""
    cluster = ClusterSpec.from_mapping(cluster)
    n = max(MIN_REQUESTS, REQUESTS_PER_REPLICA * cluster.num_replicas)
    driver = SimDriver(cluster, burst(workload_spec, n), record_token_times=False)
    jsq = make_heuristic("jsq")
    jsq.reset(SEED)
    request = driver.next_decision()
    while request is not None:
        request = driver.assign(jsq({"replicas": driver.replica_state()}))  # jsq reads replica state only
    done = np.sort(np.asarray(driver.per_request()["e2e"], dtype=float))  # completion times (all arrive at 0)
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
    """The cluster's saturation throughput (req/s) for the workload's lengths (cached). A
    heterogeneous cluster's is the sum of its groups' (each measured on its own, so a capacity-blind
    router in the measuring run does not understate the fast replicas; a trace's requests limited to
    what the whole cluster serves)."""
    cluster = ClusterSpec.from_mapping(cluster)
    wl = lengths_at(cluster, workload_spec)
    if cluster.replicas:
        return float(sum(saturation_rps(spec, wl) for _, spec in cluster.groups()))
    key = cache_key(cluster, wl)
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_path()
    value = _read(path).get(key)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        value = simulate(cluster, wl)
        _write(path, key, value)
    _MEMORY[key] = float(value)
    return float(value)


def replica_speeds(cluster: ClusterSpec, workload_spec: Mapping[str, Any]) -> "np.ndarray":
    """Each replica's share of the cluster's saturation throughput, relative to the mean (all ones
    for a homogeneous cluster, measured nothing): what capacity-aware routers weigh replicas by.
    A trace is measured with its own lengths; the zoo (many families) with the embedded chat ones."""
    cluster = ClusterSpec.from_mapping(cluster)
    if not cluster.replicas:
        return np.ones(cluster.num_replicas)
    wl = DEFAULT_WORKLOAD if workload_spec.get("kind") == "zoo" else lengths_at(cluster, workload_spec)
    per = [saturation_rps(spec, wl) / count for count, spec in cluster.groups() for _ in range(count)]
    per = np.asarray(per, dtype=float)
    return per / per.mean()


def qps_at_load(cluster: ClusterSpec, workload_spec: Mapping[str, Any], load: Any) -> "tuple[float, float]":
    """(rho checked, the request rate rho x saturation) for `workload.load=rho` on this cluster."""
    rho = check_load({**workload_spec, "load": load})
    return rho, rho * saturation_rps(cluster, workload_spec)
