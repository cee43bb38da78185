"""A quantized KV cache that batches: `kv_bits` 8 or 4 in a model's options.

mlx-lm has a per-sequence `QuantizedKVCache` (keys and values stored as
affine-quantized (packed weights, scales, biases) triples, read by
`mx.quantized_matmul` in its attention) but no batched one, so its server cannot
batch quantized rows. `BatchQuantizedKVCache` is that batch: the same
left-padded layout as mlx-lm's `BatchKVCache` (per-row `left_padding` and
`offset`, one write index), with each of keys and values a triple.

Quantization is per token and per `group_size` channels of the head dimension,
so a token's stored bytes do not depend on how the prompt was chunked, which
row it sits in or when it was merged: a prefix-cache hit, a batch and a lone row
hold exactly the bytes a cold prefill writes. That is why the cache is quantized
from the first prefill chunk on (mlx-lm's `quantized_kv_start = 0`) rather than
converted once the prompt is in.

Every cache the engine and the prefix cache make comes from `new_cache`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx import nn
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import KVCache, QuantizedKVCache, _BaseCache, dynamic_roll, make_prompt_cache

Triple = tuple[mx.array, mx.array, mx.array]  # packed weights, scales, biases


@dataclass(frozen=True)
class KVQuantization:
    """How a model's KV cache is stored: `bits` per value, scales per `group_size` channels."""

    bits: int
    group_size: int = 64


class KVCacheConfigError(ValueError):
    """The model cannot use the configured KV quantization (the message says why)."""


def new_cache(model: nn.Module, kv: KVQuantization | None = None) -> list[Any]:
    """A fresh per-sequence cache for `model`: mlx-lm's, with every plain `KVCache`
    layer quantized when `kv` is given."""
    cache = make_prompt_cache(model)
    if kv is None:
        return cache
    return [QuantizedCache(kv.group_size, kv.bits) if type(layer) is KVCache else layer for layer in cache]


def check_quantization(cache: Sequence[Any], kv: KVQuantization) -> None:
    """Refuse a model whose warmed-up plain `cache` cannot be quantized as `kv` says."""
    others = sorted({type(layer).__name__ for layer in cache if type(layer) is not KVCache})
    if others:
        raise KVCacheConfigError(
            f"options.kv_bits needs every layer to use a plain KV cache; this model also uses {', '.join(others)}"
        )
    for layer in cache:
        for name, dim in (("head", layer.keys.shape[-1]), ("value head", layer.values.shape[-1])):
            if dim % kv.group_size:
                raise KVCacheConfigError(
                    f"options.kv_group_size = {kv.group_size} does not divide this model's {name} "
                    f"dimension {dim}; use a group size that does (32, 64 or 128)"
                )


class QuantizedCache(QuantizedKVCache):
    """mlx-lm's per-sequence quantized cache, which can also be merged into a batch."""

    def size(self) -> int:
        return self.offset

    @classmethod
    def merge(cls, caches: Sequence[QuantizedKVCache]) -> BatchQuantizedKVCache:
        return BatchQuantizedKVCache.merge(caches)


def _blank(batch: int, heads: int, length: int, like: Triple) -> Triple:
    return tuple(mx.zeros((batch, heads, length, part.shape[-1]), dtype=part.dtype) for part in like)  # type: ignore[return-value]


def _map(function: Any, *triples: Triple) -> Triple:
    return tuple(function(*parts) for parts in zip(*triples))  # type: ignore[return-value]


class BatchQuantizedKVCache(_BaseCache):
    """Quantized keys and values of left-padded rows, grown in steps of 256 tokens.

    Row `i` holds its tokens at positions `left_padding[i] .. _idx` of the buffers;
    `offset[i]` is its own length (its RoPE position). `prepare(right_padding=...)`
    then `finalize()` turn each row's last `right_padding[i]` tokens into left
    padding: right-padded prompts, or rolling back rejected draft tokens per row.
    """

    step = 256

    def __init__(self, left_padding: list[int], group_size: int = 64, bits: int = 8) -> None:
        self.keys: Triple | None = None
        self.values: Triple | None = None
        self.left_padding = mx.array(left_padding)
        self.offset = mx.array([-padding for padding in left_padding])
        self._idx = 0
        self._right_padding: mx.array | None = None
        self.group_size = group_size
        self.bits = bits

    # --- the model's side ---------------------------------------------------------------

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Triple, Triple]:
        new_keys = mx.quantize(keys, group_size=self.group_size, bits=self.bits)
        new_values = mx.quantize(values, group_size=self.group_size, bits=self.bits)
        start, count = self._idx, keys.shape[2]
        if self.keys is None or start + count > self.keys[0].shape[2]:
            self._grow(new_keys, new_values, count)
        self._idx += count
        self.offset = self.offset + count
        for buffer, new in ((self.keys, new_keys), (self.values, new_values)):
            for part, written in zip(buffer, new):
                part[..., start : self._idx, :] = written
        return self.keys_and_values()

    def _grow(self, keys: Triple, values: Triple, count: int) -> None:
        """Room for `count` more tokens past the write index, in steps of 256."""
        more = (self.step + count - 1) // self.step * self.step
        batch, heads = keys[0].shape[:2]
        if self.keys is None or self.values is None:
            self.keys, self.values = _blank(batch, heads, more, keys), _blank(batch, heads, more, values)
            return

        def longer(part: mx.array) -> mx.array:
            room = mx.zeros((batch, heads, more, part.shape[-1]), part.dtype)
            return mx.concatenate([part[..., : self._idx, :], room], axis=2)

        self.keys, self.values = _map(longer, self.keys), _map(longer, self.values)

    def keys_and_values(self) -> tuple[Triple, Triple]:
        assert self.keys is not None and self.values is not None
        return tuple(
            _map(lambda part: part[..., : self._idx, :], buffer) for buffer in (self.keys, self.values)
        )  # type: ignore[return-value]

    def make_mask(self, N: int, return_array: bool = False, **kwargs: Any) -> mx.array:
        return create_causal_mask(N, offset=self._idx, left_padding=self.left_padding, **kwargs)

    # --- rows ---------------------------------------------------------------------------

    def prepare(
        self,
        *,
        left_padding: list[int] | None = None,
        lengths: list[int] | None = None,
        right_padding: list[int] | None = None,
    ) -> None:
        if left_padding is not None:
            if self.keys is not None:
                raise ValueError("left padding can only be added to an empty BatchQuantizedKVCache")
            padding = mx.array(left_padding)
            self.left_padding = self.left_padding + padding
            self.offset = self.offset - padding
        if right_padding is not None and max(right_padding) > 0:
            self._right_padding = mx.array(right_padding)

    def finalize(self) -> None:
        """Roll each row's right padding round to its left (where the mask hides it)."""
        padding, self._right_padding = self._right_padding, None
        if padding is None:
            return
        if self.keys is not None and self.values is not None:
            shifts = padding[:, None]
            self.keys, self.values = (
                _map(lambda part: dynamic_roll(part, shifts, axis=2), buffer)
                for buffer in (self.keys, self.values)
            )
        self.offset = self.offset - padding
        self.left_padding = self.left_padding + padding

    def filter(self, batch_indices: mx.array) -> None:
        """Keep only the rows at `batch_indices`, dropping padding no kept row needs."""
        if self.keys is not None and self.values is not None:
            self.keys = _map(lambda part: part[batch_indices], self.keys)
            self.values = _map(lambda part: part[batch_indices], self.values)
        self.offset = self.offset[batch_indices]
        self.left_padding = self.left_padding[batch_indices]
        shift = min(self.left_padding.tolist())
        if shift > 0:
            if self.keys is not None and self.values is not None:
                self.keys = _map(lambda part: part[..., shift:, :], self.keys)
                self.values = _map(lambda part: part[..., shift:, :], self.values)
            self._idx -= shift
            self.left_padding = self.left_padding - shift

    def extend(self, other: BatchQuantizedKVCache) -> None:
        """Append `other`'s rows, both right-aligned at the longer write index."""
        if (other.bits, other.group_size) != (self.bits, self.group_size):
            raise ValueError("cannot join caches quantized differently")
        if self.keys is None and other.keys is None:
            self.left_padding = mx.concatenate([self.left_padding, other.left_padding])
            self.offset = mx.concatenate([self.offset, other.offset])
            return
        like = self if self.keys is not None else other
        assert like.keys is not None and like.values is not None
        heads = like.keys[0].shape[1]
        index = max(self._idx, other._idx)
        size = max(c.keys[0].shape[2] for c in (self, other) if c.keys is not None)

        def aligned(cache: BatchQuantizedKVCache) -> tuple[Triple, Triple, mx.array]:
            keys, values = cache.keys, cache.values
            if keys is None or values is None:
                rows = cache.offset.shape[0]
                keys, values = _blank(rows, heads, 0, like.keys), _blank(rows, heads, 0, like.values)  # type: ignore[arg-type]
            left = index - cache._idx
            right = size - keys[0].shape[2] - left

            def pad(part: mx.array) -> mx.array:
                cut = right
                if cut < 0:
                    part, cut = part[..., :cut, :], 0
                if left or cut:
                    part = mx.pad(part, [(0, 0), (0, 0), (left, cut), (0, 0)])
                return part

            return _map(pad, keys), _map(pad, values), cache.left_padding + left

        mine, theirs = aligned(self), aligned(other)
        self.keys = _map(lambda a, b: mx.concatenate([a, b]), mine[0], theirs[0])
        self.values = _map(lambda a, b: mx.concatenate([a, b]), mine[1], theirs[1])
        self.left_padding = mx.concatenate([mine[2], theirs[2]])
        self.offset = mx.concatenate([self.offset, other.offset])
        self._idx = index

    def extract(self, idx: int) -> QuantizedCache:
        """Row `idx` as a per-sequence cache of its own (a copy of just its tokens)."""
        assert self.keys is not None and self.values is not None
        padding = int(self.left_padding[idx].item())
        cache = QuantizedCache(self.group_size, self.bits)
        cache.keys = _map(lambda part: mx.contiguous(part[idx : idx + 1, :, padding : self._idx]), self.keys)
        cache.values = _map(
            lambda part: mx.contiguous(part[idx : idx + 1, :, padding : self._idx]), self.values
        )
        cache.offset = self._idx - padding
        return cache

    @classmethod
    def merge(cls, caches: Sequence[QuantizedKVCache]) -> BatchQuantizedKVCache:
        """Per-sequence quantized caches as one batch, left-padded to the longest."""
        first = caches[0]
        if any((c.bits, c.group_size) != (first.bits, first.group_size) for c in caches):
            raise ValueError("cannot merge caches quantized differently")
        lengths = [c.offset if c.keys is not None else 0 for c in caches]
        longest = max(lengths)
        padding = [longest - length for length in lengths]
        cache = cls(padding, first.group_size, first.bits)
        filled = [c for c in caches if c.keys is not None]
        if not longest or not filled:
            return cache
        heads = filled[0].keys[0].shape[1]
        keys = _blank(len(caches), heads, longest, filled[0].keys)
        values = _blank(len(caches), heads, longest, filled[0].values)
        for row, (pad, c) in enumerate(zip(padding, caches)):
            if c.keys is None or not c.offset:
                continue
            for buffer, source in ((keys, c.keys), (values, c.values)):
                for part, written in zip(buffer, source):
                    part[row : row + 1, :, pad : pad + c.offset] = written[..., : c.offset, :]
        cache.keys, cache.values = keys, values
        cache.offset = cache.offset + longest
        cache._idx = longest
        return cache

    # --- the rest of mlx-lm's cache interface -----------------------------------------------

    @property
    def state(self) -> tuple[Any, ...]:
        return self.keys, self.values, self.offset, self.left_padding, self._idx, self.group_size, self.bits

    @state.setter
    def state(self, value: tuple[Any, ...]) -> None:
        self.keys, self.values, self.offset, self.left_padding, self._idx, self.group_size, self.bits = value
        self._right_padding = None

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        n = min(self._idx, n)
        self._idx -= n
        self.offset = self.offset - n
        return n

    def size(self) -> int:
        return self._idx

    def empty(self) -> bool:
        return self.keys is None

    @property
    def nbytes(self) -> int:
        if self.keys is None or self.values is None:
            return 0
        return sum(part.nbytes for part in (*self.keys, *self.values))
