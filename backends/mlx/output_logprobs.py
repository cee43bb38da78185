"""Logprobs in OpenAI's shape, each reported with the content it belongs to.

OpenAI reports logprobs for content tokens only, each once. Since text is held
back (split characters, possible stop strings, markers) and some of it never
becomes content, every token is remembered with the span of the decoded output
it produced, and reported in the chunk that releases the first content
character of that span. Tokens are forgotten once all of their span has been
released or dropped, so the queue stays as short as the held-back text.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from backends.mlx.output_text import TokenTable
from gateway import TokenLogprob, TopLogprob


class Step(Protocol):
    @property
    def token(self) -> int: ...
    @property
    def logprob(self) -> float | None: ...
    @property
    def top(self) -> Sequence[tuple[int, float]] | None: ...


class _Pending:
    __slots__ = ("end", "sent", "start", "step")

    def __init__(self, start: int, end: int, step: Step) -> None:
        self.start = start  # offset of its first character in the decoded output
        self.end = end  # offset after its last one (start + 1 while its character is incomplete)
        self.step = step
        self.sent = False


class LogprobTracker:
    """The tokens of one choice whose logprobs are not settled yet."""

    __slots__ = ("_pending", "_table", "_top", "ready")

    def __init__(self, table: TokenTable, top_logprobs: int) -> None:
        self._table = table
        self._top = top_logprobs
        self._pending: deque[_Pending] = deque()
        self.ready: list[TokenLogprob] = []  # reported, for the next chunk to take

    def add(self, step: Step, start: int, end: int) -> None:
        """A token that produced output characters [start, end) (none yet if start == end)."""
        if step.logprob is None:
            raise ValueError("logprobs were requested but the step carries no logprob")
        self._pending.append(_Pending(start, max(end, start + 1), step))

    def report(self, start: int, end: int) -> None:
        """Characters [start, end) were released as content: report their tokens."""
        for pending in self._pending:
            if pending.start >= end:
                break
            if not pending.sent and pending.end > start:
                pending.sent = True
                self.ready.append(self._entry(pending.step))

    def settle(self, frontier: int) -> None:
        """Everything before `frontier` is released or dropped: forget tokens that end there."""
        pending = self._pending
        while pending and pending[0].end <= frontier:
            pending.popleft()

    def clear(self) -> None:
        self._pending.clear()

    def report_token(self, step: Step) -> None:
        """Report a token that produced no output (a continuation's end of sequence)."""
        self.ready.append(self._entry(step))

    def take(self) -> list[TokenLogprob] | None:
        """The reported entries for a chunk (None when there are none)."""
        if not self.ready:
            return None
        ready, self.ready = self.ready, []
        return ready

    def _entry(self, step: Step) -> TokenLogprob:
        piece = self._table.piece
        text, raw = piece(step.token)
        top: list[TopLogprob] = []
        if self._top and step.top:
            for token, logprob in step.top[: self._top]:
                top_text, top_raw = piece(int(token))
                top.append(TopLogprob(top_text, float(logprob), list(top_raw)))
        return TokenLogprob(text, float(step.logprob), list(raw), top)  # type: ignore[arg-type]
