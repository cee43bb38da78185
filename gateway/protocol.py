"""The OpenAI chat-completion request, field by field: the chat endpoint's body and the
pipeline's internal request on every endpoint.

These Structs know nothing of backends or HTTP. They carry every field of
today's OpenAI schema (the seed's BenchChatCompletionRequest and what clients
send since) with its exact type and allowed values, so a request that decodes is
well-formed. `FIELDS` says, for each field, who honours it: the one place that
model defaults, the rewrite plugin and backends' field checks are derived from.
"""

from __future__ import annotations

from enum import Enum
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
    include_obfuscation: bool | None = None  # OpenAI pads deltas against side channels; we send none


class Prediction(Struct, tag="content", tag_field="type", forbid_unknown_fields=True):
    """Predicted Outputs: text the answer is expected to repeat (a file being edited)."""

    content: str | list[TextPart]


class AudioOutput(Struct, forbid_unknown_fields=True):
    voice: str | dict[str, Any]
    format: str


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
    store: bool | None = None
    metadata: Annotated[dict[str, Annotated[str, Meta(max_length=512)]], Meta(max_length=16)] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: Prediction | None = None
    web_search_options: dict[str, Any] | None = None
    audio: AudioOutput | None = None
    functions: Annotated[list[dict[str, Any]], Meta(max_length=128)] | None = None
    function_call: str | dict[str, Any] | None = None

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


class Handling(Enum):
    """Who honours a request field."""

    GATEWAY = "gateway"  # the gateway itself (model, messages, streaming): every backend gets it
    HOSTED = "hosted"  # steers only OpenAI's hosted service; accepted and has no effect here
    LEGACY = "legacy"  # an old name, folded into its successor before any backend sees it
    SAMPLING = "sampling"  # a backend feature a model's `defaults` and the rewrite plugin may set
    FEATURE = "feature"  # a backend feature; a backend that does not declare it answers 400


FIELDS: dict[str, Handling] = {
    "model": Handling.GATEWAY,
    "messages": Handling.GATEWAY,
    "stream": Handling.GATEWAY,
    "stream_options": Handling.GATEWAY,
    "user": Handling.HOSTED,
    "store": Handling.HOSTED,
    "metadata": Handling.HOSTED,
    "service_tier": Handling.HOSTED,
    "prompt_cache_key": Handling.HOSTED,
    "safety_identifier": Handling.HOSTED,
    "modalities": Handling.HOSTED,  # only ["text"]: asking for audio is `audio`'s business
    "max_completion_tokens": Handling.LEGACY,  # -> max_tokens
    "functions": Handling.LEGACY,  # -> tools
    "function_call": Handling.LEGACY,  # -> tool_choice
    "max_tokens": Handling.SAMPLING,
    "temperature": Handling.SAMPLING,
    "top_p": Handling.SAMPLING,
    "top_k": Handling.SAMPLING,
    "min_p": Handling.SAMPLING,
    "seed": Handling.SAMPLING,
    "stop": Handling.SAMPLING,
    "presence_penalty": Handling.SAMPLING,
    "frequency_penalty": Handling.SAMPLING,
    "repetition_penalty": Handling.SAMPLING,
    "repetition_context_size": Handling.SAMPLING,
    "reasoning_effort": Handling.SAMPLING,
    "enable_thinking": Handling.SAMPLING,
    "logit_bias": Handling.FEATURE,
    "logprobs": Handling.FEATURE,
    "top_logprobs": Handling.FEATURE,
    "n": Handling.FEATURE,
    "response_format": Handling.FEATURE,
    "tools": Handling.FEATURE,
    "tool_choice": Handling.FEATURE,
    "parallel_tool_calls": Handling.FEATURE,
    "verbosity": Handling.FEATURE,
    "prediction": Handling.FEATURE,
    "web_search_options": Handling.FEATURE,
    "audio": Handling.FEATURE,
}


def fields_handled(*handlings: Handling) -> frozenset[str]:
    return frozenset(name for name, handling in FIELDS.items() if handling in handlings)


# Every backend gets these for free; the rest it must declare in `supported_fields`.
GATEWAY_FIELDS = fields_handled(Handling.GATEWAY, Handling.HOSTED, Handling.LEGACY)
SAMPLING_FIELDS = fields_handled(Handling.SAMPLING)
# Sampling fields with an upper bound a rewrite rule may cap (`[...rules] max = {...}`).
CEILING_FIELDS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty"})
