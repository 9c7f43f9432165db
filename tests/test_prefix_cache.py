"""vLLM's automatic prefix caching per replica (vidur_ppo/sim/prefix_cache.py), in small real simulations."""

import numpy as np
import pytest
from vidur.entities import Batch, Request

from vidur_ppo.routing.heuristics import make_heuristic
from vidur_ppo.routing.lookahead import _Fork
from vidur_ppo.sim.cluster import ClusterSpec, ScenarioError
from vidur_ppo.sim.driver import SimDriver
from vidur_ppo.sim.prefix_cache import PrefixCache, PrefixCachingVLLMReplicaScheduler
from vidur_ppo.sim.trace import Trace
from vidur_ppo.sim.workload import SyntheticWorkload

from conftest import OUTPUTS, PROMPTS

G = 16  # tokens per prefix hash = vidur's block_size: one entry is one KV block


def chain(base: int, n: int) -> np.ndarray:
    """n block hashes of a prefix named `base` (equal leading hashes: a shared prefix)."""
    return base + np.arange(n)


def drive(cluster: ClusterSpec, trace: Trace, route=lambda d, r: 0, at_decision=None) -> SimDriver:
    d = SimDriver(cluster, trace)
    req = d.next_decision()
    while req is not None:
        if at_decision:
            at_decision(d, req)
        req = d.assign(route(d, req))
    return d


def prefill_seconds(r: Request) -> float:
    return r._prefill_completed_at - r._scheduled_at


def check_accounting(rs: PrefixCachingVLLMReplicaScheduler) -> None:
    """Physical blocks = private blocks + referenced entries once each; nothing over-committed; every
    entry a running request references is resident, counted, and out of the eviction order."""
    cache, m = rs.prefix_cache, rs.prefix_cache.blocks_per_entry
    counts = {}
    for hashes in rs._prefix_refs.values():
        for h in hashes:
            counts[h] = counts.get(h, 0) + 1
    assert {h: n for h, n in cache._refs.items() if n} == counts
    assert all(h not in cache._lru for h in counts) and len(cache._lru) == len(cache._refs) - len(counts)
    private = sum(rs._allocation_map[i] - len(refs) * m for i, refs in rs._prefix_refs.items())
    assert rs._num_allocated_blocks == private + len(counts) * m
    assert rs._num_allocated_blocks + cache.num_evictable_blocks <= rs._cache_config.num_blocks


def test_hit_is_the_computed_resident_prefix_and_prefill_prices_only_the_rest():
    h0 = chain(1000, 63)  # a 1,000-token prompt: 62 full blocks and a hashed partial one
    shared_40 = np.concatenate([h0[:40], chain(5000, 23)])
    late = chain(7000, 32)
    trace = Trace([0.0, 5.0, 10.0, 15.0, 15.0, 15.1], [1000, 1000, 640, 500, 500, 500], [10, 10, 10, 100, 100, 10],
                  prefix_hashes=(h0, shared_40, h0[:40], late, late, late), prefix_block_tokens=G)
    seen = []
    on = drive(ClusterSpec(num_replicas=1, prefix_caching=True), trace,
               at_decision=lambda d, r: seen.append(int(d.cached_prefix_tokens(r)[0])))
    # 40 shared blocks; a fully cached 640-token prompt still computes its last block; two requests
    # prefilling one new prefix together share nothing, one arriving while they decode hits 31 blocks
    expected = [0, 640, 624, 0, 0, 496]
    assert seen == expected and on.per_request()["prefix_hit_tokens"].tolist() == expected
    assert on.summary()["cache_hit_rate"] == pytest.approx(sum(expected) / trace.num_prefill_tokens.sum())

    off = drive(ClusterSpec(num_replicas=1), trace)
    assert "cache_hit_rate" not in off.summary() and not off.per_request()["prefix_hit_tokens"].any()
    assert not off.cached_prefix_tokens(off.requests[1]).any() and not off.prefix_cache_occupancy().any()
    cached, uncached = prefill_seconds(on.requests[1]), prefill_seconds(off.requests[1])
    predictor = on._replica_schedulers[0]._execution_time_predictor
    estimate = predictor.get_execution_time(Batch(0, [Request(0.0, 1000, 10)], [360], [1000]), 0).total_time
    assert cached == pytest.approx(estimate, rel=0.05) and cached < 0.6 * uncached


def test_unreferenced_entries_are_evicted_least_recently_released_first():
    a, b, c = chain(1000, 12), chain(2000, 10), chain(3000, 10)
    d_ = chain(4000, 48)
    # A, B, C leave 10 entries each; A' reuses A's and adds one; D (48 blocks of 64) evicts 15: B's, then C's tail
    trace = Trace([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0],
                  [160, 160, 160, 176, 768, 193, 193, 193], [1] * 8,
                  prefix_hashes=(a[:10], b, c, a[:11], d_, a, b, c), prefix_block_tokens=G)
    seen = {}

    def probe(d, r):
        if d.now == 5.0:
            seen[r.id] = (int(d.cached_prefix_tokens(r)[0]), float(d.prefix_cache_occupancy()[0]))

    drive(ClusterSpec(num_replicas=1, num_blocks=64, prefix_caching=True), trace, at_decision=probe)
    assert seen == {5: (176, 1.0), 6: (0, 1.0), 7: (80, 1.0)}


def test_a_running_requests_prefix_is_never_evicted():
    r, x, y = chain(1000, 10), chain(2000, 30), chain(3000, 30)
    # R decodes for long holding its cached prefix; Y needs room only unreferenced entries (X's) give
    trace = Trace([0.0, 0.1, 0.2, 0.5], [160, 480, 480, 161], [300, 1, 1, 1],
                  prefix_hashes=(r, x, y, np.append(r, 1)), prefix_block_tokens=G)
    seen = []

    def probe(d, req):
        if req.id == 3:
            seen.append((int(d.cached_prefix_tokens(req)[0]), d.requests[0]._completed, d.requests[2]._completed))
        check_accounting(d._replica_schedulers[0])

    d = drive(ClusterSpec(num_replicas=1, num_blocks=64, prefix_caching=True), trace, at_decision=probe)
    assert seen == [(160, False, True)]
    assert d.per_request()["prefix_hit_tokens"].tolist() == [0, 0, 0, 160]


def test_a_request_left_queued_has_processed_nothing():
    """The hit is set as processed when the queue's head is considered; a head left queued (no room) is
    undone, so the replica's prefill work left counts its whole prompt."""
    r = chain(1000, 10)
    trace = Trace([0.0, 1.0, 1.5, 2.0], [160, 640, 400, 16], [1, 300, 1, 1],
                  prefix_hashes=(r, chain(2000, 40), np.concatenate([r, chain(3000, 15)]), chain(4000, 1)),
                  prefix_block_tokens=G)
    seen = []

    def probe(d, req):
        if req.id == 3:
            queued = [q.id for q in d._replica_schedulers[0]._request_queue]
            seen.append((queued, d.replica_state()[0, 2], int(d.cached_prefix_tokens(d.requests[2])[0])))

    drive(ClusterSpec(num_replicas=1, num_blocks=64, prefix_caching=True), trace, at_decision=probe)
    assert seen == [([2], 400, 160)]


def test_no_kv_over_commit_under_eviction_and_preemption(monkeypatch):
    base = SyntheticWorkload(num_requests=60, qps=20.0, prefill=PROMPTS, decode=OUTPUTS).generate(3)
    # four 512-token system prompts, then each request's own blocks
    hashes = tuple(np.concatenate([chain((i % 4) * 10**6, 32), chain((i + 1) * 10**9, 128)])[: -(-p // G)]
                   for i, p in enumerate(base.num_prefill_tokens))
    trace = Trace(base.arrived_at, base.num_prefill_tokens, base.num_decode_tokens, prefix_hashes=hashes,
                  prefix_block_tokens=G)
    evicted, checked = [], []
    evict, on_batch_end = PrefixCache.evict, PrefixCachingVLLMReplicaScheduler.on_batch_end

    def counting_evict(self, n):
        evicted.append(n)
        evict(self, n)

    def checking_on_batch_end(self, batch):
        on_batch_end(self, batch)
        check_accounting(self)
        checked.append(1)

    monkeypatch.setattr(PrefixCache, "evict", counting_evict)
    monkeypatch.setattr(PrefixCachingVLLMReplicaScheduler, "on_batch_end", checking_on_batch_end)
    d = drive(ClusterSpec(num_replicas=2, num_blocks=400, prefix_caching=True), trace,
              route=lambda d, r: r.id % 2)
    s = d.summary()
    assert s["num_completed"] == len(trace) and s["restarts"] > 0 and evicted and len(checked) > 100
    assert 0.1 < s["cache_hit_rate"] < 0.5


def unique_prefixes(trace: Trace) -> Trace:
    hashes = tuple(chain((i + 1) * 10**6, -(-p // G)) for i, p in enumerate(trace.num_prefill_tokens))
    return Trace(trace.arrived_at, trace.num_prefill_tokens, trace.num_decode_tokens, prefix_hashes=hashes,
                 prefix_block_tokens=G)


def test_cache_on_without_shared_prefixes_is_the_cache_off_run():
    """Cached entries are free memory: evicting one costs what taking a free block does. Only a preempted
    request gains, re-prefilling just what its own cached prompt does not cover."""
    heavy = SyntheticWorkload(num_requests=60, qps=20.0, prefill=PROMPTS, decode=OUTPUTS).generate(3)
    light = SyntheticWorkload(num_requests=40, qps=4.0, prefill=PROMPTS, decode=OUTPUTS).generate(3)
    alternate = lambda d, r: r.id % 2
    for blocks, trace, same in ((400, heavy, heavy), (None, light, unique_prefixes(light))):
        off = drive(ClusterSpec(num_replicas=2, num_blocks=blocks), trace, route=alternate).per_request()
        on = drive(ClusterSpec(num_replicas=2, num_blocks=blocks, prefix_caching=True), same,
                   route=alternate).per_request()
        for key in ("ttft", "e2e", "restarts"):
            np.testing.assert_array_equal(on[key], off[key], err_msg=key)
    assert off["restarts"].sum() == 0
    preempted = drive(ClusterSpec(num_replicas=2, num_blocks=400, prefix_caching=True), unique_prefixes(heavy),
                      route=alternate).per_request()
    off = drive(ClusterSpec(num_replicas=2, num_blocks=400), heavy, route=alternate).per_request()
    assert off["restarts"].sum() > 0 and not preempted["prefix_hit_tokens"].any()
    assert preempted["e2e"].mean() < off["e2e"].mean()


def test_heterogeneous_cluster_caches_only_where_enabled():
    p = chain(1000, 40)
    trace = Trace([0.0, 0.0, 5.0, 6.0], [640] * 4, [5] * 4, prefix_hashes=(p,) * 4, prefix_block_tokens=G)
    seen = []
    cluster = ClusterSpec(num_replicas=3, replicas=[{"count": 1, "prefix_caching": True}, {"count": 2}])
    d = drive(cluster, trace, route=lambda d, r: [0, 1, 0, 1][r.id],
              at_decision=lambda d, r: seen.append(d.cached_prefix_tokens(r).tolist()))
    assert [type(rs).__name__ for rs in d._replica_schedulers] == [
        "PrefixCachingVLLMReplicaScheduler", "VLLMReplicaScheduler", "VLLMReplicaScheduler"]
    assert seen == [[0, 0, 0], [0, 0, 0], [624, 0, 0], [624, 0, 0]]
    assert d.per_request()["prefix_hit_tokens"].tolist() == [0, 0, 624, 0]
    assert d.summary()["cache_hit_rate"] == pytest.approx(624 / 2560)


def test_a_lookahead_fork_carries_the_cache_and_leaves_the_real_one_alone():
    p = chain(1000, 40)
    trace = Trace([0.0, 5.0, 6.0], [640] * 3, [5] * 3, prefix_hashes=(p,) * 3, prefix_block_tokens=G)
    d = SimDriver(ClusterSpec(num_replicas=2, prefix_caching=True), trace)
    d.next_decision()
    req = d.assign(0)  # request 1: request 0's prefix is cached on replica 0
    assert d.cached_prefix_tokens(req).tolist() == [624, 0]
    fork = _Fork(d, d.cluster.request_token_limit())
    assert [rs.cached_prefix_tokens(fork.pending[0]) for rs in fork.replica_schedulers] == [624, 0]
    assert fork.pending[0].vp_prefix_hashes is req.vp_prefix_hashes  # immutable: shared, not copied
    fork.run(1, make_heuristic("round_robin"), float("inf"))
    assert fork.replica_schedulers[1].cached_prefix_tokens(req) == 624  # the fork's replica 1 cached it
    assert d.cached_prefix_tokens(req).tolist() == [624, 0] and req.vp_prefix_hit_tokens == 0
    d.assign(0)
    assert d.per_request()["prefix_hit_tokens"][1] == 624


def test_roofline_prices_a_prefill_after_a_cached_prefix_over_the_whole_kv():
    d = SimDriver(ClusterSpec(num_replicas=1), Trace([0.0], [10], [1]))
    predictor = d._replica_schedulers[0]._execution_time_predictor

    def time(q, kv):
        e = predictor.get_execution_time(Batch(0, [Request(0.0, kv, 1)], [q], [kv]), 0)
        return e.attention_prefill_execution_time, e.total_time

    attn = [time(256, kv)[0] for kv in (256, 1024, 2048, 4096)]
    assert np.all(np.diff(attn) > 0)  # the new tokens attend to the cached prefix too
    overhead = predictor._attn_overhead
    pairs = lambda q, kv: q * (kv - q) + q * (q + 1) / 2  # causal (query, key) pairs of the new tokens
    assert (attn[3] - overhead) / (attn[2] - overhead) == pytest.approx(pairs(256, 4096) / pairs(256, 2048), rel=0.02)
    assert time(256, 4096)[1] < 0.5 * time(4096, 4096)[1]  # still far cheaper than the whole prompt


def test_bad_prefix_caching_specs_are_clear_errors():
    trace = Trace([0.0], [64], [1], prefix_hashes=(chain(0, 2),), prefix_block_tokens=24)
    with pytest.raises(ScenarioError, match="multiple of env.block_size=16"):
        SimDriver(ClusterSpec(num_replicas=1, prefix_caching=True), trace)
    with pytest.raises(ScenarioError, match="prefix_caching needs replica_scheduler=vllm"):
        ClusterSpec(num_replicas=1, prefix_caching=True, replica_scheduler="sarathi").validate()
