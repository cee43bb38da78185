"""Anthropic Messages wire types: the request, the `message` answer, stream events, errors.

Field by field after the `anthropic` SDK's types and the bodies Claude Code
sends. Unknown fields are refused (as Anthropic does: "Extra inputs are not
permitted"); fields that only steer Anthropic's hosted service are accepted and
carry no meaning here (`service_tier`, `inference_geo`, `speed`,
`user_profile_id`, `workspace_id`, `diagnostics`, every `cache_control`: the
gateway's prefix cache is automatic).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct, field


class CacheControl(Struct, forbid_unknown_fields=True):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


_Block = {"tag_field": "type", "forbid_unknown_fields": True}


class TextBlock(Struct, tag="text", **_Block):  # type: ignore[call-arg]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None  # echoed back from an earlier answer


class Base64Source(Struct, tag="base64", **_Block):  # type: ignore[call-arg]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlSource(Struct, tag="url", **_Block):  # type: ignore[call-arg]
    url: str


class ImageBlock(Struct, tag="image", **_Block):  # type: ignore[call-arg]
    source: Base64Source | UrlSource
    cache_control: CacheControl | None = None
    transformations: None = None  # server-side image transforms: only "none" is served


class ToolUseBlock(Struct, tag="tool_use", **_Block):  # type: ignore[call-arg]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: dict[str, Any] | None = None  # `{"type": "direct"}` in answers clients echo back
    toolset_name: None = None  # Anthropic's hosted toolsets: none here


class ToolResultBlock(Struct, tag="tool_result", **_Block):  # type: ignore[call-arg]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] = ""
    is_error: bool = False
    cache_control: CacheControl | None = None
    toolset_name: None = None


class ThinkingBlock(Struct, tag="thinking", **_Block):  # type: ignore[call-arg]
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(Struct, tag="redacted_thinking", **_Block):  # type: ignore[call-arg]
    data: str


ContentBlock = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock


class InputMessage(Struct, forbid_unknown_fields=True):
    """One turn; Claude Code also sends `system` turns in the middle of a conversation."""

    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


class Metadata(Struct, forbid_unknown_fields=True):
    user_id: str | None = None


class ThinkingEnabled(Struct, tag="enabled", **_Block):  # type: ignore[call-arg]
    budget_tokens: Annotated[int, Meta(ge=1024)]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(Struct, tag="disabled", **_Block):  # type: ignore[call-arg]
    pass


class ThinkingAdaptive(Struct, tag="adaptive", **_Block):  # type: ignore[call-arg]
    """The model decides whether to think. Claude Code sends `budget_tokens: 0` with it."""

    budget_tokens: int | None = None
    display: Literal["summarized", "omitted"] | None = None


ThinkingConfig = ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive


class ToolChoiceAuto(Struct, tag="auto", **_Block):  # type: ignore[call-arg]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Struct, tag="any", **_Block):  # type: ignore[call-arg]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Struct, tag="tool", **_Block):  # type: ignore[call-arg]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Struct, tag="none", **_Block):  # type: ignore[call-arg]
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class CustomTool(Struct, forbid_unknown_fields=True):
    """A client tool. Server tools (web search, bash, ...) have another `type`: a 400."""

    name: Annotated[str, Meta(min_length=1)]
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None
    eager_input_streaming: bool | None = None  # tool input always streams here
    defer_loading: bool | None = None
    input_examples: list[dict[str, Any]] | None = None
    allowed_callers: list[str] | None = None


class OutputConfig(Struct, forbid_unknown_fields=True):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: dict[str, Any] | None = None


class ContextManagement(Struct, forbid_unknown_fields=True):
    edits: list[dict[str, Any]] = []


Temperature = Annotated[float, Meta(ge=0.0, le=1.0)]


class _Prompt(Struct, forbid_unknown_fields=True, kw_only=True):
    """The fields a prompt is made of, shared by `/v1/messages` and `count_tokens`."""

    model: str
    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[dict[str, Any]] | None = None  # checked one by one (`CustomTool`)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    context_management: ContextManagement | None = None
    cache_control: CacheControl | None = None
    # Hosted-service steering: accepted, no effect.
    service_tier: Literal["auto", "standard_only"] | None = None
    inference_geo: str | None = None
    speed: Literal["standard", "fast"] | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None
    diagnostics: dict[str, Any] | None = None  # cache-miss reasons: answers carry none (documented)
    # Hosted-only features: a 400 that says so when set.
    container: Any = None
    mcp_servers: Any = None


class MessagesRequest(_Prompt, kw_only=True):
    """POST /v1/messages body."""

    max_tokens: Annotated[int, Meta(ge=1)]
    stop_sequences: list[str] | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    metadata: Metadata | None = None
    stream: bool = False


class CountTokensRequest(_Prompt, kw_only=True):
    """POST /v1/messages/count_tokens body: the prompt without generation settings."""


# --- answers -------------------------------------------------------------------------

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class TextOut(Struct, tag="text", tag_field="type"):
    text: str


class ThinkingOut(Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class ToolUseOut(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: Any


ContentOut = TextOut | ThinkingOut | ToolUseOut


class MessageUsage(Struct):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class AnthropicMessage(Struct, tag="message", tag_field="type"):
    """The answer: `POST /v1/messages` without `stream`."""

    id: str
    model: str
    content: list[ContentOut]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: MessageUsage
    role: Literal["assistant"] = "assistant"


class MessageTokensCount(Struct):
    input_tokens: int


# --- stream events -------------------------------------------------------------------


class MessageStart(Struct, tag="message_start", tag_field="type"):
    message: AnthropicMessage


class ToolUseStart(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any] = field(default_factory=dict)


class ContentBlockStart(Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: TextOut | ThinkingOut | ToolUseStart


class TextDelta(Struct, tag="text_delta", tag_field="type"):
    text: str


class ThinkingDelta(Struct, tag="thinking_delta", tag_field="type"):
    thinking: str


class SignatureDelta(Struct, tag="signature_delta", tag_field="type"):
    signature: str


class InputJsonDelta(Struct, tag="input_json_delta", tag_field="type"):
    partial_json: str


class ContentBlockDelta(Struct, tag="content_block_delta", tag_field="type"):
    index: int
    delta: TextDelta | ThinkingDelta | SignatureDelta | InputJsonDelta


class ContentBlockStop(Struct, tag="content_block_stop", tag_field="type"):
    index: int


class StopDelta(Struct):
    stop_reason: StopReason | None
    stop_sequence: str | None


class MessageDelta(Struct, tag="message_delta", tag_field="type"):
    delta: StopDelta
    usage: MessageUsage


# --- errors --------------------------------------------------------------------------

ErrorType = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
]


class ErrorDetail(Struct):
    type: ErrorType
    message: str


class AnthropicError(Struct, tag="error", tag_field="type"):
    """The error body of every failure on these routes, and the stream's `error` event."""

    error: ErrorDetail
