"""The logprobs of a prompt's own tokens, for an echoed legacy completion.

Runs on the engine thread (`Engine.call`, between decode steps): one forward
pass over the whole prompt, and each token's logprob under the positions
before it. The first token has none (NaN: no context predicts it).
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
from mlx import nn

from backends.mlx.output_text import token_table
from gateway.backend import TokenLogprob, TopLogprob


def prompt_logprobs(
    model: nn.Module, tokens: list[int], top: int
) -> list[tuple[float, list[tuple[int, float]]]]:
    """(logprob, top (id, logprob)s) of every prompt token; the first is (NaN, [])."""
    logits = model(mx.array(tokens)[None])[0, :-1].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    chosen = mx.take_along_axis(logprobs, mx.array(tokens[1:])[:, None], axis=-1)[:, 0]
    best = mx.argsort(-logprobs, axis=-1)[:, :top] if top else None
    best_values = mx.take_along_axis(logprobs, best, axis=-1) if best is not None else None
    mx.eval(chosen, *(a for a in (best, best_values) if a is not None))
    result: list[tuple[float, list[tuple[int, float]]]] = [(math.nan, [])]
    ids = best.tolist() if best is not None else None
    values = best_values.tolist() if best_values is not None else None
    for position, value in enumerate(chosen.tolist()):
        pairs = list(zip(ids[position], values[position], strict=True)) if ids and values else []
        result.append((value, pairs))
    return result


def logprob_entries(
    tokenizer: Any, tokens: list[int], scores: list[tuple[float, list[tuple[int, float]]]]
) -> list[TokenLogprob]:
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
