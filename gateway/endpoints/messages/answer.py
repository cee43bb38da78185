"""The pipeline's completion -> Anthropic's `message`, its stop reason, usage and errors."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from gateway.endpoints.messages.wire import (
    AnthropicError,
    AnthropicMessage,
    ContentOut,
    ErrorDetail,
    ErrorType,
    MessageUsage,
    StopReason,
    TextOut,
    ThinkingOut,
    ToolUseOut,
)
from gateway.errors import BackendFailed, GatewayError
from gateway.pipeline import PreparedRequest
from gateway.responses import ChatCompletion, Usage

_STOP_REASONS: dict[str | None, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES: dict[int, ErrorType] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
# Internal request fields as a Messages client knows them, for error messages.
FIELD_NAMES = {
    "enable_thinking": "thinking",
    "reasoning_effort": "output_config.effort",
    "response_format": "output_config.format",
    "stop": "stop_sequences",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
    "user": "metadata.user_id",
}


def message_id(prepared: PreparedRequest) -> str:
    return "msg_" + prepared.response_id.removeprefix("chatcmpl-")


def stop_reason(finish_reason: str | None, stop_sequence: str | None) -> StopReason | None:
    if stop_sequence is not None and finish_reason == "stop":
        return "stop_sequence"
    return _STOP_REASONS.get(finish_reason)


def message_usage(usage: Usage) -> MessageUsage:
    """Anthropic counts cache reads apart: `input_tokens` are the prompt tokens computed anew.
    The prefix cache stores prompts as it goes, at no extra cost: no cache-creation tokens."""
    cached = usage.prompt_tokens_details.cached_tokens
    return MessageUsage(
        input_tokens=usage.prompt_tokens - cached,
        output_tokens=usage.completion_tokens,
        cache_read_input_tokens=cached,
    )


def signature(thinking: str) -> str:
    """A thinking block's `signature`: clients must send one back; it names the text it signs."""
    return hashlib.sha256(thinking.encode()).hexdigest()[:32]


def tool_input(arguments: str) -> Any:
    try:
        value = msgspec.json.decode(arguments or "{}")
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, dict):
        raise BackendFailed("the model's tool call arguments are not a JSON object")
    return value


def message(
    prepared: PreparedRequest,
    completion: ChatCompletion,
    stop_sequence: str | None,
    omit_thinking: bool = False,
) -> AnthropicMessage:
    choice = completion.choices[0]
    answer = choice.message
    content: list[ContentOut] = []
    if answer.reasoning_content:
        thinking = "" if omit_thinking else answer.reasoning_content
        content.append(ThinkingOut(thinking, signature(answer.reasoning_content)))
    if answer.content:
        content.append(TextOut(answer.content))
    for call in answer.tool_calls or ():
        content.append(ToolUseOut(call.id, call.function.name, tool_input(call.function.arguments)))
    reason = stop_reason(choice.finish_reason, stop_sequence)
    return AnthropicMessage(
        id=message_id(prepared),
        model=completion.model,
        content=content,
        stop_reason=reason,
        stop_sequence=stop_sequence if reason == "stop_sequence" else None,
        usage=message_usage(completion.usage),
    )


def error_object(error: GatewayError) -> AnthropicError:
    status = error.status_code
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    text = error.message
    if error.param in FIELD_NAMES:
        text = text.replace(f"'{error.param}'", f"'{FIELD_NAMES[error.param]}'")
    return AnthropicError(ErrorDetail(kind, text))
