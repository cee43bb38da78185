"""The legacy completions API's own wire types: the request body, the answer, the chunks.

`prompt` and `stop` take several JSON shapes that msgspec cannot tell apart by
type alone (lists of strings, of ids, of id lists), so they decode loosely and
`endpoint.prompts` checks them, naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from gateway.backend import FinishReason
from gateway.protocol import Penalty, PositiveInt, Probability, StreamOptions
from gateway.responses import Usage


class CompletionCreate(Struct, forbid_unknown_fields=True):
    """POST /v1/completions body: OpenAI's fields plus the chat endpoint's sampling extras."""

    model: str
    prompt: str | list[Any]
    best_of: Annotated[int, Meta(ge=1, le=20)] | None = None
    echo: bool = False
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    max_tokens: PositiveInt | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    presence_penalty: Penalty | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Meta(max_length=16)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    user: str | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    repetition_context_size: PositiveInt | None = None


class LegacyLogprobs(Struct):
    """The completions API's logprobs: parallel lists, one entry per token."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(Struct):
    text: str
    index: int
    logprobs: LegacyLogprobs | None
    finish_reason: FinishReason | None


class TextCompletion(Struct):
    """The answer, and (with `choices` holding one piece each) every stream chunk."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | UnsetType | None = UNSET
    object: Literal["text_completion"] = "text_completion"
