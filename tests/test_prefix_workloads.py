"""Workloads whose prompts share prefixes (multi_turn, system_prompt, rag) and prefix-trace replay (Mooncake
JSONL, session CSV): their block hashes are deterministic and shared exactly where prompts share content,
`qps` is the mean request rate, every replay option keeps a request's hashes, and bad input is one line
naming the key. Small files of their own in tmp_path; the shared Mooncake trace only when present."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidur_ppo.checks import ConfigError
from vidur_ppo.sim import trace_csv
from vidur_ppo.sim.lengths import make_length_dist, mean_length
from vidur_ppo.sim.trace import Trace, TraceError, TraceWorkload, load_trace
from vidur_ppo.sim.workload import make_workload as sim_workload
from vidur_ppo.workloads import MultiTurnWorkloadConfig, make_workload
from vidur_ppo.workloads.families import family_spec

FAMILIES = ("multi_turn", "system_prompt", "rag")
G = 16
SHARED_MOONCAKE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake_synthetic_trace.jsonl"


@pytest.fixture(autouse=True)
def _fresh_cache():
    trace_csv.clear_trace_cache()
    yield
    trace_csv.clear_trace_cache()


def family(name, **over):
    """A family's workload (conf/workload/<name>.yaml) with some keys changed."""
    return sim_workload({k: v for k, v in {**family_spec(name), **over}.items() if k not in ("slo_ttft", "slo_tpot")})


def leading_equal(a, b) -> int:
    """How many leading blocks two requests' hashes share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def digest(trace: Trace) -> str:
    h = hashlib.sha256()
    for a in (trace.arrived_at, trace.num_prefill_tokens, trace.num_decode_tokens, *trace.prefix_hashes):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- synthetic families
@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_trace_and_hashes_in_every_process(name):
    w = family(name, num_requests=150)
    a, b, other = w.generate(3), w.generate(3), w.generate(4)
    assert digest(a) == digest(b) and digest(a) != digest(other)
    assert not set(np.concatenate(a.prefix_hashes).tolist()) & set(np.concatenate(other.prefix_hashes).tolist())
    assert a.prefix_block_tokens == G and all(len(h) == p // G for h, p in zip(a.prefix_hashes, a.num_prefill_tokens))
    assert np.all(a.num_prefill_tokens + a.num_decode_tokens <= w.max_total_tokens)
    if name == "rag":  # another process, another str-hash seed: the same hashes
        code = ("import sys; sys.path.insert(0, 'tests'); from test_prefix_workloads import family, digest; "
                f"print(digest(family({name!r}, num_requests=150).generate(3)))")
        env = {**os.environ, "PYTHONHASHSEED": "12345"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.stdout.strip() == digest(a), out.stderr[-2000:]


def test_a_turn_shares_every_earlier_turn_and_answer_of_its_session_and_nothing_else():
    r = family("multi_turn", num_requests=400, qps=8.0, think_time=5.0).requests(0)
    t, session, turn = r.trace, r.labels["session"], r.labels["turn"]
    hashes, prompt = t.prefix_hashes, t.num_prefill_tokens
    checked = 0
    for s in np.unique(session):
        mine = np.flatnonzero(session == s)
        assert np.all(np.diff(turn[mine]) == 1)  # a session's turns arrive in order
        for a, b in zip(mine[:-1], mine[1:]):  # turn k+1 = turn k's prompt + its answer + a new message
            assert prompt[b] > prompt[a] + t.num_decode_tokens[a]
            assert leading_equal(hashes[a], hashes[b]) == len(hashes[a]) == prompt[a] // G
        for a, b, c in zip(mine[:-2], mine[1:-1], mine[2:]):  # turn k's answer blocks reach turn k+2 too
            shared = (prompt[a] + t.num_decode_tokens[a]) // G
            assert np.array_equal(hashes[b][:shared], hashes[c][:shared])
            checked += 1
    assert checked >= 5
    first = {int(s): hashes[np.flatnonzero(session == s)[0]] for s in np.unique(session)}
    others = [h for h in first.values() if len(h)]
    assert len({int(h[0]) for h in others}) == len(others)  # sessions never share a block
    blocks = np.concatenate(hashes)
    owner = np.repeat(session, [len(h) for h in hashes])
    assert all(len(np.unique(owner[blocks == x])) == 1 for x in np.unique(blocks)[:500])


def test_a_template_shares_its_blocks_and_no_more():
    r = family("system_prompt", num_requests=120).requests(1)
    hashes, lab = r.trace.prefix_hashes, r.labels
    seen = {"template": 0, "tenant": 0, "none": 0}
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if lab["template"][i] == lab["template"][j]:
                common, key = lab["system_tokens"][i] + lab["examples_tokens"][i], "template"
            elif lab["tenant"][i] == lab["tenant"][j]:
                common, key = lab["system_tokens"][i], "tenant"
            else:
                common, key = 0, "none"
            assert leading_equal(hashes[i], hashes[j]) == common // G, (i, j, key)
            seen[key] += 1
    assert min(seen.values()) > 0
    counts = np.bincount(lab["template"])
    assert counts.max() > 4 * np.median(counts[counts > 0])  # Zipf: a few templates are most requests


def test_rag_requests_share_the_instruction_and_their_common_leading_documents():
    w = family("rag", num_requests=150, documents=40)
    r = w.requests(2)
    hashes, docs, doc_tokens = r.trace.prefix_hashes, r.labels["docs"], r.labels["doc_tokens"]
    assert all(len(set(row)) == len(row) for row in docs.tolist())  # distinct documents per prompt
    for i in range(60):
        for j in range(i + 1, 60):
            same = 0
            while same < docs.shape[1] and docs[i, same] == docs[j, same]:
                same += 1
            common = w.instruction_tokens + int(doc_tokens[i, :same].sum())
            assert leading_equal(hashes[i], hashes[j]) == common // G


@pytest.mark.parametrize("name", FAMILIES)
def test_qps_is_the_mean_request_rate_from_the_first_request(name):
    rates, early, late = [], [], []
    for seed in range(3):
        t = family(name, num_requests=2000, qps=20.0).generate(seed).arrived_at
        rates.append((len(t) - 1) / (t[-1] - t[0]))
        q = np.quantile(t, [0.25, 0.75])  # no warm-up ramp: as many requests early as late
        early.append(np.mean(t <= t[0] + (t[-1] - t[0]) / 4))
        late.append(np.mean(t >= t[-1] - (t[-1] - t[0]) / 4))
        assert q[0] < q[1]
    assert np.mean(rates) == pytest.approx(20.0, rel=0.05)
    assert np.mean(early) == pytest.approx(np.mean(late), abs=0.03)


def test_sessions_end_where_the_next_turn_would_not_fit():
    w = family("multi_turn", num_requests=300, max_total_tokens=2100, think_time=2.0)
    r = w.requests(0)
    t = r.trace
    assert np.all(t.num_prefill_tokens + t.num_decode_tokens <= 2100)
    assert t.max_total_tokens > 1700  # long sessions reach the limit rather than being cut early
    assert r.labels["turn"].max() >= 3


def test_geometric_turns():
    d = make_length_dist({"kind": "geometric", "p": 0.5, "min": 1, "max": 32})
    x = d.sample(np.random.default_rng(0), 20_000)
    assert mean_length(d) == pytest.approx(2.0, abs=1e-6) and x.mean() == pytest.approx(2.0, abs=0.05)
    assert x.min() == 1 and (x == 1).mean() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("spec,message", [
    ({"think_time": -1.0}, r"^workload\.think_time must be >= 0"),
    ({"max_total_tokens": 500}, r"^workload\.max_total_tokens must hold the longest request"),
    ({"user": None}, r"^workload\.user must be a length spec"),
    ({"user": {"kind": "lognormal", "median": -3, "sigma": 1.0, "min": 1, "max": 9}},
     r"^workload\.user\.median must be > 0"),
    ({"qps": 0}, r"^workload\.qps must be > 0"),
    ({"load": -1}, r"^workload\.load must be a finite number > 0"),
])
def test_bad_family_values_are_one_line_naming_the_key(spec, message):
    base = {k: v for k, v in family_spec("multi_turn").items() if k != "kind"}
    with pytest.raises(ConfigError, match=message) as ei:
        MultiTurnWorkloadConfig(**{**base, **spec})
    assert "\n" not in str(ei.value)


def test_bad_rag_and_template_keys_name_the_key():
    with pytest.raises(ValueError, match=r"'docs_per_request' must be in \[1, documents=3\]"):
        family("rag", documents=3, docs_per_request=4)
    with pytest.raises(ValueError, match=r"'template_zipf' must be >= 0"):
        family("system_prompt", template_zipf=-1)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['think_time'\] \('think_time' only apply to "
                                         r"kind=multi_turn\)"):
        family("rag", think_time=3.0)
    with pytest.raises(ConfigError, match=r"^workload\.max_total_tokens must hold"):
        make_workload({**family_spec("rag"), "max_total_tokens": 2000})


# ---------------------------------------------------------------- Mooncake JSONL
MOONCAKE = [  # three 512-token prefix blocks shared in part; output_length tells the rows apart
    {"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [1, 2, 3]},
    {"timestamp": 1500, "input_length": 600, "output_length": 6, "hash_ids": [1, 4]},
    {"timestamp": 2500, "input_length": 1024, "output_length": 7, "hash_ids": [1, 2]},
    {"timestamp": 4000, "input_length": 300, "output_length": 8, "hash_ids": [9]},
]


def mooncake_file(tmp_path, rows=MOONCAKE, name="t.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def hashes_by_output(trace):
    return {int(d): h.tolist() for d, h in zip(trace.num_decode_tokens, trace.prefix_hashes)}


def test_mooncake_jsonl_times_in_seconds_and_hash_ids_as_512_token_blocks(tmp_path):
    t = load_trace(mooncake_file(tmp_path))
    assert t.arrived_at.tolist() == [0.0, 1.5, 2.5, 4.0] and t.num_prefill_tokens.tolist() == [1100, 600, 1024, 300]
    assert t.prefix_block_tokens == 512 and hashes_by_output(t) == {5: [1, 2, 3], 6: [1, 4], 7: [1, 2], 8: [9]}
    # reused: request 1's first block, request 2's two blocks (the last partial blocks are never reused)
    assert t.prefix_reuse() == pytest.approx((512 + 1024) / (1100 + 600 + 1024 + 300))
    same = load_trace(mooncake_file(tmp_path, name="t.txt"), format="jsonl")
    assert hashes_by_output(same) == hashes_by_output(t)


def test_clip_keeps_whole_blocks_and_drop_keeps_each_rows_hashes(tmp_path):
    path = mooncake_file(tmp_path)
    clipped = load_trace(path, overlong="clip", max_total_tokens=1000)
    assert clipped.num_clipped == 2 and clipped.num_prefill_tokens.tolist() == [995, 600, 993, 300]
    assert hashes_by_output(clipped) == {5: [1], 6: [1, 4], 7: [1], 8: [9]}  # 995 and 993 tokens: one whole block
    dropped = load_trace(path, overlong="drop", max_total_tokens=1000)
    assert hashes_by_output(dropped) == {6: [1, 4], 8: [9]}
    assert dropped.arrived_at.tolist() == [1.5, 4.0]


def test_every_replay_option_keeps_a_requests_hashes(tmp_path):
    rows = [{"timestamp": 250 * i, "input_length": 520 + i, "output_length": i + 1, "hash_ids": [i % 3, 100 + i]}
            for i in range(40)]
    path = mooncake_file(tmp_path, rows)
    expect = {i + 1: [i % 3, 100 + i] for i in range(40)}
    for options in ({"max_requests": 7, "window": "seed"}, {"subsample": 0.5}, {"time_window": [2.0, 6.0]},
                    {"qps": 9.0}, {"arrival": "poisson", "qps": 3.0}, {"max_requests": 5, "overlong": "drop",
                                                                     "max_total_tokens": 560}):
        t = load_trace(path, seed=4, **options)
        assert all(expect[d] == h for d, h in hashes_by_output(t).items()), options
    assert len(load_trace(path, time_window=[2.0, 6.0])) == 16


@pytest.mark.parametrize("line,pattern", [
    ('{"timestamp": 0, "input_length": 10, "output_length": 2}', r"line 2: missing key\(s\) \['hash_ids'\]"),
    ('{"timestamp": -1, "input_length": 10, "output_length": 2, "hash_ids": []}', r"line 2, key 'timestamp'"),
    ('{"timestamp": 1, "input_length": 10.5, "output_length": 2, "hash_ids": []}', r"line 2, key 'input_length'"),
    ('{"timestamp": 1, "input_length": 10, "output_length": 0, "hash_ids": []}', r"line 2, key 'output_length'"),
    ('{"timestamp": 1, "input_length": 600, "output_length": 2, "hash_ids": [1, 2, 3]}',
     r"line 2, key 'hash_ids': must be a list of at most ceil\(input_length / 512\) = 2"),
    ('{"timestamp": 1, "input_length": 600, "output_length": 2, "hash_ids": [1, "x"]}', r"line 2, key 'hash_ids'.*'x'"),
    ('{"timestamp": 1, "input_length": 600, "output_length": 2, "hash_ids": [1.0]}', r"line 2, key 'hash_ids'.*1\.0"),
    ('{"timestamp": 1, "input_length": 10', r"line 2: not JSON"),
    ('[1, 2]', r"line 2: must be a JSON object"),
])
def test_bad_jsonl_lines_are_one_line_naming_line_and_key(tmp_path, line, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(MOONCAKE[0]) + "\n" + line + "\n")
    assert str(path) in one_line_error(path, pattern)


def one_line_error(path, pattern: str, **replay) -> str:
    """The TraceError replaying `path` raises: it matches `pattern` and is one line."""
    with pytest.raises(TraceError, match=pattern) as ei:
        load_trace(path, **replay)
    assert "\n" not in str(ei.value)
    return str(ei.value)


def test_unsorted_times_and_bad_format_name_the_key(tmp_path):
    path = mooncake_file(tmp_path, [MOONCAKE[1], MOONCAKE[0]])
    with pytest.raises(TraceError, match=r"line 2, key 'timestamp': times not sorted"):
        load_trace(path)
    with pytest.raises(TraceError, match=r"'format' must be one of \['auto', 'csv', 'jsonl'\], got 'xml'"):
        TraceWorkload(path, format="xml")


@pytest.mark.skipif(not SHARED_MOONCAKE.exists(), reason="the shared Mooncake trace is not here")
def test_the_shared_mooncake_trace_replays_with_its_prefixes():
    t = load_trace(SHARED_MOONCAKE)
    assert len(t) == 3993 and t.prefix_block_tokens == 512
    assert t.num_prefill_tokens.mean() == pytest.approx(15325, rel=0.01) and 0.5 < t.prefix_reuse() < 0.8
    window = TraceWorkload(str(SHARED_MOONCAKE), max_requests=300, overlong="clip", max_total_tokens=32768).generate(1)
    assert window.num_clipped > 0 and all(len(h) <= -(-p // 512) for h, p in zip(window.prefix_hashes,
                                                                                   window.num_prefill_tokens))


# ---------------------------------------------------------------- session CSV
SESSIONS = ("arrived_at,session_id,num_new_tokens,num_decode_tokens\n"
            "0,a,20,10\n1,b,40,5\n2,a,30,12\n3, a ,5,3\n4,b,10,2\n")


def test_a_session_csv_turn_is_its_sessions_history_plus_new_tokens(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(SESSIONS)
    t = load_trace(path)
    assert t.num_prefill_tokens.tolist() == [20, 40, 60, 77, 55] and t.prefix_block_tokens == G
    h = t.prefix_hashes
    assert [len(x) for x in h] == [1, 2, 3, 4, 3]
    assert leading_equal(h[0], h[2]) == 1 and leading_equal(h[2], h[3]) == 3  # a's turns: every earlier block
    assert leading_equal(h[1], h[4]) == 2 and leading_equal(h[0], h[1]) == 0  # b's; nothing across sessions
    window = load_trace(path, max_requests=2, window="seed", seed=1)
    assert all(np.array_equal(x, h[list(t.num_decode_tokens).index(d)])
               for x, d in zip(window.prefix_hashes, window.num_decode_tokens))


@pytest.mark.parametrize("body,pattern", [
    ("session_id,num_prefill_tokens,num_new_tokens,num_decode_tokens\na,1,1,1\n", r"takes 'num_new_tokens'"),
    ("session_id,num_decode_tokens\na,1\n", r"missing column\(s\) \['num_new_tokens'\]"),
    ("session_id,num_new_tokens,num_decode_tokens\na,1,1\n,2,2\n", r"row 2, column 'session_id': empty"),
    ("session_id,num_new_tokens,num_decode_tokens\na,1,1\na,x,2\n", r"row 2, column 'num_new_tokens'"),
])
def test_bad_session_csv_is_one_line_naming_the_column(tmp_path, body, pattern):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    one_line_error(path, pattern, arrival="poisson", qps=1.0)


def test_the_mooncake_option_names_its_path_when_the_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDUR_PPO_TRACE_DIR", str(tmp_path))
    spec = family_spec("mooncake")
    assert spec["path"] == f"{tmp_path}/mooncake_synthetic_trace.jsonl" and spec["format"] == "jsonl"
    with pytest.raises(ConfigError, match=r"^workload\.path file not found: ") as ei:
        make_workload(spec)
    assert "\n" not in str(ei.value)
    Path(spec["path"]).write_text("".join(json.dumps(r) + "\n" for r in MOONCAKE))
    t = make_workload({**spec, "max_total_tokens": 1000}).generate(0)
    assert t.num_clipped == 2 and len(t) == 4
