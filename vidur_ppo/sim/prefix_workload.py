"""Synthetic workloads whose prompts share prefixes, with the block hashes a prefix cache reads.

Three families, each a prompt built from content segments (`prefix_hash`), seeded with numpy like
`SyntheticWorkload`, and `qps` always the mean request rate:

* `multi_turn`: chat sessions. A session of T turns (T from `turns`) sends turn k's prompt = every
  earlier user message and answer + a new user message (`user` tokens), the next turn after the answer
  has streamed (`answer_tpot` s per output token) and an exponential think time (mean `think_time` s).
  Sessions start as a Poisson process at qps / E[turns] sessions/s, from far enough before t = 0 that
  the episode is in the steady state (the request rate is qps from the first request on). A session
  ends early when its next turn would exceed `max_total_tokens` (the user opens a new chat).
* `system_prompt`: `tenants` tenants, each with a system prompt (`system` tokens) and
  `templates_per_tenant` few-shot templates (`examples` tokens); each request picks a template by Zipf
  popularity (`template_zipf`, ranks in a seeded order) and adds a unique query (`query` tokens).
* `rag`: a shared instruction (`instruction_tokens`), then `docs_per_request` distinct documents of a
  `documents`-document corpus drawn by Zipf popularity (`doc_zipf`, in retrieval order), then a unique
  question (`question` tokens).

Every request's prompt + output fits `max_total_tokens` (system_prompt and rag: checked on the length
specs' maxima, at construction). No vidur import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, NamedTuple

import numpy as np

from vidur_ppo.sim.lengths import LengthDist, length_dist_at, max_length
from vidur_ppo.sim.prefix_hash import PREFIX_BLOCK_TOKENS, block_hashes, key_of, mix
from vidur_ppo.sim.trace import Trace, renewal_arrivals
from vidur_ppo.sim.trace import coerce_number as _coerce

__all__ = ["PrefixRequests", "MultiTurnWorkload", "SystemPromptWorkload", "RagWorkload", "PREFIX_WORKLOADS"]

#: sessions whose structure is drawn at a time (the first also sets the session rate and the warm-up)
_SESSION_CHUNK = 4096


class PrefixRequests(NamedTuple):
    """A generated trace and, per request, what its prompt is made of (for checks and tests): multi_turn
    {"session", "turn"}; system_prompt {"tenant", "template", "system_tokens", "examples_tokens"}; rag
    {"docs": [n, k] in prompt order, "doc_tokens": [n, k]}."""

    trace: Trace
    labels: Dict[str, np.ndarray]


def _space(name: str, seed: int) -> np.uint64:
    """A key space: keys of different kinds of segment, or of different seeds' traces (whose contents
    differ), never coincide."""
    return mix(key_of(f"vidur_ppo.prefix.{name}"), int(seed))[0]


@dataclass
class _PrefixWorkload:
    """What the three families share: size, rate, outputs, token limit and hash block size."""

    KIND: ClassVar[str] = ""
    LENGTH_KEYS: ClassVar[tuple] = ("decode",)

    num_requests: int
    qps: float
    decode: Mapping = field(kw_only=True)
    max_total_tokens: int = field(default=4096, kw_only=True)
    prefix_block_tokens: int = field(default=PREFIX_BLOCK_TOKENS, kw_only=True)

    @property
    def where(self) -> str:
        return f"{self.KIND} workload"

    def __post_init__(self) -> None:
        self._number("num_requests", int, lambda v: v >= 1, "must be >= 1")
        self._number("qps", float, lambda v: v > 0, "must be > 0")
        self._number("max_total_tokens", int, lambda v: v >= 2, "must be >= 2")
        self._number("prefix_block_tokens", int, lambda v: v >= 1, "must be >= 1")
        self.dists: Dict[str, LengthDist] = {k: length_dist_at(getattr(self, k), k, self.where)
                                             for k in self.LENGTH_KEYS}
        self._check()

    def _number(self, key: str, typ: type, ok, what: str) -> Any:
        value = _coerce(key, getattr(self, key), typ, self.where)
        if not ok(value):
            raise ValueError(f"{self.where}: '{key}' {what}, got {value}")
        setattr(self, key, value)
        return value

    def _check(self) -> None:
        """The family's own keys; and that its longest request fits `max_total_tokens`."""

    def _fits(self, longest: int, parts: str) -> None:
        if longest > self.max_total_tokens:
            raise ValueError(f"{self.where}: 'max_total_tokens' must hold the longest request ({parts}: "
                             f"{longest} tokens), got {self.max_total_tokens}")

    def _streams(self, seed: int, n: int) -> List[np.random.Generator]:
        return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]

    def generate(self, seed: int) -> Trace:
        """Same seed -> same trace (numpy streams spawned from the seed; hashes with no process state)."""
        return self.requests(seed).trace

    def requests(self, seed: int) -> PrefixRequests:
        raise NotImplementedError

    def _trace(self, t: np.ndarray, decode: np.ndarray, ids: np.ndarray, lens: np.ndarray) -> Trace:
        """A trace whose request i's prompt is the segments with chained ids ids[i] and lengths lens[i]."""
        g = self.prefix_block_tokens
        hashes = tuple(block_hashes(i, n, g) for i, n in zip(ids, lens))
        return Trace(t, lens.sum(axis=1), decode, prefix_hashes=hashes, prefix_block_tokens=g)


def _zipf_popularity(rng: np.random.Generator, n: int, theta: float) -> np.ndarray:
    """Probabilities of n items, rank r (in a seeded order) ∝ r^-theta (theta 0: uniform)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -theta
    return (w / w.sum())[rng.permutation(n)]


@dataclass
class MultiTurnWorkload(_PrefixWorkload):
    """Chat sessions (module docstring): qps requests/s, sessions at qps / E[turns]."""

    KIND: ClassVar[str] = "multi_turn"
    LENGTH_KEYS: ClassVar[tuple] = ("turns", "user", "decode")

    turns: Mapping = field(kw_only=True)
    user: Mapping = field(kw_only=True)
    think_time: float = field(default=30.0, kw_only=True)
    answer_tpot: float = field(default=0.1, kw_only=True)

    def _check(self) -> None:
        self._number("think_time", float, lambda v: v >= 0, "must be >= 0 (seconds)")
        self._number("answer_tpot", float, lambda v: v >= 0, "must be >= 0 (seconds per output token)")
        self._fits(max_length(self.dists["user"]) + max_length(self.dists["decode"]), "a first turn's user + decode")

    def _sessions(self, rng: np.random.Generator, first: int) -> Dict[str, np.ndarray]:
        """_SESSION_CHUNK sessions' turns (numbered from session `first`), cut where a turn would exceed
        max_total_tokens: session, turn, user and answer tokens, time since the session's first turn."""
        turns = self.dists["turns"].sample(rng, _SESSION_CHUNK)
        total = int(turns.sum())
        user, answer = self.dists["user"].sample(rng, total), self.dists["decode"].sample(rng, total)
        gap = answer * self.answer_tpot + rng.standard_exponential(total) * self.think_time
        start = np.repeat(np.cumsum(turns) - turns, turns)  # index of each turn's first turn
        tokens, since = np.cumsum(user + answer), np.cumsum(gap) - gap
        tokens = tokens - (tokens - user - answer)[start]  # prompt + output of the turn: the history so far
        since = since - since[start]
        keep = tokens <= self.max_total_tokens  # a prefix of each session's turns (tokens grow)
        out = {"session": first + np.repeat(np.arange(_SESSION_CHUNK), turns), "turn": np.arange(total) - start,
               "user": user, "answer": answer, "since": since}
        return {k: v[keep] for k, v in out.items()}

    def requests(self, seed: int) -> PrefixRequests:
        r_sessions, r_starts = self._streams(seed, 2)
        chunks = [self._sessions(r_sessions, 0)]
        pilot = chunks[0]
        per_session = np.bincount(pilot["session"], minlength=_SESSION_CHUNK)
        rate = self.qps / per_session.mean()  # sessions/s: requests/s = rate x mean turns (cut turns counted)
        warmup = float(np.max(pilot["since"]))  # sessions started this long before 0 still send turns after it
        gaps = [r_starts.standard_exponential(_SESSION_CHUNK) / rate]
        n = self.num_requests
        while True:
            starts = np.cumsum(np.concatenate(gaps)) - warmup
            turns = {k: np.concatenate([c[k] for c in chunks]) for k in pilot}
            t = starts[turns["session"]] + turns["since"]
            later = np.flatnonzero(t >= 0)
            if len(later) >= n:
                order = later[np.argsort(t[later], kind="stable")][:n]
                if starts[-1] > t[order[-1]]:  # no later session can send a turn before the n-th
                    break
            chunks.append(self._sessions(r_sessions, _SESSION_CHUNK * len(chunks)))
            gaps.append(r_starts.standard_exponential(_SESSION_CHUNK) / rate)
        hashes, prompts = self._prompts(turns, order, _space(self.KIND, seed))
        trace = Trace(t[order], prompts, turns["answer"][order], prefix_hashes=hashes,
                      prefix_block_tokens=self.prefix_block_tokens)
        return PrefixRequests(trace, {"session": turns["session"][order], "turn": turns["turn"][order]})

    def _prompts(self, turns: Dict[str, np.ndarray], order: np.ndarray, space: np.uint64) -> tuple:
        """(hashes, prompt lengths) of the turns `order`. Turn k of a session is the segments [user_1,
        answer_1, ..., user_k], segment j named (session, j): its blocks are the first ones of the session's
        whole conversation, whose hashes are computed once per session."""
        g = self.prefix_block_tokens
        hashes, prompts = [None] * len(order), np.empty(len(order), np.int64)
        sessions, first, count = np.unique(turns["session"], return_index=True, return_counts=True)  # contiguous
        mine = np.searchsorted(sessions, turns["session"][order])
        for j in np.unique(mine):
            rows = slice(first[j], first[j] + count[j])
            lens = np.column_stack([turns["user"][rows], turns["answer"][rows]]).reshape(-1)[:-1]
            ends = np.cumsum(lens)
            whole = block_hashes(mix(mix(space, sessions[j]), np.arange(len(lens))), lens, g)
            for i in np.flatnonzero(mine == j):
                prompts[i] = ends[2 * int(turns["turn"][order[i]])]
                hashes[i] = whole[: prompts[i] // g]
        return tuple(hashes), prompts


@dataclass
class SystemPromptWorkload(_PrefixWorkload):
    """Tenants' system prompts and few-shot templates shared by many requests (module docstring)."""

    KIND: ClassVar[str] = "system_prompt"
    LENGTH_KEYS: ClassVar[tuple] = ("system", "examples", "query", "decode")

    tenants: int = field(default=8, kw_only=True)
    templates_per_tenant: int = field(default=4, kw_only=True)
    template_zipf: float = field(default=1.0, kw_only=True)
    system: Mapping = field(kw_only=True)
    examples: Mapping = field(kw_only=True)
    query: Mapping = field(kw_only=True)

    def _check(self) -> None:
        self._number("tenants", int, lambda v: v >= 1, "must be >= 1")
        self._number("templates_per_tenant", int, lambda v: v >= 1, "must be >= 1")
        self._number("template_zipf", float, lambda v: v >= 0, "must be >= 0 (0: uniform)")
        self._fits(sum(max_length(self.dists[k]) for k in self.LENGTH_KEYS), "system + examples + query + decode")

    def requests(self, seed: int) -> PrefixRequests:
        r_arr, r_pick, r_len = self._streams(seed, 3)
        n, m = self.num_requests, self.tenants * self.templates_per_tenant
        system, examples = self.dists["system"].sample(r_len, self.tenants), self.dists["examples"].sample(r_len, m)
        query, decode = self.dists["query"].sample(r_len, n), self.dists["decode"].sample(r_len, n)
        template = r_pick.choice(m, size=n, p=_zipf_popularity(r_pick, m, self.template_zipf))
        tenant = template // self.templates_per_tenant
        sys_ids = mix(_space("system", seed), np.arange(self.tenants))
        tpl_ids = mix(sys_ids[np.arange(m) // self.templates_per_tenant], mix(_space("template", seed), np.arange(m)))
        q_ids = mix(tpl_ids[template], mix(_space("query", seed), np.arange(n)))
        ids = np.column_stack([sys_ids[tenant], tpl_ids[template], q_ids])
        lens = np.column_stack([system[tenant], examples[template], query])
        t = renewal_arrivals(r_arr, n, self.qps)
        labels = {"tenant": tenant, "template": template, "system_tokens": lens[:, 0], "examples_tokens": lens[:, 1]}
        return PrefixRequests(self._trace(t, decode, ids, lens), labels)


@dataclass
class RagWorkload(_PrefixWorkload):
    """Retrieval-augmented requests sharing Zipf-popular documents (module docstring)."""

    KIND: ClassVar[str] = "rag"
    LENGTH_KEYS: ClassVar[tuple] = ("document", "question", "decode")

    instruction_tokens: int = field(default=128, kw_only=True)
    documents: int = field(default=1000, kw_only=True)
    docs_per_request: int = field(default=2, kw_only=True)
    doc_zipf: float = field(default=1.0, kw_only=True)
    document: Mapping = field(kw_only=True)
    question: Mapping = field(kw_only=True)

    def _check(self) -> None:
        self._number("instruction_tokens", int, lambda v: v >= 0, "must be >= 0")
        self._number("documents", int, lambda v: v >= 1, "must be >= 1")
        self._number("docs_per_request", int, lambda v: 1 <= v <= self.documents,
                     f"must be in [1, documents={self.documents}]")
        self._number("doc_zipf", float, lambda v: v >= 0, "must be >= 0 (0: uniform)")
        longest = (self.instruction_tokens + self.docs_per_request * max_length(self.dists["document"])
                   + max_length(self.dists["question"]) + max_length(self.dists["decode"]))
        self._fits(longest, "instruction + docs_per_request x document + question + decode")

    def requests(self, seed: int) -> PrefixRequests:
        r_arr, r_pick, r_len = self._streams(seed, 3)
        n, k = self.num_requests, self.docs_per_request
        doc_len = self.dists["document"].sample(r_len, self.documents)
        question, decode = self.dists["question"].sample(r_len, n), self.dists["decode"].sample(r_len, n)
        docs = _distinct_draws(r_pick, _zipf_popularity(r_pick, self.documents, self.doc_zipf), n, k)
        ids = [np.full(n, mix(_space("instruction", seed), 0)[0])]
        for j in range(k):  # each id chains the instruction and the documents before it
            ids.append(mix(ids[-1], mix(_space("document", seed), docs[:, j])))
        ids.append(mix(ids[-1], mix(_space("question", seed), np.arange(n))))
        lens = np.column_stack([np.full(n, self.instruction_tokens), doc_len[docs], question])
        t = renewal_arrivals(r_arr, n, self.qps)
        return PrefixRequests(self._trace(t, decode, np.column_stack(ids), lens),
                              {"docs": docs, "doc_tokens": doc_len[docs]})


def _distinct_draws(rng: np.random.Generator, p: np.ndarray, n: int, k: int) -> np.ndarray:
    """n rows of k distinct items drawn in turn with probabilities p (sampling without replacement:
    a draw equal to an earlier one of its row is redrawn)."""
    cdf = np.cumsum(p)
    out = np.empty((n, k), np.int64)
    for j in range(k):
        redo = np.arange(n)
        while len(redo):
            out[redo, j] = np.minimum(np.searchsorted(cdf, rng.random(len(redo)) * cdf[-1], side="right"), len(p) - 1)
            redo = redo[(out[redo, :j] == out[redo, j, None]).any(axis=1)]
    return out


#: kind -> class (the `kind` of a workload spec)
PREFIX_WORKLOADS = {cls.KIND: cls for cls in (MultiTurnWorkload, SystemPromptWorkload, RagWorkload)}
