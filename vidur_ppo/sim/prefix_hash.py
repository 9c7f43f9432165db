"""Prefix block hashes of prompts built from content segments (`Trace.prefix_hashes`).

A prompt is a sequence of segments (a system prompt, a document, a user turn, an answer...), each
named by a *chained* id: the id of a segment names its content and everything before it (its
parent's id mixed with its own key), so two prompts that start with the same segments give them the
same ids. A block of G tokens ending at offset o of segment s then names the whole prefix up to its
end by (id of s, o) alone, so block hashes come out vectorised, with no token ids and no Python
`hash()` (randomised per process): the same inputs give the same hashes in every process.
"""

from __future__ import annotations

import hashlib
from typing import Union

import numpy as np

__all__ = ["PREFIX_BLOCK_TOKENS", "mix", "key_of", "chain", "block_hashes"]

#: tokens per hashed block unless a format says otherwise: vLLM's KV block and vidur's default block_size
PREFIX_BLOCK_TOKENS = 16

_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
IntLike = Union[int, np.integer, np.ndarray]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al., OOPSLA'14): a bijection of uint64 that mixes every bit
    (uint64 arrays wrap around silently, as the finaliser needs)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _u64(x: IntLike) -> np.ndarray:
    """As a 1-D uint64 array (negative int64 hashes wrap, as their bits)."""
    if np.ndim(x) == 0:
        return np.array([int(x) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    return np.asarray(x).astype(np.uint64).reshape(-1)


def mix(a: IntLike, b: IntLike) -> np.ndarray:
    """uint64 hash of the pairs (a, b), elementwise (a: a parent id, b: a key or an offset)."""
    return _splitmix64(_splitmix64(_u64(a)) ^ _u64(b))


def key_of(text: str) -> int:
    """A stable 64-bit key for a name (a session id of a trace file, a family's tag)."""
    return int.from_bytes(hashlib.blake2b(str(text).encode(), digest_size=8).digest(), "little")


def chain(parent: IntLike, keys: IntLike) -> np.ndarray:
    """Chained ids of segments with these keys following a segment with id `parent` (0: the start)."""
    out = np.empty(len(_u64(keys)), np.uint64)
    h = _u64(parent)
    for i, k in enumerate(_u64(keys)):
        h = mix(h, k)
        out[i] = h[0]
    return out


def block_hashes(seg_ids: np.ndarray, seg_lens: np.ndarray, block: int) -> np.ndarray:
    """int64 hashes of the full `block`-token blocks of a prompt made of these segments (chained ids,
    lengths in tokens): block j names (the segment holding its last token, that token's offset + 1).
    A trailing partial block is not hashed."""
    lens = np.asarray(seg_lens, dtype=np.int64)
    ends = np.cumsum(lens)
    n = int(ends[-1]) // block if len(ends) else 0
    pos = np.arange(1, n + 1, dtype=np.int64) * block
    k = np.searchsorted(ends, pos, side="left")  # the first segment reaching the block's end
    offset = pos - (ends[k] - lens[k])
    return mix(np.asarray(seg_ids, dtype=np.uint64)[k], offset.astype(np.uint64)).view(np.int64)
