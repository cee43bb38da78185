"""N-gram lookup: guess a row's next tokens from where its last few tokens occurred before.

Two sources of guesses, both without a second model:

- `HistoryIndex` (prompt lookup): the row's prompt + the tokens it generated so far.
  The last n tokens (n from `MAX_N` down to `MIN_N`) are looked up among their
  earlier occurrences; the tokens that followed the latest one are the draft.
- `PredictionIndex` (OpenAI Predicted Outputs): the client's text, tokenized. The
  row's last n tokens are looked up in the prediction; the draft is what follows
  the first occurrence after the previous match (so a prediction that repeats a
  line stays aligned with where the answer is), else the first occurrence.

Both update in O(1) per token (a dict from n-gram to position), so a row costs no
scan of its history per step.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

MIN_N = 2  # a lone repeated token predicts too little to be worth a verification
MAX_N = 4


class HistoryIndex:
    """The latest earlier occurrence of each n-gram of a growing token list."""

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}  # n-gram -> end index of its latest occurrence
        self._earlier: list[int | None] = [None] * (MAX_N + 1)  # per n: the suffix's previous end
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        tokens = self.tokens
        tokens.append(token)
        end = len(tokens) - 1
        for n in range(MIN_N, MAX_N + 1):
            if n > len(tokens):
                self._earlier[n] = None
                continue
            gram = tuple(tokens[-n:])
            self._earlier[n] = self._last.get(gram)
            self._last[gram] = end

    def draft(self, count: int) -> list[int]:
        """Up to `count` tokens that followed the longest earlier match of the suffix."""
        for n in range(MAX_N, MIN_N - 1, -1):
            end = self._earlier[n]
            if end is not None:
                return self.tokens[end + 1 : end + 1 + count]
        return []


class PredictionIndex:
    """Where each n-gram of a fixed prediction occurs, for aligned lookups.

    It remembers where in the prediction the row's last draft came from, so the
    next token the row writes is first compared with the prediction's next one
    (aligned drafting: an answer that follows the prediction drafts from its very
    first token); n-gram lookup re-aligns after the answer departs from it."""

    def __init__(self, prediction: Sequence[int], start: int) -> None:
        """`start`: the row's history length before its first generated token."""
        self.prediction = list(prediction)
        self._ends: dict[tuple[int, ...], list[int]] = {}
        for n in range(MIN_N, MAX_N + 1):
            for end in range(n - 1, len(self.prediction)):
                self._ends.setdefault(tuple(self.prediction[end - n + 1 : end + 1]), []).append(end)
        self._end, self._at = -1, start  # prediction index <-> history length when last aligned

    def draft(self, history: Sequence[int], count: int) -> list[int]:
        """Up to `count` prediction tokens that should follow `history` (a row's tokens)."""
        if not history:
            return []
        aligned = self._end + len(history) - self._at
        if 0 <= aligned < len(self.prediction) and self.prediction[aligned] == history[-1]:
            return self._from(aligned, len(history), count)
        for n in range(min(MAX_N, len(history)), MIN_N - 1, -1):
            ends = self._ends.get(tuple(history[-n:]))
            if ends:
                later = bisect_right(ends, self._end)
                return self._from(ends[later] if later < len(ends) else ends[0], len(history), count)
        return []

    def _from(self, end: int, at: int, count: int) -> list[int]:
        self._end, self._at = end, at
        return self.prediction[end + 1 : end + 1 + count]
