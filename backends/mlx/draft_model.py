"""Drafts from a small second model (`draft_model`) that shares the main model's tokenizer.

The draft model decodes GREEDILY, so its draft is deterministic and the batch's
acceptance rule ("the sampled token equals the draft token", `speculative.py`)
stays exact for greedy and sampled rows alike.

Each row has its own `ModelDraft` holding that row's draft KV cache. Asked for a
draft, it trims its cache back to the longest common prefix of what it has fed
and the row's tokens now (prompt + output + the pending token), feeds the rest
in one call (the first request prefills the prompt), then runs the greedy steps
as one lazy graph evaluated once. The draft tokens it fed stay in the cache: the
next request's common-prefix trim takes back the rejected ones. Everything runs
on the engine thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx import nn

PREFILL_CHUNK = 512  # tokens fed to the draft model per call when it catches up on a prompt


class ModelDraft:
    """One row's draft-model source: its own KV cache, made on the first draft."""

    def __init__(self, model: nn.Module, vocab_size: int) -> None:
        """`vocab_size`: the main model's logits width (draft ids must be below it)."""
        self.model = model
        self.vocab_size = vocab_size
        self._cache: list[Any] | None = None
        self._fed: list[int] = []  # tokens whose KV states the cache holds, in order

    def draft(self, tokens: Sequence[int], count: int) -> list[int]:
        """The draft model's greedy `count` tokens after `tokens` (the row's whole sequence)."""
        if count <= 0 or not tokens:
            return []
        if self._cache is None:
            from mlx_lm.models.cache import make_prompt_cache

            self._cache = make_prompt_cache(self.model)
        common = _common_prefix(self._fed, tokens)
        if common == len(tokens):  # everything fed already: re-feed the last token for its logits
            common -= 1
        if len(self._fed) > common:
            for layer in self._cache:
                layer.trim(len(self._fed) - common)
            del self._fed[common:]
        missing = list(tokens[common:])
        for start in range(0, len(missing) - 1, PREFILL_CHUNK):  # all but the last chunk's logits
            chunk = missing[start : min(start + PREFILL_CHUNK, len(missing) - 1)]
            self.model(mx.array([chunk]), cache=self._cache)
            mx.eval([layer.state for layer in self._cache])
        logits = self.model(mx.array([missing[-1:]]), cache=self._cache)
        self._fed.extend(missing)
        steps: list[mx.array] = []
        for step in range(count):
            token = mx.argmax(logits[:, -1, : self.vocab_size], axis=-1)
            steps.append(token)
            if step < count - 1:
                logits = self.model(token[:, None], cache=self._cache)
        drafted = [int(t) for t in mx.concatenate(steps).tolist()]
        self._fed.extend(drafted[:-1])  # fed to the model; the last one was only predicted
        return drafted

    def release(self) -> None:
        """Drop the draft cache (its row has finished)."""
        self._cache, self._fed = None, []

    @property
    def cached_tokens(self) -> int:
        """Tokens whose KV states the draft cache holds."""
        return len(self._fed)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = min(len(a), len(b))
    for i in range(length):
        if a[i] != b[i]:
            return i
    return length


def check_tokenizers(main: Any, draft: Any) -> str | None:
    """Why `draft`'s tokenizer cannot draft for `main` (None when they agree)."""
    main_vocab, draft_vocab = _vocab(main), _vocab(draft)
    if main_vocab is None or draft_vocab is None:
        return "its tokenizer's vocabulary cannot be read to compare"
    if len(main_vocab) != len(draft_vocab):
        return f"vocabulary sizes differ ({len(draft_vocab)} tokens vs the model's {len(main_vocab)})"
    for token, index in main_vocab.items():
        if draft_vocab.get(token) != index:
            return f"token {token!r} is id {index} for the model but {draft_vocab.get(token)} for the draft model"
    return None


def _vocab(tokenizer: Any) -> dict[str, int] | None:
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if not callable(get_vocab):
        return None
    try:
        return dict(get_vocab())
    except (AttributeError, NotImplementedError):
        return None
