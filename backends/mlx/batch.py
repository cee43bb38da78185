"""The model-facing half of the engine: chunked prefill and the batched decode step.

`Prefill` runs one job's prompt through the model a chunk at a time (so rows
already decoding wait for one chunk, not a whole prompt), then samples each row's
first token from the shared last position: n choices are prefilled once and the
KV cache is fanned out to n rows by the cache's own `merge`.

`DecodeBatch` holds the running rows with a batched KV cache (mlx-lm's
`BatchKVCache` & co., which left-pad rows of different lengths; a lone row keeps
the plain per-sequence cache, which decodes a little faster), a
`SamplerBatch`, and the tokens sampled but not yet emitted. Its step is
pipelined like `mlx_lm.generate_step`: the next step's graph is built on the
still-computing tokens and started with `async_eval` before the previous tokens
are read back, so Python's per-token work overlaps the model's.

Rows with a grammar (`Row.constraint`) need their previous token before the
next token's mask exists, so a batch holding one starts the next forward pass
first, then reads the previous tokens back and lets the matchers consume them;
the engine feeds the tokens out, and `finish_step` computes the masks
(llguidance, on the CPU) and samples from the masked logits: both happen while
the forward pass runs. Masking happens before sampling, so
logprobs report the constrained distribution. Batches without a constrained
row take the plain path and pay nothing.

With speculative decoding (`speculative.py`), a step where some row has a
draft verifies all rows' drafts in one forward pass instead; the engine emits
the accepted tokens after the step's own (`rounds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import mlx.core as mx
from mlx import nn

from backends.mlx.constraint import BatchMasks, apply_mask
from backends.mlx.jobs import Job, Row
from backends.mlx.sampling import RowSpec, Sampled, SamplerBatch
from backends.mlx.speculative import Round, Speculation, verify_step

# Extra per-row data for a token: (logprob of the sampled token, top (id, logprob)s).
Extra = tuple[float, list[tuple[int, float]] | None]


def can_batch(cache: Sequence[Any]) -> bool:
    """Whether every layer cache of this model can be merged into a batch cache."""
    return all(callable(getattr(type(layer), "merge", None)) for layer in cache)


class LogprobPart(NamedTuple):
    """Logprob arrays of some rows of one sampling call (rows by identity, so the
    batch may be filtered or extended before they are read)."""

    rows: list[Row]
    sampled: Sampled

    def read(self, into: dict[Row, Extra]) -> None:
        logprobs = self.sampled.logprobs.tolist()
        ids = self.sampled.top_ids.tolist() if self.sampled.top_ids is not None else None
        values = self.sampled.top_logprobs.tolist() if self.sampled.top_logprobs is not None else None
        for index, row in enumerate(self.rows):
            top = None
            if ids is not None and row.params.top_logprobs > 0:
                count = row.params.top_logprobs
                top = list(zip(ids[index][:count], values[index][:count]))
            into[row] = (logprobs[index], top)


def _parts(rows: Sequence[Row], sampled: Sampled) -> list[LogprobPart]:
    if not sampled.logprob_rows:
        return []
    return [LogprobPart([rows[index] for index in sampled.logprob_rows], sampled)]


class Newcomer(NamedTuple):
    """A job entering prefill: its rows (all of them where the cache batches, else
    one), and a per-sequence cache already holding its first `start` prompt tokens
    (a prefix-cache hit; 0 for a fresh cache)."""

    job: Job
    rows: list[Row]
    cache: list[Any]
    start: int = 0


class Prefill:
    """The prompts of a group of jobs, processed together a chunk at a time.

    The group's per-sequence caches are merged into one batch cache (the cache
    class's own `merge`, which left-pads shorter prefixes), and every chunk runs
    the next `width` prompt tokens of every job in one forward pass. Jobs whose
    prompt (after its cached prefix) is shorter are right-padded in that chunk,
    and the cache's `finalize` rolls the padding to the left, where the batch
    cache masks it (mlx-lm's `prepare`/`finalize` protocol): so jobs of any
    prompt length, with or without a prefix-cache hit, share each pass, and all
    of them reach their last prompt token together. That token runs for every
    job in one last pass, whose logits give each row its first token: n choices
    of a job are prefilled once and fanned out to n rows.

    Budget: a chunk holds at most `step_size` tokens counted as padded width x
    jobs, because padding costs as much compute as prompt tokens and the
    chunk's duration is what running streams wait for. A lone job keeps the
    plain per-sequence cache (no padding, cheapest to decode alone).
    """

    def __init__(self, model: nn.Module, newcomers: Sequence[Newcomer], step_size: int) -> None:
        if not newcomers:
            raise ValueError("a prefill needs at least one job")
        self.model = model
        self.entries = list(newcomers)
        self.batched = len(self.entries) > 1  # the cache is a batch cache, one row per entry
        self.cache = self.entries[0].cache if not self.batched else merge([e.cache for e in self.entries])
        self.bodies = [e.job.prompt[e.start : -1] for e in self.entries]  # all but the last token
        self.width = max(1, step_size // len(self.entries))
        self.position = 0  # body columns done

    @property
    def jobs(self) -> list[Job]:
        return [entry.job for entry in self.entries]

    @property
    def rows(self) -> list[Row]:
        return [row for entry in self.entries for row in entry.rows]

    def drop(self, job: Job) -> bool:
        """Leave `job` out from now on (cancelled); True when no job is left."""
        keep = [index for index, entry in enumerate(self.entries) if entry.job is not job]
        if len(keep) == len(self.entries):
            return False
        if not keep:
            self.entries, self.bodies = [], []
            return True
        index = mx.array(keep, dtype=mx.int32)
        for layer in self.cache:
            layer.filter(index)
        self.entries = [self.entries[i] for i in keep]
        self.bodies = [self.bodies[i] for i in keep]
        return False

    def step(self) -> mx.array | None:
        """Process the next chunk; returns the next-token logits `[jobs, V]` after the last.

        All but the last prompt token go through in chunks (their logits are never
        computed: only the cache is evaluated); the last tokens alone give the logits.
        """
        longest = max(len(body) for body in self.bodies)
        if self.position < longest:
            end = min(self.position + self.width, longest)
            pieces = [body[self.position : end] for body in self.bodies]
            lengths = [len(piece) for piece in pieces]
            padding = [end - self.position - length for length in lengths]
            padded = any(padding)
            if padded:
                for layer in self.cache:
                    layer.prepare(lengths=lengths, right_padding=padding)
            tokens = [piece + [0] * pad for piece, pad in zip(pieces, padding)]
            self.model(mx.array(tokens), cache=self.cache)
            if padded:
                for layer in self.cache:
                    layer.finalize()
            mx.eval([layer.state for layer in self.cache])
            self.position = end
            if self.position < longest:
                return None
        last = mx.array([[entry.job.prompt[-1]] for entry in self.entries])
        return self.model(last, cache=self.cache)[:, -1, :]

    def prompt_cache(self, index: int) -> list[Any]:
        """Entry `index`'s cache as a per-sequence one (the state after its whole
        prompt, for the prefix cache): the live cache of a lone job, else a copy
        cut out of the batch. Call before `finish`, which may reshape the cache."""
        if not self.batched:
            return self.cache
        return [layer.extract(index) for layer in self.cache]

    def finish(
        self, logits: mx.array, vocab_size: int, masks: BatchMasks | None = None
    ) -> tuple[list[Any], SamplerBatch, Sampled]:
        """Fan the cache out to the rows and sample each row's first token
        (masked by the rows' grammars, where they have active ones).

        A single row gets a plain per-sequence cache (cheapest to decode alone).
        """
        specs = [RowSpec(row.params, row.choice, e.job.prompt) for e in self.entries for row in e.rows]
        owners = [index for index, entry in enumerate(self.entries) for _ in entry.rows]
        sampler = SamplerBatch(vocab_size, specs)
        if owners != list(range(logits.shape[0])):
            logits = logits[mx.array(owners, dtype=mx.int32)]
        if masks is not None:
            logits = apply_mask(logits, masks.mask([row.constraint for row in self.rows]))
        sampled = sampler.sample(logits)
        cache = self._fan_out(owners)
        mx.eval(sampled.arrays(), [layer.state for layer in cache])
        return cache, sampler, sampled

    def _fan_out(self, owners: list[int]) -> list[Any]:
        """The cache with one row per batch row (`owners[i]`: the entry of row i)."""
        if not self.batched:
            return to_batch(self.cache, len(owners)) if len(owners) > 1 else self.cache
        if len(owners) == 1:
            return [layer.extract(0) for layer in self.cache]
        if owners != list(range(len(self.entries))):
            index = mx.array(owners, dtype=mx.int32)
            for layer in self.cache:
                layer.filter(index)
        return self.cache


def merge(caches: Sequence[list[Any]]) -> list[Any]:
    """Per-sequence caches (one list of layers each) as one batch cache."""
    return [type(layers[0]).merge(list(layers)) for layers in zip(*caches)]


def to_batch(cache: list[Any], copies: int = 1) -> list[Any]:
    """A per-sequence cache as a batch cache of `copies` identical rows."""
    return [type(layer).merge([layer] * copies) for layer in cache]


class DecodeBatch:
    """The running rows; every row advances one token per `step`."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.masks: BatchMasks | None = None  # set by the engine once a constrained row comes
        self.speculation: Speculation | None = None  # set by the engine where drafts can be verified
        self.rounds: list[Round] = []  # a speculative step's accepted drafts, after `step`'s tokens
        self.peak: tuple[int, int] = (0, 0)  # (rows, constrained rows) of the largest step so far
        self._clear()

    def _clear(self) -> None:
        self.rows: list[Row] = []
        self.cache: list[Any] = []
        self.single = True  # the cache is a plain per-sequence one (one row)
        self.sampler: SamplerBatch | None = None
        self.tokens: mx.array | None = None  # sampled, neither emitted nor fed yet
        self.parts: list[LogprobPart] = []  # logprobs of `tokens`
        self.constrained = 0  # rows with a grammar
        self._logits: mx.array | None = None  # a constrained step's, not yet sampled
        self.steps = 0

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, rows: list[Row], cache: list[Any], sampler: SamplerBatch, sampled: Sampled) -> None:
        """Add prefilled rows; their first tokens are emitted by the next `step`."""
        if not self.rows:
            self.cache, self.sampler, self.tokens = cache, sampler, sampled.tokens
            self.single = len(rows) == 1
            self.parts = []
        else:
            if self.single:
                self.cache, self.single = to_batch(self.cache), False
            if len(rows) == 1:
                cache = to_batch(cache)
            for mine, theirs in zip(self.cache, cache):
                mine.extend(theirs)
            self.sampler.extend(sampler)
            self.tokens = mx.concatenate([self.tokens, sampled.tokens])
        self.parts += _parts(rows, sampled)
        self.rows = self.rows + rows
        self.constrained = sum(row.constraint is not None for row in self.rows)

    def remove(self, gone: set[Row]) -> None:
        """Drop rows (finished or cancelled) from the cache, sampler and pending tokens."""
        keep = [index for index, row in enumerate(self.rows) if row not in gone]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._clear()
            return
        index = mx.array(keep, dtype=mx.int32)
        if len(keep) == 1 and all(hasattr(layer, "extract") for layer in self.cache):
            # back to the cheaper per-sequence cache
            self.cache, self.single = [layer.extract(keep[0]) for layer in self.cache], True
        else:
            for layer in self.cache:
                layer.filter(index)
        self.sampler.filter(keep)
        if self._logits is not None:  # between `step` and `finish_step`
            self._logits = self._logits[index]
        else:
            self.tokens = self.tokens[index]
        self.rows = [self.rows[i] for i in keep]
        self.constrained = sum(row.constraint is not None for row in self.rows)

    def row_cache(self, row: Row) -> list[Any] | None:
        """One row's KV cache as a per-sequence cache: the live one when it runs alone,
        else a copy cut out of the batch (None where the cache cannot extract rows)."""
        if self.single:
            return self.cache
        if not all(hasattr(layer, "extract") for layer in self.cache):
            return None
        index = self.rows.index(row)
        return [layer.extract(index) for layer in self.cache]

    def step(self) -> tuple[list[Row], list[int], dict[Row, Extra]]:
        """Start the next token of every row; return the previous one, read back.

        Returns the rows, their tokens, and logprob extras for rows that asked.
        A batch with constrained rows only starts the forward pass here; the
        engine calls `finish_step` once it has fed the tokens out (and dropped
        finished rows), so the masks and that work both overlap the forward pass.
        Where a row has a draft, the step verifies every row's draft instead
        (`speculative.verify_step`) and leaves the accepted ones in `rounds`.
        """
        rows, pending, parts = self.rows, self.tokens, self.parts
        self.peak = max(self.peak, (len(rows), self.constrained))
        self.rounds = []
        if self.speculation is not None and not self.constrained and self._might_draft():
            rounds = verify_step(self, self.speculation)
            if rounds is not None:
                self._count_step()
                first, *self.rounds = rounds
                return first
        logits = self.model(pending[:, None], cache=self.cache)[:, -1, :]
        if self.constrained:
            mx.async_eval(logits)
            tokens = pending.tolist()
            for row, token in zip(rows, tokens):
                if row.constraint is not None:
                    row.constraint.advance(token)
            self._logits = logits
        else:
            self._sample(logits)
        self._count_step()
        if not self.constrained:
            tokens = pending.tolist()
        extras: dict[Row, Extra] = {}
        for part in parts:
            part.read(extras)
        return rows, tokens, extras

    def _count_step(self) -> None:
        self.steps += 1
        if self.steps % 256 == 0:
            mx.clear_cache()

    def _might_draft(self) -> bool:
        count = self.speculation.width(len(self.rows))
        return count > 0 and any(
            row.drafter is not None and row.drafter.might_draft(row.tokens, count) for row in self.rows
        )

    def finish_step(self) -> None:
        """Sample the tokens `step` left to sample: masked by the rows' grammars."""
        logits, self._logits = self._logits, None
        if logits is None or not self.rows:
            return
        assert self.masks is not None, "a constrained row joined without the engine's masks"
        self._sample(apply_mask(logits, self.masks.mask([row.constraint for row in self.rows])))

    def _sample(self, logits: mx.array) -> None:
        sampled = self.sampler.sample(logits)
        mx.async_eval(*sampled.arrays())
        self.tokens = sampled.tokens
        self.parts = _parts(self.rows, sampled)
