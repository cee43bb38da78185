"""Upstream stream chunks in, gateway `GenerationChunk`s out (and requests out).

Chunks are decoded into lenient Structs: unknown fields are ignored and every
field may be missing or null, because each OpenAI-compatible server fills a
slightly different subset.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from msgspec import Struct

from gateway import (
    BackendFailed,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Embeddings,
    FinishReason,
    GenerationChunk,
    TokenLogprob,
    TokenUsage,
    ToolCallDelta,
    TopLogprob,
)


class _Function(Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # the name some servers (Ollama, newer vLLM) use
    tool_calls: list[_ToolCall] | None = None


class _TopLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None = None


class _TokenLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[_TopLogprob] | None = None


class _Logprobs(Struct):
    content: list[_TokenLogprob] | None = None


class _Choice(Struct):
    index: int = 0
    delta: _Delta | None = None
    logprobs: _Logprobs | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string (or token id) that matched
    matched_stop: str | int | None = None  # SGLang's name for it


class _PromptDetails(Struct):
    cached_tokens: int | None = None


class _CompletionDetails(Struct):
    reasoning_tokens: int | None = None


class _Usage(Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _Error(Struct):
    message: str | None = None


class UpstreamChunk(Struct):
    """One `data:` event of an upstream chat-completion stream."""

    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: _Error | str | None = None


decode_chunk = msgspec.json.Decoder(UpstreamChunk).decode


class _LegacyLogprobs(Struct):
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None


class _LegacyChoice(Struct):
    index: int = 0
    text: str | None = None
    logprobs: _LegacyLogprobs | None = None
    finish_reason: str | None = None


class UpstreamCompletionChunk(Struct):
    """One `data:` event of an upstream legacy-completion stream (`text_completion`)."""

    choices: list[_LegacyChoice] | None = None
    usage: _Usage | None = None
    error: _Error | str | None = None


decode_completion_chunk = msgspec.json.Decoder(UpstreamCompletionChunk).decode

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",
}


def finish_reason(value: str) -> FinishReason:
    """Non-standard reasons ("eos_token", "stop_sequence", "abort") read as "stop"."""
    return _FINISH_REASONS.get(value, "stop")


def _logprobs(items: list[_TokenLogprob]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            item.token,
            item.logprob,
            item.bytes,
            [TopLogprob(top.token, top.logprob, top.bytes) for top in item.top_logprobs or ()],
        )
        for item in items
    ]


def _tool_calls(calls: list[_ToolCall]) -> list[ToolCallDelta]:
    deltas = []
    for call in calls:
        function = call.function or _Function()
        deltas.append(ToolCallDelta(call.index, call.id, function.name, function.arguments or ""))
    return deltas


def _stop_string(choice: _Choice) -> str | None:
    matched = choice.stop_reason if choice.stop_reason is not None else choice.matched_stop
    return matched if isinstance(matched, str) else None  # an int is a stop token, not a string


def to_chunk(choice: _Choice) -> GenerationChunk | None:
    """The gateway chunk for one upstream choice delta; None when it carries nothing."""
    delta = choice.delta or _Delta()
    text = delta.content or ""
    reasoning = delta.reasoning_content or delta.reasoning or ""
    calls = _tool_calls(delta.tool_calls) if delta.tool_calls else None
    logprobs = _logprobs(choice.logprobs.content) if choice.logprobs and choice.logprobs.content else None
    finish = finish_reason(choice.finish_reason) if choice.finish_reason else None
    if not (text or reasoning or calls or logprobs or finish):
        return None
    return GenerationChunk(
        choice=choice.index,
        text=text,
        reasoning=reasoning,
        tool_calls=calls,
        logprobs=logprobs,
        finish_reason=finish,
        stop_sequence=_stop_string(choice) if finish == "stop" else None,
    )


def _legacy_logprobs(logprobs: _LegacyLogprobs) -> list[TokenLogprob]:
    """Legacy parallel lists as chat-style entries (a null logprob, an echoed prompt's
    first token, becomes NaN: the completions endpoint writes it back as null)."""
    tops = logprobs.top_logprobs or [None] * len(logprobs.tokens)
    return [
        TokenLogprob(
            token,
            math.nan if value is None else value,
            None,
            [TopLogprob(name, logprob, None) for name, logprob in (top or {}).items()],
        )
        for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, tops, strict=False)
    ]


def to_legacy_chunk(choice: _LegacyChoice) -> GenerationChunk | None:
    """The gateway chunk for one upstream legacy-completion choice; None when empty."""
    text = choice.text or ""
    logprobs = _legacy_logprobs(choice.logprobs) if choice.logprobs and choice.logprobs.tokens else None
    finish = finish_reason(choice.finish_reason) if choice.finish_reason else None
    if not (text or logprobs or finish):
        return None
    return GenerationChunk(choice=choice.index, text=text, logprobs=logprobs, finish_reason=finish)


def to_usage(usage: _Usage) -> TokenUsage:
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    return TokenUsage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        cached_tokens=(prompt.cached_tokens or 0) if prompt else 0,
        reasoning_tokens=(completion.reasoning_tokens or 0) if completion else 0,
    )


def error_message(error: _Error | str) -> str:
    message = error if isinstance(error, str) else error.message
    return f"upstream error: {message or 'no message'}"


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


_encode = msgspec.json.Encoder().encode


# Chat-only fields a legacy completion never sets, and the internal ones it translates.
_NOT_LEGACY = frozenset({"messages", "logprobs", "top_logprobs", "best_of", "prompt"})


def completion_body(request: CompletionRequest, model: str) -> bytes:
    """The legacy completions body for `{url}/completions`, streamed with usage.

    `n` is what the endpoint asks for (with `best_of`, that many candidates: the
    gateway ranks them), so `best_of` itself does not go upstream."""
    body = {k: v for k, v in msgspec.to_builtins(request).items() if k not in _NOT_LEGACY}
    prompts = request.raw_prompts
    body["prompt"] = prompts[0] if len(prompts) == 1 else prompts
    if request.logprobs:
        body["logprobs"] = request.top_logprobs or 0
    body.update(model=model, stream=True, stream_options={"include_usage": True})
    return _encode(body)


def embedding_body(request: EmbeddingRequest, model: str) -> bytes:
    body: dict[str, Any] = {"model": model, "input": request.raw_inputs, "encoding_format": "float"}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    return _encode(body)


class _EmbeddingItem(Struct):
    embedding: list[float]
    index: int = 0


class _EmbeddingUsage(Struct):
    prompt_tokens: int | None = None


class UpstreamEmbeddings(Struct):
    data: list[_EmbeddingItem]
    usage: _EmbeddingUsage | None = None


def read_embeddings(body: bytes, inputs: int) -> Embeddings:
    """The upstream's vectors in input order; anything else is a `BackendFailed`."""
    try:
        answer = msgspec.json.decode(body, type=UpstreamEmbeddings)
    except msgspec.DecodeError:
        raise BackendFailed("the upstream sent a malformed embeddings answer") from None
    items = sorted(answer.data, key=lambda item: item.index)
    if [item.index for item in items] != list(range(inputs)):
        raise BackendFailed(f"the upstream answered {len(items)} embeddings for {inputs} inputs")
    tokens = answer.usage.prompt_tokens if answer.usage else None
    return Embeddings(vectors=[item.embedding for item in items], prompt_tokens=tokens or 0)


def request_body(request: ChatCompletionRequest, model: str) -> bytes:
    """The request as the client sent it, for `model`, always streamed with usage.

    Unset request fields are omitted (the Struct omits defaults); null message
    fields are dropped too, since strict servers refuse e.g. `"refusal": null`.
    """
    body = msgspec.to_builtins(request)
    body["messages"] = _without_nulls(body["messages"])
    body.update(model=model, stream=True, stream_options={"include_usage": True})
    return _encode(body)
