"""A row's grammar at decode time, and the token masks of a batch's constrained rows.

Each constrained row owns an llguidance matcher (`Constraint`). A row left
thinking by its prompt is free until its think block closes: the constraint
watches the tokens for the closing marker and starts right after it.

`BatchMasks` computes the masks of all active rows of a step together (one
call; llguidance fills them in parallel threads) into one bitmask and unpacks it
into a `[B, V]` boolean array; rows without an active constraint get an all-true
row. The bits are unpacked by MLX, in the step's graph. A batch with no
constrained row never gets here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np


class Constraint:
    """One row's matcher and when it starts to apply.

    It applies from the first token, or, for a row its prompt left thinking, once
    the think block closes. `call_start` (a tool-call grammar's opening marker)
    also ends the free part: a model may open a call from inside its think block,
    and the grammar then takes over with the marker already written. With
    `until_call` the row is free until it opens a call (`tool_choice: auto` with
    strict tools: only the calls are constrained).
    """

    def __init__(
        self,
        matcher: Any,
        *,
        think_end: Sequence[int] = (),
        call_start: Sequence[int] = (),
        until_call: bool = False,
    ) -> None:
        self.matcher = matcher
        self._think_end = () if until_call else tuple(think_end)
        free = bool(self._think_end) or until_call
        self._call_start = tuple(call_start) if free else ()
        self._recent: tuple[int, ...] = ()
        self.active = not free
        self.error: str | None = None

    def advance(self, token: int) -> None:
        """Record a sampled token: the matcher consumes it, or it may end the free part."""
        if self.error is not None:
            return
        if not self.active:
            keep = max(len(self._think_end), len(self._call_start))
            self._recent = (*self._recent, token)[-keep:]
            if self._think_end and self._recent[-len(self._think_end) :] == self._think_end:
                self.active = True
            elif self._call_start and self._recent[-len(self._call_start) :] == self._call_start:
                self.active = True
                self._consume(list(self._call_start))
            return
        self._consume([token])

    def _consume(self, tokens: list[int]) -> None:
        for token in tokens:  # one at a time: `consume_tokens` refuses EOS once the grammar is done
            if not self.matcher.consume_token(token):
                self.error = self.matcher.get_error() or f"token {token} does not fit the grammar"
                return


def think_end_tokens(tokenizer: Any, in_reasoning: bool) -> tuple[int, ...]:
    """The closing think marker's ids when the prompt leaves the row thinking, else ()."""
    if not in_reasoning:
        return ()
    tokens = getattr(tokenizer, "think_end_tokens", None)
    return tuple(int(t) for t in tokens) if tokens else ()


class BatchMasks:
    """Token masks for the constrained rows of a batch, computed together."""

    def __init__(self, vocab_size: int) -> None:
        from llguidance import LLExecutor

        self.vocab_size = vocab_size
        self.words = (vocab_size + 31) // 32
        self._executor = LLExecutor()
        self._shifts = mx.arange(32, dtype=mx.int32)

    def mask(self, constraints: Sequence[Constraint | None]) -> mx.array | None:
        """`[B, V]` allowed tokens (None when no row is constrained right now)."""
        active = [
            (c.matcher, index)
            for index, c in enumerate(constraints)
            if c is not None and c.active and c.error is None
        ]
        if not active:
            return None
        from llguidance.numpy import fill_next_token_bitmask, fill_next_token_bitmask_par

        bits = np.full((len(constraints), self.words), -1, dtype=np.int32)
        if len(active) == 1:  # no thread pool for a lone row
            fill_next_token_bitmask(active[0][0], bits, active[0][1])
        else:
            fill_next_token_bitmask_par(self._executor, active, bits)
        # unpacked by MLX, lazily: bit b of word w is token 32 * w + b
        words = mx.array(bits)[:, :, None]
        allowed = mx.right_shift(words, self._shifts) & 1
        return allowed.reshape(len(constraints), -1)[:, : self.vocab_size] != 0


def apply_mask(logits: mx.array, mask: mx.array | None) -> mx.array:
    return logits if mask is None else mx.where(mask, logits, -math.inf)
