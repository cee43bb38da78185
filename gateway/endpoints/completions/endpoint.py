"""Legacy completions on the pipeline: the body becomes a `CompletionRequest`.

Each prompt is a user message of the internal request (what plugins see), sent
raw; `logprobs: k` asks the backend for chat-style logprobs with `k` top
entries; `best_of` asks for that many choices per prompt (with logprobs, to rank
them) and the answer keeps the best `n`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from gateway.context import RequestContext
from gateway.decoding import decode_body
from gateway.endpoints.completions.logprobs import LegacyLogprobWriter, best_of
from gateway.endpoints.completions.stream import CompletionStreamWriter, completion_id
from gateway.endpoints.completions.wire import CompletionChoice, CompletionCreate, TextCompletion
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline import Outcome, PreparedRequest
from gateway.prompts import CompletionRequest, RawPrompt, is_token_id, prompt_messages, token_ids

_decoder = msgspec.json.Decoder(CompletionCreate)
_encode = msgspec.json.Encoder().encode
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint
MAX_PROMPTS = 2048
MAX_CHOICES = 128


def prompts(value: str | list[Any]) -> list[RawPrompt]:
    """`prompt` as a list of prompts: a string, strings, token ids, or token-id lists."""
    if isinstance(value, str):
        return [value]
    if not value:
        raise InvalidRequest("'prompt' must not be an empty list", param="prompt")
    if len(value) > MAX_PROMPTS:
        raise InvalidRequest(f"'prompt' may hold at most {MAX_PROMPTS} prompts", param="prompt")
    if all(isinstance(item, str) for item in value):
        return list(value)
    if all(is_token_id(item) for item in value):
        return [list(value)]
    if all(isinstance(item, list) for item in value):
        for index, ids in enumerate(value):
            if not ids or not all(is_token_id(item) for item in ids):
                raise InvalidRequest(
                    "each token-id prompt must be a non-empty list of token ids", param=f"prompt[{index}]"
                )
        return [list(ids) for ids in value]
    raise InvalidRequest(
        "'prompt' must be a string, a list of strings, a list of token ids, or a list of token-id lists",
        param="prompt",
    )


def internal_request(body: CompletionCreate) -> CompletionRequest:
    """The pipeline's request for this body (cross-field rules checked here)."""
    raw = prompts(body.prompt)
    n = body.n or 1
    if body.best_of is not None and body.best_of < n:
        raise InvalidRequest("'best_of' must be at least 'n'", param="best_of")
    ranking = body.best_of is not None and body.best_of > n
    if ranking and body.stream:
        raise InvalidRequest("'best_of' cannot be used with 'stream'", param="best_of")
    per_prompt = body.best_of if ranking else n
    if len(raw) * per_prompt > MAX_CHOICES:
        raise InvalidRequest(
            f"prompts x {'best_of' if ranking else 'n'} may be at most {MAX_CHOICES} choices",
            param="best_of" if ranking else "n",
        )
    wants_logprobs = body.logprobs is not None or ranking
    return CompletionRequest(
        model=body.model,
        messages=prompt_messages(raw),
        prompt=token_ids(raw),
        echo=body.echo or None,
        best_of=body.best_of if ranking else None,
        suffix=body.suffix,
        frequency_penalty=body.frequency_penalty,
        logit_bias=body.logit_bias,
        logprobs=True if wants_logprobs else None,
        top_logprobs=body.logprobs or None,
        max_tokens=body.max_tokens or DEFAULT_MAX_TOKENS,
        n=per_prompt if per_prompt > 1 else None,
        presence_penalty=body.presence_penalty,
        seed=body.seed,
        stop=body.stop,
        stream=body.stream,
        stream_options=body.stream_options,
        temperature=body.temperature,
        top_p=body.top_p,
        user=body.user,
        top_k=body.top_k,
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        repetition_context_size=body.repetition_context_size,
    )


class CompletionCall:
    __slots__ = ("body", "request")
    bench = False

    def __init__(self, body: CompletionCreate) -> None:
        self.body = body
        self.request = internal_request(body)

    def answer(self, prepared: PreparedRequest, outcome: Outcome) -> bytes:
        completion = outcome.completion
        top = self.body.logprobs or 0
        choices = []
        for choice in completion.choices:
            logprobs = choice.logprobs.content if choice.logprobs is not None else None
            legacy = LegacyLogprobWriter(top).convert(logprobs) if logprobs is not None else None
            text = choice.message.content or ""
            choices.append(CompletionChoice(text, choice.index, legacy, choice.finish_reason))
        request = prepared.request
        if isinstance(request, CompletionRequest) and request.best_of:
            choices = best_of(choices, request.best_of, self.body.n or 1)
        if self.body.logprobs is None:
            for choice in choices:
                choice.logprobs = None
        return _encode(
            TextCompletion(
                id=completion_id(prepared),
                created=completion.created,
                model=completion.model,
                choices=choices,
                usage=completion.usage,
            )
        )

    def writer(self, prepared: PreparedRequest) -> CompletionStreamWriter:
        options = self.body.stream_options
        return CompletionStreamWriter(
            completion_id(prepared),
            prepared.created,
            prepared.entry.id,
            prepared.request.choice_count,
            top_logprobs=self.body.logprobs,
            include_usage=bool(options and options.include_usage),
        )


class CompletionsEndpoint:
    """POST /v1/completions."""

    name: ClassVar[str] = "completions"
    stream_media_type: ClassVar[str] = "text/event-stream"

    def parse(self, body: bytes, context: RequestContext) -> CompletionCall:
        return CompletionCall(decode_body(body, _decoder))

    def error_body(self, error: GatewayError) -> bytes:
        return _encode(error.to_response())
