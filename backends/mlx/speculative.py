"""Speculative decoding inside the continuous batch: draft, verify in one pass, roll back.

A row with a `Drafter` (prompt lookup or a draft model, a request's Predicted
Output, or both) may propose up to `num_draft_tokens` tokens per step. When some
row of the batch has a draft, the step feeds every row `[pending token + its draft]` (padded to
the longest) through the model in ONE forward pass, then samples each position
in order with the batch's own `SamplerBatch`, advancing a row's sampling state
(PRNG key, penalty counts, repetition window) only while its draft is being
accepted. A draft token is accepted when the token sampled at its position
equals it; the first token that differs is the row's next token.

That is exact speculative sampling for a deterministic draft (a point mass q:
accept with probability p(draft), else draw from p without the draft,
renormalised): drawing x ~ p and keeping the draft iff x == draft gives exactly
that. More: each emitted token is drawn from the same logits with the same key
as plain decoding would draw it, so greedy rows are token-for-token identical and
seeded rows reproduce their plain output, alone or in a crowd. Penalties,
logit_bias, truncation and logprobs run through the same compiled sampler.

Rows with a grammar do not speculate: a batch holding one takes the plain step
(its masks need each previous token first; verifying drafts against the grammar
would need a matcher rollback per rejected token). A step where no row has a
draft is the plain, pipelined step.

Rejected positions leave the KV cache through `rollback`: a lone row's cache is
trimmed; a batch's rows are trimmed by the fewest rejected positions and the rest
is rolled right per row into its left padding (mlx-lm's `prepare(right_padding)`
+ `finalize`). A cache class with its own `rollback(amounts)` method plugs in.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from backends.mlx.draft_model import ModelDraft
from backends.mlx.ngram import HistoryIndex, PredictionIndex
from backends.mlx.quantized_cache import QuantizedCache
from backends.mlx.sampling import Sampled

if TYPE_CHECKING:
    from backends.mlx.batch import DecodeBatch, Extra
    from backends.mlx.jobs import Row

Round = tuple[list["Row"], list[int], dict["Row", "Extra"]]

# Positions one verification pass may feed (rows x (1 + drafts)). A decode step
# is bound by reading the weights while few tokens go through, so a lone row's
# 5 positions cost little more than 1; a crowd's positions are compute, and
# every rejected one is paid for. Wider batches draft fewer tokens per row.
VERIFY_POSITIONS = 16
# Rows of a batch that still speculates (as vLLM turns drafting off by batch size).
# Rows that reject different numbers of tokens are rolled into their left padding,
# a copy of each layer's cache: measured here for 8 rows x 30 layers x 300
# positions (SmolLM2) it took ~150 ms, more than the decode step it saves, and
# the 8-stream bench ran 0.71x with it.
MAX_ROWS = 4
MAX_PAUSE = 16  # steps a row whose drafts keep failing waits before drafting again


class Drafter:
    """One row's draft source: its history (prompt lookup) or a draft model, and/or a prediction.

    Built on the event loop (cheap); indexes and the draft model's cache are made
    on the engine thread at first use. The history catches up from `Row.tokens`,
    so the engine's output path needs no hook."""

    def __init__(
        self,
        prompt: Sequence[int],
        *,
        lookup: bool,
        prediction: Sequence[int] = (),
        model: ModelDraft | None = None,
    ) -> None:
        self.prompt = prompt
        self.lookup = lookup
        self.model = model  # a draft model (`draft_model.py`): drafts whenever asked
        self.prediction = list(prediction)
        self._history: HistoryIndex | None = None
        self._predicted: PredictionIndex | None = None
        self._fed = 0  # generated tokens already in the history index
        self._from_prediction = 0  # length of the current draft taken from the prediction
        self.accepted_prediction = 0  # prediction tokens drafted and kept
        self._pause = 0  # steps left without drafting, after drafts that were all rejected
        self._backoff = 0  # the next pause's length (doubles per wholly rejected draft)

    def _catch_up(self, generated: Sequence[int]) -> HistoryIndex:
        if self._history is None:
            self._history = HistoryIndex(self.prompt)
            if self.prediction:
                self._predicted = PredictionIndex(self.prediction, len(self.prompt))
        for token in generated[self._fed :]:
            self._history.append(token)
        self._fed = len(generated)
        return self._history

    def might_draft(self, generated: Sequence[int], count: int) -> bool:
        """Whether the history as emitted so far has a draft (the cheap pre-check
        that keeps draftless steps on the pipelined path)."""
        if self._pause:  # free-form text repeats bigrams its model does not follow
            self._pause -= 1
            return False
        if self.model is not None:
            return True
        history = self._catch_up(generated)
        if self._predicted is not None and self._predicted.draft(history.tokens, count):
            return True
        return self.lookup and bool(history.draft(count))

    def draft(self, generated: Sequence[int], pending: int, count: int) -> list[int]:
        """Up to `count` tokens expected after `pending` (the row's sampled next token)."""
        history = self._catch_up(generated)
        history.append(pending)
        self._fed += 1
        self._from_prediction = 0
        if self._predicted is not None:
            draft = self._predicted.draft(history.tokens, count)
            if draft:
                self._from_prediction = len(draft)
                return draft
        if self.model is not None:
            return self.model.draft(history.tokens, count)
        return history.draft(count) if self.lookup else []

    def release(self) -> None:
        """Free what only further drafts need (the row has finished)."""
        if self.model is not None:
            self.model.release()

    @property
    def rejected_prediction(self) -> int:
        """Prediction tokens not in the answer, as OpenAI counts them: all the others."""
        return max(len(self.prediction) - self.accepted_prediction, 0)

    def settle(self, drafted: int, accepted: int) -> None:
        """Learn from the last draft: back off after a wholly rejected one (so a row whose
        drafts fail costs ever fewer verification steps), and count prediction tokens."""
        if drafted and not accepted:
            self._backoff = min(max(2 * self._backoff, 1), MAX_PAUSE)
            self._pause = self._backoff
        elif accepted:
            self._backoff = 0
        if self._from_prediction:
            self.accepted_prediction += accepted
            self._from_prediction = 0


@dataclass
class Speculation:
    """A model's speculative decoding settings and counters (read from any thread)."""

    num_draft_tokens: int = 4
    verify_positions: int = VERIFY_POSITIONS
    max_rows: int = MAX_ROWS
    drafted: int = 0
    accepted: int = 0
    steps: int = 0  # verification steps run

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def width(self, rows: int) -> int:
        """Draft tokens per row a batch of `rows` verifies (0: decode plainly)."""
        if rows > self.max_rows:
            return 0
        return max(min(self.num_draft_tokens, self.verify_positions // max(rows, 1) - 1), 0)

    def count(self, drafted: int, accepted: int) -> None:
        with self._lock:
            self.drafted += drafted
            self.accepted += accepted
            self.steps += 1

    def stats(self) -> dict[str, float]:
        with self._lock:
            drafted, accepted, steps = self.drafted, self.accepted, self.steps
        return {
            "spec_draft_tokens": drafted,
            "spec_accepted_tokens": accepted,
            "spec_acceptance_rate": accepted / drafted if drafted else 0.0,
            "spec_verify_steps": steps,
        }


# Per-sequence caches whose `trim` takes tokens back, and whose batch form (`merge`)
# rolls rows back with `trim` + `prepare(right_padding=...)` / `finalize()`.
TRIMMABLE = (KVCache, QuantizedCache)


def can_roll_back(cache: Sequence[Any]) -> bool:
    """Whether rejected tokens can be taken back out of this model's (per-sequence) cache."""
    return all(callable(getattr(layer, "rollback", None)) or type(layer) in TRIMMABLE for layer in cache)


def rollback(cache: Sequence[Any], amounts: list[int], single: bool) -> None:
    """Take the last `amounts[i]` tokens out of row i of every layer's cache."""
    if not any(amounts):
        return
    for layer in cache:
        own = getattr(layer, "rollback", None)
        if callable(own):
            own(amounts)
        elif single:
            layer.trim(amounts[0])
        else:  # BatchKVCache: trim the common part, roll the rest into left padding
            common = min(amounts)
            if common:
                layer.trim(common)
            rest = [amount - common for amount in amounts]
            if any(rest):
                layer.prepare(right_padding=rest)
                layer.finalize()


def verify_step(batch: DecodeBatch, speculation: Speculation) -> list[Round] | None:
    """One speculative step of the whole batch; None when no row drafted (the caller
    then runs its plain step). Returns the tokens to emit, one round per position:
    round 0 is every row's pending token, round j the rows whose j-th draft token
    was accepted. Leaves the batch's next pending tokens and their logprobs set."""
    rows = batch.rows
    count = speculation.width(len(rows))
    pending = batch.tokens.tolist()
    drafts = [
        row.drafter.draft(row.tokens, token, count) if row.drafter is not None else []
        for row, token in zip(rows, pending)
    ]
    width = max(map(len, drafts))
    if not width:
        return None
    extras: dict[Row, Extra] = {}
    for part in batch.parts:
        part.read(extras)
    inputs = mx.array(
        [[token, *draft, *[token] * (width - len(draft))] for token, draft in zip(pending, drafts)],
        dtype=batch.tokens.dtype,
    )
    logits = batch.model(inputs, cache=batch.cache)
    proposed = mx.array([draft + [0] * (width - len(draft)) for draft in drafts], dtype=mx.uint32)
    lengths = mx.array([len(draft) for draft in drafts])
    active: mx.array | None = None
    accepted = mx.zeros((len(rows),), dtype=mx.int32)
    steps: list[Sampled] = []
    for position in range(width + 1):
        sampled = batch.sampler.sample_where(logits[:, position, :], active)
        steps.append(sampled)
        if position < width:
            hit = (sampled.tokens == proposed[:, position]) & (position < lengths)
            active = hit if active is None else active & hit
            accepted = accepted + active.astype(mx.int32)
    tokens = mx.stack([step.tokens for step in steps], axis=1)  # [B, width + 1]
    chosen = tokens[mx.arange(len(rows)), accepted]
    last = _gather_logprobs(steps, accepted)
    mx.eval(chosen, accepted, *(last.arrays() if last is not None else ()))
    counts = accepted.tolist()
    rollback(batch.cache, [width - n for n in counts], batch.single)
    rounds: list[Round] = [(rows, pending, extras)]
    for position in range(width):
        members = [index for index, n in enumerate(counts) if n > position]
        if not members:
            break
        round_extras: dict[Row, Extra] = {}
        _read_part(rows, steps[position], round_extras)
        rounds.append(([rows[i] for i in members], [drafts[i][position] for i in members], round_extras))
    for row, draft, n in zip(rows, drafts, counts):
        if row.drafter is not None:
            row.drafter.settle(len(draft), n)
    speculation.count(sum(map(len, drafts)), sum(counts))
    batch.tokens = chosen
    batch.parts = _parts_of(rows, last)
    return rounds


def _read_part(rows: list[Row], sampled: Sampled, into: dict[Row, Extra]) -> None:
    from backends.mlx.batch import LogprobPart

    if sampled.logprob_rows:
        LogprobPart([rows[i] for i in sampled.logprob_rows], sampled).read(into)


def _gather_logprobs(steps: list[Sampled], accepted: mx.array) -> Sampled | None:
    """The logprob arrays of each row's chosen position (its next pending token)."""
    first = steps[0]
    if not first.logprob_rows:
        return None
    index = accepted[mx.array(list(first.logprob_rows))]
    columns = mx.arange(len(first.logprob_rows))

    def pick(name: str) -> mx.array | None:
        values = [getattr(step, name) for step in steps]
        if values[0] is None:
            return None
        return mx.stack(values)[index, columns]

    return Sampled(first.tokens, first.logprob_rows, pick("logprobs"), pick("top_ids"), pick("top_logprobs"))


def _parts_of(rows: list[Row], sampled: Sampled | None) -> list[Any]:
    from backends.mlx.batch import LogprobPart

    if sampled is None:
        return []
    return [LogprobPart([rows[i] for i in sampled.logprob_rows], sampled)]
