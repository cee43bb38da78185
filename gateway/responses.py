"""The pipeline's answer types: a chat completion (what `on_response` sees on every
endpoint) and the model list.

Optional fields are `UNSET` rather than None where OpenAI omits them.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import UNSET, Struct, UnsetType

from gateway.backend import FinishReason, TokenLogprob


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
    function_call: FunctionCallOut | UnsetType = UNSET  # legacy `functions` requests only


class ChoiceLogprobs(Struct):
    content: list[TokenLogprob] | None


class Choice(Struct):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | Literal["function_call"] | None
    logprobs: ChoiceLogprobs | None = None


class PromptTokensDetails(Struct):
    cached_tokens: int = 0


class CompletionTokensDetails(Struct):
    reasoning_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


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


class ModelCard(Struct):
    id: str
    created: int
    owned_by: str
    backend: str
    aliases: list[str]
    status: Literal["unloaded", "loading", "downloading", "loaded", "failed"]
    pinned: bool = False
    memory_bytes: int = 0
    active_requests: int = 0
    queued_requests: int = 0
    backend_stats: dict[str, Any] = {}
    object: Literal["model"] = "model"
    download_percent: float | None = None


class ModelList(Struct):
    data: list[ModelCard]
    object: Literal["list"] = "list"
