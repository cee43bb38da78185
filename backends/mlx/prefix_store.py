"""Token-keyed LRU store with a byte cap: the bookkeeping half of the prefix cache.

Keys are token sequences packed as big-endian 4-byte words, so `bytes` ordering is
the lexicographic order of the token sequences and comparisons run in C. Keys are
kept sorted: the longest common prefix of a query with *any* key is reached at one
of its two sorted neighbours, so a lookup is a bisect plus two prefix comparisons,
whatever the number of entries (a token trie would cost a dict per token).

Two modes, by what the model's caches can do:

* `trimmable`: an entry serves any prompt sharing a prefix with it (the caller
  trims a view of it). A key that is a prefix of another is redundant, so the
  store keeps none: inserting a covered key only refreshes the covering entry,
  and a new key drops the stored key it extends.
* exact: an entry serves only prompts that extend its whole key.

Payloads are opaque (no mlx here); the caller says how many bytes each holds.
`used` never exceeds `capacity`, not even between an eviction and an insert.
"""

from __future__ import annotations

import bisect
import sys
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_WORD = 4


def pack(tokens: Sequence[int]) -> bytes:
    """Tokens as a key whose byte order is the sequence's lexicographic order."""
    words = array("I", tokens)
    assert words.itemsize == _WORD
    if sys.byteorder == "little":
        words.byteswap()
    return words.tobytes()


def common_tokens(a: bytes, b: bytes) -> int:
    """Length in tokens of the common prefix of two packed keys (binary search on
    slice equality: log n memcmp's instead of a Python loop per token)."""
    low, high = 0, min(len(a), len(b))
    if a[:high] == b[:high]:
        return high // _WORD
    while high - low > 1:  # a[:low] == b[:low] and a[:high] != b[:high]
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low // _WORD


@dataclass(frozen=True)
class Hit(Generic[T]):
    """`length` tokens of the prompt are in `payload` (whose key has `stored` tokens)."""

    length: int
    stored: int
    payload: T


@dataclass(frozen=True)
class _Entry(Generic[T]):
    payload: T
    nbytes: int


class PrefixStore(Generic[T]):
    """Entries by token prefix, least recently used evicted first, at most `capacity` bytes."""

    def __init__(self, capacity: int, *, trimmable: bool = True) -> None:
        self.capacity = capacity
        self.trimmable = trimmable
        self.used = 0
        self.hits = 0
        self.misses = 0
        self.hit_tokens = 0
        self._keys: list[bytes] = []  # sorted
        self._entries: OrderedDict[bytes, _Entry[T]] = OrderedDict()  # oldest use first

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int]) -> Hit[T] | None:
        """The entry sharing the longest usable prefix with `tokens`, marked as used.

        At most `len(tokens) - 1` tokens are usable: the last prompt token must run
        through the model to give the next token's logits.
        """
        found = self._find(pack(tokens)[:-_WORD]) if tokens else None
        if found is None:
            self.misses += 1
            return None
        key, length = found
        entry = self._entries[key]
        self._entries.move_to_end(key)
        self.hits += 1
        self.hit_tokens += length
        return Hit(length, len(key) // _WORD, entry.payload)

    def insert(self, tokens: Sequence[int], payload: T, nbytes: int) -> bool:
        """Store `payload` as the state after `tokens`; False when it is not kept
        (larger than the whole cap, or already covered by a longer entry)."""
        key = pack(tokens)
        size = nbytes + len(key)
        if not key or size > self.capacity:
            return False
        index = bisect.bisect_left(self._keys, key)
        following = self._keys[index] if index < len(self._keys) else b""
        if following.startswith(key) and (self.trimmable or following == key):
            self._entries.move_to_end(following)  # the stored entry serves as well
            return False
        if self.trimmable and index > 0 and key.startswith(self._keys[index - 1]):
            self._remove(self._keys[index - 1])  # the new entry covers it
        while self.used + size > self.capacity:
            self._remove(next(iter(self._entries)))
        bisect.insort(self._keys, key)
        self._entries[key] = _Entry(payload, size)
        self.used += size
        return True

    def clear(self) -> None:
        self._keys.clear()
        self._entries.clear()
        self.used = 0

    def stats(self) -> dict[str, int]:
        return {
            "prefix_cache_hits": self.hits,
            "prefix_cache_misses": self.misses,
            "prefix_cache_hit_tokens": self.hit_tokens,
            "prefix_cache_entries": len(self._entries),
            "prefix_cache_bytes": self.used,
            "prefix_cache_capacity_bytes": self.capacity,
        }

    # --- search -----------------------------------------------------------------------

    def _find(self, probe: bytes) -> tuple[bytes, int] | None:
        """(key, usable tokens) of the best entry for a prompt whose usable part is `probe`."""
        if not probe or not self._keys:
            return None
        if self.trimmable:
            index = bisect.bisect_left(self._keys, probe)
            best: tuple[bytes, int] | None = None
            for key in self._keys[max(index - 1, 0) : index + 1]:
                length = common_tokens(key, probe)
                if length and (best is None or length > best[1]):
                    best = (key, length)
            return best
        return self._longest_prefix_key(probe)

    def _longest_prefix_key(self, probe: bytes) -> tuple[bytes, int] | None:
        """The longest key that is a prefix of `probe`.

        The greatest key <= probe is either such a prefix, or every shorter prefix
        key also prefixes it: so narrow the probe to their common part and repeat.
        """
        while probe:
            index = bisect.bisect_right(self._keys, probe) - 1
            if index < 0:
                return None
            key = self._keys[index]
            if probe.startswith(key):
                return key, len(key) // _WORD
            probe = probe[: common_tokens(key, probe) * _WORD]
        return None

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        del self._keys[bisect.bisect_left(self._keys, key)]
        self.used -= entry.nbytes
