"""Response wire types: chat completions, stream chunks, models, bench stats.

Optional fields are `UNSET` rather than None where OpenAI omits them, so no
null-valued field ever reaches a client in a stream delta.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

from gateway.backend import FinishReason, GenerationStats, TokenLogprob


class FunctionCallOut(Struct):
    name: str
    arguments: str


class ToolCallOut(Struct):
    id: str
    function: FunctionCallOut
    type: Literal["function"] = "function"


class ResponseMessage(Struct):
    content: str | None
    role: Literal["assistant"] = "assistant"
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[ToolCallOut] | UnsetType = UNSET


class ChoiceLogprobs(Struct):
    content: list[TokenLogprob] | None


class Choice(Struct):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class PromptTokensDetails(Struct):
    cached_tokens: int = 0


class CompletionTokensDetails(Struct):
    reasoning_tokens: int = 0


class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    object: Literal["chat.completion"] = "chat.completion"


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


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | UnsetType = UNSET


class ChatCompletionChunk(Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType = UNSET
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class ModelCard(Struct):
    id: str
    created: int
    owned_by: str
    backend: str
    aliases: list[str]
    status: Literal["unloaded", "loading", "downloading", "loaded", "failed"]  # issue 14: downloading
    pinned: bool = False
    memory_bytes: int = 0
    active_requests: int = 0
    queued_requests: int = 0
    backend_stats: dict[str, Any] = {}
    object: Literal["model"] = "model"
    download_percent: float | None = None  # issue 14: while `downloading`


class ModelList(Struct):
    data: list[ModelCard]
    object: Literal["list"] = "list"
