"""Request wire types: the OpenAI chat-completion request, field by field.

These Structs know nothing of backends or HTTP. They carry every field of the
BenchChatCompletionRequest schema with its exact type and allowed values, so a
request that decodes is well-formed; whether a backend can honour it is decided
elsewhere (`gateway.backend.unsupported_fields`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

Role = Literal["system", "user", "assistant", "developer", "tool", "function"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class TextPart(Struct, tag="text", tag_field="type", forbid_unknown_fields=True):
    text: str


class ImageUrl(Struct, forbid_unknown_fields=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(Struct, tag="image_url", tag_field="type", forbid_unknown_fields=True):
    image_url: ImageUrl


class InputAudio(Struct, forbid_unknown_fields=True):
    data: str
    format: str


class InputAudioPart(Struct, tag="input_audio", tag_field="type", forbid_unknown_fields=True):
    input_audio: InputAudio


class FilePart(Struct, tag="file", tag_field="type", forbid_unknown_fields=True):
    file: dict[str, Any]


ContentPart = TextPart | ImageUrlPart | InputAudioPart | FilePart


class FunctionCall(Struct, forbid_unknown_fields=True):
    name: str
    arguments: str
    id: str | None = None


class ToolCall(Struct, forbid_unknown_fields=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"
    index: int | None = None


class Message(Struct, forbid_unknown_fields=True):
    """One chat message.

    `refusal`, `annotations` and `audio` are response-only fields that clients echo
    back when they append a previous answer to the history; they are accepted and
    carry no meaning for generation.
    """

    role: Role
    content: str | list[ContentPart] | None = None
    reasoning_content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: dict[str, Any] | None = None

    def text(self) -> str:
        """The content as plain text; non-text parts are the backend's business."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


class StreamOptions(Struct, forbid_unknown_fields=True):
    include_usage: bool = False


Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1)]


class ChatCompletionRequest(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """POST /v1/chat/completions body (and the bench endpoint's)."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    presence_penalty: Penalty | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Meta(max_length=16)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    tools: list[dict[str, Any]] | None = None
    reasoning_effort: ReasoningEffort | None = None
    enable_thinking: bool | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    repetition_context_size: PositiveInt | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None

    @property
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def choice_count(self) -> int:
        return self.n or 1


def replace(request: ChatCompletionRequest, **changes: Any) -> ChatCompletionRequest:
    """A copy of `request` with some fields changed (requests are treated as values)."""
    return msgspec.structs.replace(request, **changes)
