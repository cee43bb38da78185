"""The logprobs of a prompt's own tokens, for an echoed legacy completion.

Runs on the engine thread (`Engine.call`, between decode steps), a chunk of
the prompt per call: each token's logprob under the positions before it. The
first token has none (NaN: no context predicts it).
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
from mlx import nn

from backends.mlx.output_text import token_table
from gateway import TokenLogprob, TopLogprob

Score = tuple[float, list[tuple[int, float]]]  # (logprob, top (id, logprob)s)


class PromptScorer:
    """Scores a prompt a chunk at a time, each `step` one `Engine.call`, so running
    streams decode between chunks (a KV cache carries the context over)."""

    def __init__(self, model: nn.Module, tokens: list[int], top: int, chunk: int) -> None:
        self.model, self.tokens, self.top, self.chunk = model, tokens, top, chunk
        self.cache: list[Any] | None = None
        self.position = 0  # tokens run through the model so far
        self.scores: list[Score] = [(math.nan, [])]  # the first token has no context

    @property
    def done(self) -> bool:
        return len(self.scores) == len(self.tokens)

    def step(self) -> None:
        """On the engine thread: the next chunk's logits score the tokens that follow them."""
        from mlx_lm.models.cache import make_prompt_cache

        if self.cache is None:
            self.cache = make_prompt_cache(self.model)
        end = min(self.position + self.chunk, len(self.tokens) - 1)
        logits = self.model(mx.array(self.tokens[self.position : end])[None], cache=self.cache)[0]
        logits = logits.astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        following = mx.array(self.tokens[self.position + 1 : end + 1], dtype=mx.int32)[:, None]
        chosen = mx.take_along_axis(logprobs, following, axis=-1)[:, 0]
        best = mx.argsort(-logprobs, axis=-1)[:, : self.top] if self.top else None
        best_values = mx.take_along_axis(logprobs, best, axis=-1) if best is not None else None
        mx.eval(chosen, *(a for a in (best, best_values) if a is not None))
        ids = best.tolist() if best is not None else None
        values = best_values.tolist() if best_values is not None else None
        for index, value in enumerate(chosen.tolist()):
            pairs = list(zip(ids[index], values[index], strict=True)) if ids and values else []
            self.scores.append((value, pairs))
        self.position = end


def logprob_entries(tokenizer: Any, tokens: list[int], scores: list[Score]) -> list[TokenLogprob]:
    """The prompt tokens' logprobs as chat-style entries (the shape generated tokens have)."""
    piece = token_table(tokenizer).piece
    entries = []
    for token, (logprob, top) in zip(tokens, scores, strict=True):
        text, raw = piece(token)
        alternatives = []
        for other, value in top:
            other_text, other_raw = piece(int(other))
            alternatives.append(TopLogprob(other_text, value, list(other_raw)))
        entries.append(TokenLogprob(text, logprob, list(raw), alternatives))
    return entries
