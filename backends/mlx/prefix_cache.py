"""The prefix cache: KV states of earlier prompts, reused for the longest shared prefix.

Chat clients resend the same system prompt and a growing history every turn, and
agent loops append to one long context; prefilling all of it again each time is
most of their time to first token. The engine keeps, per model,

* the state after each prompt (inserted when its prefill finishes), and
* for single-choice requests, the state after prompt + generated tokens (inserted
  when the row finishes), so the next turn of a chat hits past the last reply;

and a new prompt's prefill starts from the longest stored prefix.

Sharing, not copying. mx arrays are values: a `KVCache` writes new tokens with
slice assignment, which rebinds *that handle* (`a[i:j] = x` replaces the array
behind the Python object `a`) and copies the buffer unless nothing else holds it.
So an entry and a running cache may share a buffer as long as they never share a
handle: entries keep their own views (`keys[..., :n, :]`), and a hit gets fresh
views cut to the hit length; trimming is the cut itself. The first write through
such a view copies just that prefix, and a row whose prompt state was just stored
copies its buffer once on its next write (the store still holds it, so MLX cannot
donate it). Nothing is deep-copied on lookup or on insert.

Entry size is the byte size of the buffers it keeps alive (the cache's capacity,
which `KVCache` grows in 256-token steps; quantized, where the cache is), plus
the packed key.

Which models. All-`KVCache` models (most decoders) get prefix hits of any length,
and so do the same models with a quantized KV cache (`kv_bits`): an entry then
keeps the quantized triples, and its size (the cap) is their bytes.
Models with sliding-window layers (`RotatingKVCache` with `keep=0`, as mlx-lm's
models make them; it cannot be trimmed once it wraps) get exact-prefix hits only:
a stored prompt state serves a prompt that extends the whole stored prompt (the
next turn of a chat), and there are no end-of-request entries. Other cache kinds
(state-space `ArraysCache`, attention-sink caches) are not cached:
`mode` is None, nothing is stored or looked up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx
from mlx import nn
from mlx_lm.models.cache import KVCache, RotatingKVCache

from backends.mlx.prefix_store import PrefixStore
from backends.mlx.quantized_cache import KVQuantization, QuantizedCache, new_cache

Mode = Literal["trim", "exact"]


def cache_mode(cache: Sequence[Any]) -> Mode | None:
    """How this model's per-sequence cache can be reused (exact types only: a
    subclass may keep state these snapshots do not know about).

    Rotating caches with attention-sink tokens (`keep > 0`, mlx-lm's `max_kv_size`
    caches) are left out: their output already depends on how the prompt was
    chunked, so a hit could not promise the tokens a cold prefill would give.
    """
    kinds = {type(layer) for layer in cache}
    if kinds in ({KVCache}, {QuantizedCache}):
        return "trim"
    if kinds <= {KVCache, RotatingKVCache} and all(getattr(layer, "keep", 0) == 0 for layer in cache):
        return "exact"
    return None


@dataclass(frozen=True)
class Snapshot:
    """Per-layer (cache class, state) with handles of its own; never written."""

    layers: tuple[tuple[type, tuple[Any, ...]], ...]


def _own(value: Any) -> Any:
    """A new handle on the same array (no copy), so no other handle's writes reach it
    (each array of a quantized cache's (weights, scales, biases) triple too)."""
    if isinstance(value, tuple):
        return tuple(_own(part) for part in value)
    return value[...] if isinstance(value, mx.array) else value


def _cut(value: Any, length: int) -> Any:
    """Keys or values (an array, or a quantized triple) cut to `length` tokens: views."""
    if isinstance(value, tuple):
        return tuple(_cut(part, length) for part in value)
    return value[..., :length, :]


def _layer_state(layer: Any) -> tuple[Any, ...]:
    if type(layer) in (KVCache, QuantizedCache):  # keep only the filled part: a view, not a copy
        keys, values, offset, *rest = layer.state
        return (_cut(keys, offset), _cut(values, offset), offset, *rest)
    return tuple(_own(value) for value in layer.state)


def _fork(layer_type: type, state: tuple[Any, ...], length: int | None) -> Any:
    """A cache object of its own, cut to `length` tokens when given (trim mode)."""
    if length is not None:
        keys, values, _, *rest = state
        state = (_cut(keys, length), _cut(values, length), length, *rest)
    return layer_type.from_state(tuple(_own(value) for value in state))


def no_prefix_stats() -> dict[str, int]:
    """The stats of a model without a prefix cache (all zero), for a stable shape."""
    return PrefixStore[Snapshot](0).stats()


class PrefixCache:
    """One model's store of reusable KV states, `capacity` bytes at most."""

    def __init__(self, model: nn.Module, capacity: int, kv: KVQuantization | None = None) -> None:
        self.mode: Mode | None = cache_mode(new_cache(model, kv)) if capacity > 0 else None
        self.store: PrefixStore[Snapshot] = PrefixStore(
            capacity if self.mode else 0, trimmable=self.mode == "trim"
        )

    def take(self, prompt: Sequence[int]) -> tuple[list[Any] | None, int]:
        """A fresh cache already holding the longest reusable prefix of `prompt`, and
        that prefix's length; (None, 0) on a miss."""
        if self.mode is None:
            return None, 0
        hit = self.store.lookup(prompt)
        if hit is None:
            return None, 0
        cut = hit.length if self.mode == "trim" else None
        return [_fork(kind, state, cut) for kind, state in hit.payload.layers], hit.length

    def keep(self, tokens: Sequence[int], cache: Sequence[Any]) -> bool:
        """Store `cache` (the state after exactly `tokens`) without copying it."""
        if self.mode is None or not tokens or not cache:
            return False
        if any(getattr(layer, "offset", None) != len(tokens) for layer in cache):
            return False  # not the state of these tokens: never store a wrong one
        nbytes = sum(layer.nbytes for layer in cache)
        snapshot = Snapshot(tuple((type(layer), _layer_state(layer)) for layer in cache))
        if not self.store.insert(tokens, snapshot, nbytes):
            return False
        mx.async_eval([state[:2] for _, state in snapshot.layers])  # let go of any graph
        return True

    @property
    def keeps_rows(self) -> bool:
        """Whether finished rows are worth a snapshot (only where hits can be cut)."""
        return self.mode == "trim"

    def clear(self) -> None:
        self.store.clear()

    def stats(self) -> dict[str, int]:
        return self.store.stats()
