"""A replica's prefix KV cache: vLLM's automatic prefix caching inside vidur's vLLM replica scheduler.

vidur 0.0.26 has no prefix reuse (its `CacheConfig.enable_prefix_caching` is read by no Python replica
scheduler): every prompt is prefilled from its first token. With the cache a
request's prompt comes as block hashes (`Trace.prefix_hashes`, attached to each vidur `Request` by
`vidur_ppo.sim.cluster`), each naming the whole prefix up to its block's end. A hash covers
`prefix_block_tokens` (G) tokens, which must be a multiple of vidur's KV `block_size`: one cache entry
is G / block_size of vidur's KV blocks, the unit every count below is converted from.

What vLLM (v1's KV cache manager) does, and this does:
- at admission the hit is the longest run of the prompt's leading hashes resident here, capped so at
  least one prompt token is computed; entries exist only once a prefill has computed them, so a
  prefix another request is still prefilling is not a hit;
- the hit counts as processed: the prefill batch runs prompt - hit q-tokens over the whole prompt as
  kv-tokens, and only the uncached remainder takes new KV blocks; hit entries are shared and
  reference-counted;
- after its prefill a request's full prompt blocks become entries; a block another request cached
  meanwhile stays private to this one and is freed with it (vLLM v1 would keep the copy resident as a
  second, evictable block of that hash: the same hits, and free memory either way);
- at completion or preemption its references drop; an unreferenced entry stays resident in free KV
  memory until an allocation needs the room, least recently released first (a chain's deepest block
  first); an entry a running request references is never evicted.
"""

from collections import OrderedDict
from dataclasses import dataclass
from math import ceil
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from vidur.config import VllmSchedulerConfig
from vidur.entities import Batch, Request
from vidur.scheduler.replica_scheduler.vllm_replica_scheduler import VLLMReplicaScheduler
from vidur.types import BaseIntEnum


class BlockHashes(tuple):
    """A request's hashes of full prompt blocks. Immutable, so a fork of the simulation (the deepcopy
    of routing/lookahead.py) shares them instead of copying every request's."""

    __slots__ = ()

    def __deepcopy__(self, memo) -> "BlockHashes":
        return self


class PrefixCache:
    """The resident entries of one replica: hash -> number of running requests referencing it, and
    the unreferenced ones in eviction order. Counts returned are vidur KV blocks."""

    def __init__(self, blocks_per_entry: int) -> None:
        self.blocks_per_entry = blocks_per_entry
        self._refs: Dict[int, int] = {}
        self._lru: "OrderedDict[int, None]" = OrderedDict()  # unreferenced, least recently released first

    @property
    def num_cached_blocks(self) -> int:
        return len(self._refs) * self.blocks_per_entry

    @property
    def num_evictable_blocks(self) -> int:
        return len(self._lru) * self.blocks_per_entry

    def num_hits(self, hashes: Sequence[int], limit: int) -> int:
        """Leading hashes resident, at most `limit`."""
        refs, k = self._refs, 0
        while k < limit and hashes[k] in refs:
            k += 1
        return k

    def num_unreferenced_blocks(self, hashes: Iterable[int]) -> int:
        """Blocks of these resident entries that acquiring them takes out of free memory."""
        return sum(self.blocks_per_entry for h in hashes if self._refs[h] == 0)

    def acquire(self, hashes: Iterable[int]) -> int:
        """Reference resident entries; returns the blocks that left free memory."""
        refs, moved = self._refs, 0
        for h in hashes:
            if refs[h] == 0:
                del self._lru[h]
                moved += self.blocks_per_entry
            refs[h] += 1
        return moved

    def add(self, h: int) -> bool:
        """A newly computed block, referenced by its request; False if the hash is already resident."""
        if h in self._refs:
            return False
        self._refs[h] = 1
        return True

    def release(self, hashes: Sequence[int]) -> int:
        """Drop one reference each; returns the blocks that became unreferenced (free, still resident).
        Released deepest first, so a chain's tail is evicted before its head (as vLLM frees blocks)."""
        refs, freed = self._refs, 0
        for h in reversed(hashes):
            refs[h] -= 1
            if refs[h] == 0:
                self._lru[h] = None
                freed += self.blocks_per_entry
        return freed

    def evict(self, num_blocks: int) -> None:
        """Drop least recently released entries until `num_blocks` blocks are free."""
        for _ in range(ceil(num_blocks / self.blocks_per_entry)):
            h, _ = self._lru.popitem(last=False)
            del self._refs[h]


class PrefixCachingSchedulerType(BaseIntEnum):
    """Our key in vidur's `ReplicaSchedulerRegistry` (vidur's own end at 10)."""

    VLLM_PREFIX_CACHING = 101


@dataclass
class PrefixCachingVllmSchedulerConfig(VllmSchedulerConfig):
    """vidur's vLLM scheduler config plus the tokens one prefix hash covers (the trace's G). Lives here,
    not in cluster.py, so its field type is a real type for vidur's CLI flattener (no postponed annotations)."""

    prefix_block_tokens: int = 16

    @staticmethod
    def get_type():
        return PrefixCachingSchedulerType.VLLM_PREFIX_CACHING


class PrefixCachingVLLMReplicaScheduler(VLLMReplicaScheduler):
    """`scheduler/replica_scheduler/vllm_replica_scheduler.py`'s scheduler with a `PrefixCache`.

    Accounting: `_allocation_map[id]` stays the blocks the request's sequence spans (upstream's decode
    growth reads it), shared ones included; `_num_allocated_blocks` counts physical blocks referenced by
    running requests, each shared entry once; unreferenced entries are free memory that an allocation
    evicts, so `_num_allocated_blocks` + evictable blocks <= `num_blocks` always.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._prefix_block_tokens = self._config.prefix_block_tokens
        blocks_per_entry, rest = divmod(self._prefix_block_tokens, self._cache_config.block_size)
        assert blocks_per_entry >= 1 and rest == 0, "prefix_block_tokens must be a multiple of block_size"
        self.prefix_cache = PrefixCache(blocks_per_entry)
        self._prefix_refs: Dict[int, List[int]] = {}  # running request id -> entries it references
        self._prefilling: Set[int] = set()  # admitted, prefill not yet done: its blocks are cached at its end
        self._admitting: Optional[Tuple[Request, Sequence[int]]] = None  # (queue head, its hit entries)

    def _hit_entries(self, request: Request) -> Sequence[int]:
        hashes = getattr(request, "vp_prefix_hashes", None)
        if not hashes:
            return ()
        limit = min(len(hashes), (request._num_prefill_tokens - 1) // self._prefix_block_tokens)
        return hashes[: self.prefix_cache.num_hits(hashes, limit)]

    def cached_prefix_tokens(self, request: Request) -> int:
        """Prompt tokens of `request` that would be a hit here now."""
        return len(self._hit_entries(request)) * self._prefix_block_tokens

    # --- admission: upstream's `_get_next_batch` calls these three in this order per queued request ---

    def _get_request_next_num_q_tokens(self, request: Request) -> int:
        """Upstream computes a new request's kv-tokens as `num_processed_tokens` + this, so the hit is
        set as processed here, the first call about the queue's head (undone in `_get_next_batch` if the
        head is not admitted). Both stage counters move: `entities/request.py` completes the prefill
        when its processed and stage-processed tokens reach the prompt."""
        if request._is_prefill_complete:
            return super()._get_request_next_num_q_tokens(request)
        hits = self._hit_entries(request)
        self._admitting = (request, hits)
        hit = len(hits) * self._prefix_block_tokens
        request._num_processed_tokens = request._num_stage_processed_tokens = hit
        return request._num_prefill_tokens - hit

    def _can_allocate_request(self, request: Request) -> bool:
        if request._id in self._allocation_map:
            return super()._can_allocate_request(request)
        _, hits = self._admitting  # this request's: upstream asked for its q-tokens just before
        cache = self.prefix_cache
        needed = self._new_blocks(request, hits) + cache.num_unreferenced_blocks(hits)
        return self._cache_config.num_blocks - self._num_allocated_blocks - needed >= self._watermark_blocks

    def _allocate_request(self, request: Request) -> None:
        if request._id in self._allocation_map:
            return super()._allocate_request(request)
        _, hits = self._admitting
        self._num_allocated_blocks += self.prefix_cache.acquire(hits)
        self._prefix_refs[request._id] = list(hits)
        self._prefilling.add(request._id)
        self.allocate(request._id, self._new_blocks(request, hits))
        self._allocation_map[request._id] += len(hits) * self.prefix_cache.blocks_per_entry
        if request._num_restarts == 0:
            request.vp_prefix_hit_tokens = len(hits) * self._prefix_block_tokens

    def _new_blocks(self, request: Request, hits: Sequence[int]) -> int:
        """KV blocks of the uncached remainder of a new request's prompt."""
        spans = ceil(request._num_prefill_tokens / self._cache_config.block_size)
        return spans - len(hits) * self.prefix_cache.blocks_per_entry

    def _get_next_batch(self, time: float) -> Batch:
        batch = super()._get_next_batch(time)
        if self._admitting is not None:
            head, self._admitting = self._admitting[0], None
            if head._id not in self._allocation_map:  # left queued: it has processed nothing
                head._num_processed_tokens = head._num_stage_processed_tokens = 0
        return batch

    # --- memory ---------------------------------------------------------------------------------

    def allocate(self, request_id: int, num_blocks: int) -> None:
        """Evict unreferenced entries first where free memory holds fewer than `num_blocks`."""
        cache, total = self.prefix_cache, self._cache_config.num_blocks
        short = self._num_allocated_blocks + cache.num_evictable_blocks + num_blocks - total
        if short > 0:
            cache.evict(short)
        super().allocate(request_id, num_blocks)
        assert self._num_allocated_blocks + cache.num_evictable_blocks <= total

    def free(self, *request_ids: int) -> None:
        """Private blocks return to free memory; shared entries lose a reference (resident until evicted)."""
        m = self.prefix_cache.blocks_per_entry
        for request_id in request_ids:
            shared = self._prefix_refs.pop(request_id)
            private = self._allocation_map.pop(request_id) - len(shared) * m
            self._num_allocated_blocks -= private + self.prefix_cache.release(shared)
        assert self._num_allocated_blocks >= 0

    def on_batch_end(self, batch: Batch) -> None:
        """A finished prefill's full prompt blocks become entries before upstream frees a finished request."""
        for request in batch.requests:
            if request._id not in self._prefilling:
                continue
            self._prefilling.remove(request._id)
            refs = self._prefix_refs[request._id]
            hashes = getattr(request, "vp_prefix_hashes", None) or ()
            for h in hashes[len(refs):]:
                if self.prefix_cache.add(h):
                    refs.append(h)
        super().on_batch_end(batch)
