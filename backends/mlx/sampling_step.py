"""The sampling step as one pure, compiled function of `[B, V]` logits and row state.

`SamplerBatch` decides *which* features a batch needs (a `Plan`, fixed while
the batch's composition is); this module does the arithmetic. Each plan is
compiled once with `mx.compile` (and again per new batch shape), so a step is
one fused graph instead of dozens of separately dispatched ops: that matters on
small models, where Python dispatch is a visible share of a decode step.

Inputs (`state`): `keys [B, 2]`, `floats [B, 6]` (see `COLUMNS`), `top_k [B]`,
and when planned `window [B, W]` + `window_valid [B, W]`, `counts [B, V]`,
`bias [B, V]`, `logprob_index [R]`. Outputs: `tokens [B]`, the advanced
`keys`, updated `counts`/`window`, and `logprobs [R]`, `top_ids`/`top_logprobs
[R, K]` when planned. See `backends.mlx.sampling` for the semantics.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import mlx.core as mx

TEMPERATURE, TOP_P, MIN_P, PRESENCE, FREQUENCY, REPETITION = range(6)
COLUMNS = 6
_NEG_INF = -math.inf

State = dict[str, mx.array]


class Plan(NamedTuple):
    """What one batch's step computes (all static for `mx.compile`)."""

    window: bool = False
    counts: bool = False
    bias: bool = False
    random: bool = False
    greedy: bool = True
    top_p: bool = False
    top_k_width: int = 0  # > 0: a top-k pass over this many best tokens (without top_p)
    min_p: bool = False
    logprobs: bool = False
    logprob_subset: bool = False
    top_count: int = 0


@functools.cache
def compiled(plan: Plan) -> Callable[[mx.array, State], State]:
    return mx.compile(functools.partial(step, plan))


def step(plan: Plan, logits: mx.array, state: State) -> State:
    logits = logits.astype(mx.float32)
    out: State = {}
    logits = _penalize(plan, logits, state)
    if plan.random:
        tokens, out["keys"] = _draw(plan, logits, state)
    else:
        tokens = mx.argmax(logits, axis=-1).astype(mx.uint32)
        out["keys"] = state["keys"]
    out["tokens"] = tokens
    if plan.logprobs:
        out.update(_logprobs(plan, logits, tokens, state))
    if plan.counts:
        rows = mx.arange(tokens.shape[0])
        out["counts"] = state["counts"].at[rows, tokens.astype(mx.int32)].add(1.0)
    if plan.window:
        window = state["window"]
        out["window"] = mx.concatenate([window[:, 1:], tokens[:, None].astype(window.dtype)], axis=1)
    return out


def _penalize(plan: Plan, logits: mx.array, state: State) -> mx.array:
    floats = state["floats"]
    vocab = logits.shape[-1]
    if plan.window:
        ids = mx.where(state["window_valid"], state["window"], vocab)
        seen = mx.zeros((logits.shape[0], vocab + 1), dtype=mx.bool_)
        seen = mx.put_along_axis(seen, ids, mx.array(True), axis=-1)[:, :vocab]
        penalty = floats[:, REPETITION, None]
        penalised = mx.where(logits < 0, logits * penalty, logits / penalty)
        logits = mx.where(seen, penalised, logits)
    if plan.counts:
        counts = state["counts"]
        logits = logits - floats[:, PRESENCE, None] * (counts > 0) - floats[:, FREQUENCY, None] * counts
    if plan.bias:
        logits = logits + state["bias"]
    return logits


def _draw(plan: Plan, logits: mx.array, state: State) -> tuple[mx.array, mx.array]:
    temperature = state["floats"][:, TEMPERATURE]
    scaled = logits / mx.where(temperature > 0, temperature, 1.0)[:, None]
    threshold = _threshold(plan, scaled, state)
    if threshold is not None:
        scaled = mx.where(scaled < threshold, _NEG_INF, scaled)
    keys = mx.vmap(lambda key: mx.random.split(key))(state["keys"])
    drawn = mx.vmap(lambda row, key: mx.random.categorical(row, key=key))(scaled, keys[:, 1])
    drawn = drawn.astype(mx.uint32)
    if plan.greedy:
        drawn = mx.where(temperature > 0, drawn, mx.argmax(logits, axis=-1).astype(mx.uint32))
    return drawn, keys[:, 0]


def _threshold(plan: Plan, scaled: mx.array, state: State) -> mx.array | None:
    """Per-row smallest logit kept by top_k, top_p and min_p together, `[B, 1]`."""
    floats, top_k = state["floats"], state["top_k"]
    vocab = scaled.shape[-1]
    threshold = None
    if plan.top_p:
        ascending = mx.sort(scaled, axis=-1)
        k_index = mx.where(top_k > 0, mx.maximum(vocab - top_k, 0), 0)
        k_threshold = mx.take_along_axis(ascending, k_index[:, None], axis=-1)
        kept = mx.where(ascending < k_threshold, _NEG_INF, ascending)
        mass_above = mx.cumsum(mx.softmax(kept, axis=-1), axis=-1, reverse=True, inclusive=False)
        top_p = floats[:, TOP_P, None]
        dropped = (mass_above >= top_p).sum(axis=-1)
        dropped = mx.where(top_p[:, 0] < 1.0, mx.minimum(dropped, vocab - 1), 0)
        p_threshold = mx.take_along_axis(ascending, dropped[:, None].astype(mx.int32), axis=-1)
        threshold = mx.maximum(k_threshold, p_threshold)
    elif plan.top_k_width:
        width = plan.top_k_width
        best = mx.sort(mx.topk(scaled, width, axis=-1), axis=-1)  # ascending
        index = mx.maximum(width - mx.minimum(top_k, width), 0)
        k_threshold = mx.take_along_axis(best, index[:, None], axis=-1)
        threshold = mx.where((top_k > 0)[:, None], k_threshold, _NEG_INF)
    if plan.min_p:
        m_threshold = scaled.max(axis=-1, keepdims=True) + mx.log(floats[:, MIN_P, None])
        threshold = m_threshold if threshold is None else mx.maximum(threshold, m_threshold)
    return threshold


def _logprobs(plan: Plan, logits: mx.array, tokens: mx.array, state: State) -> State:
    if plan.logprob_subset:
        index = state["logprob_index"]
        logits, tokens = logits[index], tokens[index]
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    out = {"logprobs": mx.take_along_axis(logprobs, tokens[:, None].astype(mx.int32), axis=-1)[:, 0]}
    if plan.top_count:
        count = plan.top_count
        ids = mx.argpartition(-logprobs, kth=count - 1, axis=-1)[:, :count]
        values = mx.take_along_axis(logprobs, ids, axis=-1)
        order = mx.argsort(-values, axis=-1)
        out["top_ids"] = mx.take_along_axis(ids, order, axis=-1)
        out["top_logprobs"] = mx.take_along_axis(values, order, axis=-1)
    return out
