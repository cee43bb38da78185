"""Chat completions' own answer types: stream chunks and the bench answer.

The request (`gateway.protocol.ChatCompletionRequest`) and the completion
(`gateway.responses.ChatCompletion`) are the pipeline's internal types too.
No null-valued field ever reaches a client in a stream delta: optional fields
are `UNSET`.
"""

from __future__ import annotations

from typing import Literal

from msgspec import UNSET, Struct, UnsetType

from gateway.backend import FinishReason, GenerationStats
from gateway.responses import Choice, ChoiceLogprobs, Usage


class BenchChatCompletion(Struct):
    """The bench endpoint's answer: a chat completion plus measured stats."""

    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    generation_stats: GenerationStats
    object: Literal["chat.completion"] = "chat.completion"


class FunctionDelta(Struct, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallChunk(Struct, omit_defaults=True):
    index: int
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET
    function: FunctionDelta | UnsetType = UNSET


class Delta(Struct, omit_defaults=True):
    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[ToolCallChunk] | UnsetType = UNSET
    function_call: FunctionDelta | UnsetType = UNSET  # legacy `functions` requests only


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: FinishReason | Literal["function_call"] | None
    logprobs: ChoiceLogprobs | UnsetType = UNSET


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType = UNSET
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
