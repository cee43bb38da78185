"""Chat completions' stream: `chat.completion.chunk` events over SSE, then `[DONE]`."""

from __future__ import annotations

import msgspec
from msgspec import UNSET

from gateway.backend import GenerationChunk
from gateway.endpoints.chat.legacy import legacy_chunk_choice
from gateway.endpoints.chat.wire import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    FunctionDelta,
    ToolCallChunk,
)
from gateway.errors import GatewayError
from gateway.responses import ChatCompletion, ChoiceLogprobs, Usage

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


def sse(event: object) -> bytes:
    return b"data: " + _encode(event) + b"\n\n"


class ChatStreamWriter:
    """Role only in each choice's first delta; with `include_usage`, a last chunk with
    `choices: []` and the usage."""

    __slots__ = ("created", "id", "include_usage", "legacy", "model", "started")

    def __init__(
        self,
        response_id: str,
        created: int,
        model: str,
        choices: int,
        include_usage: bool,
        legacy: bool = False,
    ) -> None:
        self.id, self.created, self.model = response_id, created, model
        self.include_usage = include_usage
        self.legacy = legacy  # deltas in the deprecated `function_call` shape
        self.started = [False] * choices

    def chunk(self, chunk: GenerationChunk) -> bytes:
        first = not self.started[chunk.choice]
        self.started[chunk.choice] = True
        choice = chunk_choice(chunk, first)
        if self.legacy:
            choice = legacy_chunk_choice(choice)
        return sse(stream_chunk(self.id, self.created, self.model, [choice]))

    def end(self, completion: ChatCompletion) -> bytes:
        if not self.include_usage:
            return DONE
        return sse(stream_chunk(self.id, self.created, self.model, [], completion.usage)) + DONE

    def error(self, error: GatewayError) -> bytes:
        return sse(error.to_response())


def chunk_choice(chunk: GenerationChunk, first: bool) -> ChunkChoice:
    """The wire form of one chunk: only the fields that carry something."""
    delta = Delta(
        role="assistant" if first else UNSET,
        content=chunk.text if chunk.text or (first and not chunk.reasoning) else UNSET,
        reasoning_content=chunk.reasoning or UNSET,
        tool_calls=[
            ToolCallChunk(
                index=call.index,
                id=call.id or UNSET,
                type="function" if call.id else UNSET,
                function=FunctionDelta(
                    name=call.name or UNSET,
                    arguments=call.arguments if call.arguments or call.id else UNSET,
                ),
            )
            for call in chunk.tool_calls
        ]
        if chunk.tool_calls
        else UNSET,
    )
    logprobs = ChoiceLogprobs(content=chunk.logprobs) if chunk.logprobs else UNSET
    return ChunkChoice(chunk.choice, delta, chunk.finish_reason, logprobs)


def stream_chunk(
    response_id: str, created: int, model: str, choices: list[ChunkChoice], usage: Usage | None = None
) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=response_id, created=created, model=model, choices=choices, usage=usage or UNSET
    )
