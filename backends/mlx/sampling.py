"""Batched per-row sampling: each row of a decode batch carries its own parameters.

A request never has to leave a batch (or force the batch into a per-row Python
loop) because its sampling settings differ from its neighbours': every setting is
a `[B]` (or `[B, V]`) array and each step is one vectorised, compiled pass over
the `[B, V]` logits (`sampling_step`). Features no row uses are skipped entirely,
so a batch of plain greedy rows costs one `argmax`.

Order of operations on one step (model logits, as float32):

1. repetition penalty (CTRL / mlx-lm semantics: a logit of a token among the row's
   last `repetition_context_size` prompt+output tokens is divided by the penalty
   when positive, multiplied when negative);
2. presence and frequency penalties (OpenAI semantics, over the tokens generated so
   far in this choice: `logit -= presence * (count > 0) + frequency * count`);
3. `logit_bias`, then banned tokens (set to -inf);
4. logprobs are taken here: log-softmax of these *processed* logits, before
   temperature and truncation, i.e. the model's (penalised, biased) distribution;
5. temperature (0 = greedy: argmax of the processed logits), then truncation in
   Hugging Face order on the tempered distribution: top_k, top_p (on the top-k
   survivors), min_p (relative to the most likely token); ties at a cut-off are kept;
6. a categorical draw per row with the row's own PRNG key (`mx.vmap`), so a seeded
   row samples the same token from the same logits whether it runs alone or beside
   other rows (a batched forward pass may differ from a lone one in float rounding,
   which can only matter where two tokens are within rounding of a tie).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import mlx.core as mx

from backends.mlx.sampling_step import (
    COLUMNS,
    FREQUENCY,
    MIN_P,
    PRESENCE,
    REPETITION,
    TEMPERATURE,
    TOP_P,
    Plan,
    State,
    compiled,
)

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    """How one row (one choice of a request) samples; defaults change nothing."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    repetition_context_size: int = 20
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    banned_tokens: frozenset[int] = frozenset()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def uses_repetition(self) -> bool:
        return self.repetition_penalty != 1.0 and self.repetition_context_size > 0

    @property
    def uses_counts(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    @property
    def uses_bias(self) -> bool:
        return bool(self.logit_bias) or bool(self.banned_tokens)


def row_key(seed: int | None, choice: int = 0) -> mx.array:
    """The PRNG key of one choice: from `seed` (any int) or from `os.urandom`.

    Choice `i > 0` of a seeded request gets the `i`-th key of a split of the seed's
    key, so the choices of one request differ from each other yet each is
    reproducible, and choice 0 equals a single-choice request with the same seed.
    """
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    key = mx.random.key(seed % 2**64)
    if choice:
        key = mx.random.split(key, choice + 1)[choice]
    return key


@dataclass(frozen=True)
class RowSpec:
    """What a new row brings: its parameters, its choice index, and its prompt
    (the tail of which seeds the repetition-penalty window)."""

    params: SamplingParams
    choice: int = 0
    prompt: Sequence[int] = ()


class Sampled(NamedTuple):
    """One step's result, still lazy: evaluate `arrays()` before reading.

    `logprob_rows` are the batch rows that asked for logprobs, in order; the
    `[R]`/`[R, K]` arrays are aligned with them (top-K sorted, most likely first,
    K = the largest `top_logprobs` among those rows).
    """

    tokens: mx.array
    logprob_rows: tuple[int, ...] = ()
    logprobs: mx.array | None = None
    top_ids: mx.array | None = None
    top_logprobs: mx.array | None = None

    def arrays(self) -> list[mx.array]:
        return [a for a in (self.tokens, self.logprobs, self.top_ids, self.top_logprobs) if a is not None]


class SamplerBatch:
    """Sampling state for the rows of one batch, aligned with the batch's rows.

    Rows join with `extend` and leave with `filter`, exactly like the KV cache;
    `sample` draws one token per row and records it (penalty counts, repetition
    window, advanced PRNG key). State lives in `[B, ...]` arrays; what a step must
    compute is a `Plan` derived once per composition change, so features no row
    uses cost nothing. All updates are lazy, so a step can be built on tokens
    that are still being computed.
    """

    def __init__(self, vocab_size: int, rows: Sequence[RowSpec] = ()) -> None:
        self.vocab_size = vocab_size
        self.params: list[SamplingParams] = [row.params for row in rows]
        self._state: State = {}
        if rows:
            self._state = {
                "keys": mx.stack([row_key(row.params.seed, row.choice) for row in rows]),
                "floats": mx.array([_float_row(row.params) for row in rows], dtype=mx.float32),
                "top_k": mx.array([max(row.params.top_k, 0) for row in rows], dtype=mx.int32),
            }
            if any(row.params.uses_counts for row in rows):
                self._state["counts"] = mx.zeros((len(rows), vocab_size), dtype=mx.float32)
            if any(row.params.uses_repetition for row in rows):
                self._state["window"], self._state["window_size"] = self._make_window(rows)
            if any(row.params.uses_bias for row in rows):
                self._state["bias"] = self._make_bias(rows)
        self._refresh()

    def __len__(self) -> int:
        return len(self.params)

    # --- batch composition ------------------------------------------------------------

    def extend(self, other: SamplerBatch) -> None:
        """Append `other`'s rows (in place); state one side lacks is filled with neutral rows."""
        if not other.params:
            return
        if not self.params:
            self.params, self._state = list(other.params), dict(other._state)
            self._refresh()
            return
        mine, theirs = self._state, other._state
        rows_mine, rows_theirs = len(self), len(other)
        merged = {name: mx.concatenate([mine[name], theirs[name]]) for name in ("keys", "floats", "top_k")}
        for name in ("counts", "bias"):
            if name in mine or name in theirs:
                merged[name] = mx.concatenate(
                    [self._neutral(mine, name, rows_mine), self._neutral(theirs, name, rows_theirs)]
                )
        if "window" in mine or "window" in theirs:
            width = max(_width(mine), _width(theirs))
            merged["window"] = mx.concatenate(
                [self._padded_window(mine, rows_mine, width), self._padded_window(theirs, rows_theirs, width)]
            )
            merged["window_size"] = mx.concatenate([_sizes(mine, rows_mine), _sizes(theirs, rows_theirs)])
        self.params = self.params + other.params
        self._state = merged
        self._refresh()

    def filter(self, keep: Sequence[int]) -> None:
        """Keep only the rows at `keep` (in that order); state no kept row uses is dropped."""
        self.params = [self.params[index] for index in keep]
        if not keep:
            self._state = {}
            self._refresh()
            return
        index = mx.array(list(keep), dtype=mx.int32)
        needed = {
            "counts": any(p.uses_counts for p in self.params),
            "bias": any(p.uses_bias for p in self.params),
            "window": any(p.uses_repetition for p in self.params),
            "window_size": any(p.uses_repetition for p in self.params),
        }
        self._state = {
            name: value[index]
            for name, value in self._state.items()
            if name not in _DERIVED and needed.get(name, True)
        }
        self._refresh()

    def _refresh(self) -> None:
        """Derive the plan (and its helper arrays) from the rows' parameters."""
        params = self.params
        random = [p for p in params if p.temperature > 0]
        logprob_rows = tuple(index for index, p in enumerate(params) if p.logprobs)
        max_top_k = max((p.top_k for p in random), default=0)
        any_top_p = any(p.top_p < 1.0 for p in random)
        self._plan = Plan(
            window="window" in self._state,
            counts="counts" in self._state,
            bias="bias" in self._state,
            random=bool(random),
            greedy=len(random) < len(params),
            top_p=any_top_p,
            top_k_width=0 if any_top_p else min(max_top_k, self.vocab_size),
            min_p=any(p.min_p > 0.0 for p in random),
            logprobs=bool(logprob_rows),
            logprob_subset=0 < len(logprob_rows) < len(params),
            top_count=min(
                max((p.top_logprobs for p in params if p.logprobs), default=0),
                MAX_TOP_LOGPROBS,
                self.vocab_size,
            ),
        )
        self._logprob_rows = logprob_rows
        for name in _DERIVED:
            self._state.pop(name, None)
        if self._plan.logprob_subset:
            self._state["logprob_index"] = mx.array(list(logprob_rows), dtype=mx.int32)
        if self._plan.window:
            window = self._state["window"]
            positions = mx.arange(window.shape[1], dtype=mx.int32)[None]
            self._state["window_valid"] = positions >= (window.shape[1] - self._state["window_size"])[:, None]

    # --- row construction ---------------------------------------------------------------

    def _make_bias(self, rows: Sequence[RowSpec]) -> mx.array:
        bias = mx.zeros((len(rows), self.vocab_size), dtype=mx.float32)
        for index, row in enumerate(rows):
            if row.params.logit_bias:
                ids = mx.array(list(row.params.logit_bias.keys()), dtype=mx.int32)
                values = mx.array(list(row.params.logit_bias.values()), dtype=mx.float32)
                bias[index, ids] = values
            if row.params.banned_tokens:
                bias[index, mx.array(sorted(row.params.banned_tokens), dtype=mx.int32)] = -math.inf
        return bias

    def _make_window(self, rows: Sequence[RowSpec]) -> tuple[mx.array, mx.array]:
        """Each row's last `repetition_context_size` prompt tokens, left-padded with
        the out-of-vocabulary id `vocab_size` (a column that is dropped)."""
        sizes = [row.params.repetition_context_size if row.params.uses_repetition else 0 for row in rows]
        width = max(sizes)
        table = []
        for size, row in zip(sizes, rows):
            tail = list(row.prompt[-size:]) if size else []
            table.append([self.vocab_size] * (width - len(tail)) + tail)
        return mx.array(table, dtype=mx.int32), mx.array(sizes, dtype=mx.int32)

    def _neutral(self, state: State, name: str, rows: int) -> mx.array:
        """`state[name]`, or zeros (no counts, no bias) for rows that lack it."""
        if name in state:
            return state[name]
        return mx.zeros((rows, self.vocab_size), dtype=mx.float32)

    def _padded_window(self, state: State, rows: int, width: int) -> mx.array:
        window = state.get("window")
        if window is None:
            return mx.full((rows, width), self.vocab_size, dtype=mx.int32)
        if window.shape[1] == width:
            return window
        pad = mx.full((rows, width - window.shape[1]), self.vocab_size, dtype=mx.int32)
        return mx.concatenate([pad, window], axis=1)

    # --- one step -----------------------------------------------------------------------

    def sample(self, logits: mx.array) -> Sampled:
        """Draw one token per row from `[B, V]` logits and record it (lazily)."""
        inputs = {name: value for name, value in self._state.items() if name != "window_size"}
        out = compiled(self._plan)(logits, inputs)
        self._state["keys"] = out["keys"]
        if "counts" in out:
            self._state["counts"] = out["counts"]
        if "window" in out:
            self._state["window"] = out["window"]
        return Sampled(
            out["tokens"],
            self._logprob_rows,
            out.get("logprobs"),
            out.get("top_ids"),
            out.get("top_logprobs"),
        )

    def sample_where(self, logits: mx.array, active: mx.array | None) -> Sampled:
        """`sample`, recording the token only for rows where `active` (a `[B]` bool; None:
        all rows): speculative verification samples positions a row never reaches."""
        before = {name: self._state[name] for name in _RECORDED if name in self._state}
        sampled = self.sample(logits)
        if active is not None:
            for name, old in before.items():
                new = self._state[name]
                self._state[name] = mx.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
        return sampled


# State a step records (advanced key, penalty counts, repetition window).
_RECORDED = ("keys", "counts", "window")
# State derived from the rest by `_refresh` (rebuilt, never filtered or merged).
_DERIVED = ("logprob_index", "window_valid")


def _float_row(params: SamplingParams) -> list[float]:
    row = [0.0] * COLUMNS
    row[TEMPERATURE] = max(params.temperature, 0.0)
    row[TOP_P] = params.top_p
    row[MIN_P] = params.min_p
    row[PRESENCE] = params.presence_penalty
    row[FREQUENCY] = params.frequency_penalty
    row[REPETITION] = params.repetition_penalty if params.uses_repetition else 1.0
    return row


def _width(state: State) -> int:
    window = state.get("window")
    return 0 if window is None else window.shape[1]


def _sizes(state: State, rows: int) -> mx.array:
    sizes = state.get("window_size")
    return mx.zeros((rows,), dtype=mx.int32) if sizes is None else sizes
