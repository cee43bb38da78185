"""Chat-style token logprobs -> the completions API's legacy shape, and `best_of`."""

from __future__ import annotations

import math

from gateway.backend import TokenLogprob
from gateway.endpoints.completions.wire import CompletionChoice, LegacyLogprobs


class LegacyLogprobWriter:
    """Legacy logprobs for one choice, piece by piece: `text_offset` counts on from the
    choice's earlier pieces (offsets into the choice's text, echoed prompt included)."""

    __slots__ = ("offset", "top")

    def __init__(self, top: int) -> None:
        self.offset = 0
        self.top = top

    def convert(self, logprobs: list[TokenLogprob]) -> LegacyLogprobs:
        offsets = []
        for entry in logprobs:
            offsets.append(self.offset)
            self.offset += len(entry.token)
        return LegacyLogprobs(
            tokens=[entry.token for entry in logprobs],
            token_logprobs=[_value(entry.logprob) for entry in logprobs],
            top_logprobs=[
                {top.token: top.logprob for top in entry.top_logprobs[: self.top]} for entry in logprobs
            ],
            text_offset=offsets,
        )


def _value(logprob: float) -> float | None:
    """An echoed prompt's first token has no logprob (NaN from the backend): null."""
    return None if math.isnan(logprob) else logprob


def mean_logprob(logprobs: LegacyLogprobs | None) -> float:
    """A choice's score for `best_of`: the mean logprob of its tokens (an echoed prompt's
    tokens count too; they are the same for every candidate of one prompt)."""
    values = [value for value in (logprobs.token_logprobs if logprobs else ()) if value is not None]
    return sum(values) / len(values) if values else -math.inf


def best_of(choices: list[CompletionChoice], per_prompt: int, keep: int) -> list[CompletionChoice]:
    """The `keep` best of each prompt's `per_prompt` candidates, re-indexed prompt-major."""
    kept: list[CompletionChoice] = []
    for start in range(0, len(choices), per_prompt):
        candidates = sorted(choices[start : start + per_prompt], key=lambda c: -mean_logprob(c.logprobs))
        kept.extend(candidates[:keep])
    for index, choice in enumerate(kept):
        choice.index = index
    return kept
