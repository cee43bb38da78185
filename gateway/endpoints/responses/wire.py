"""The Responses API's own wire types: the request body, its input items, the
response resource and its output items.

The request follows OpenAI's `POST /v1/responses` body and the Open Responses
specification field by field. Unknown fields are refused by name (OpenAI does
the same); fields that only steer OpenAI's hosted service are accepted and
listed in docs/responses.md. The resource carries every field the Open
Responses schema requires, null where it has no value.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
Summary = Literal["auto", "concise", "detailed"]

# --- content parts (input items' and output items' content) ----------------------


class InputText(Struct, tag="input_text", tag_field="type", forbid_unknown_fields=True):
    text: str


class InputImage(Struct, tag="input_image", tag_field="type", forbid_unknown_fields=True):
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


class InputFile(Struct, tag="input_file", tag_field="type", forbid_unknown_fields=True):
    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    file_id: str | None = None


class TopLogProb(Struct):
    token: str
    logprob: float
    bytes: list[int]


class LogProb(Struct):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogProb]


class OutputText(Struct, tag="output_text", tag_field="type", forbid_unknown_fields=True):
    text: str
    annotations: list[Any] = []
    logprobs: list[LogProb] | None = None


class Refusal(Struct, tag="refusal", tag_field="type", forbid_unknown_fields=True):
    refusal: str


class PlainText(Struct, tag="text", tag_field="type", forbid_unknown_fields=True):
    text: str


class SummaryText(Struct, tag="summary_text", tag_field="type", forbid_unknown_fields=True):
    text: str


class ReasoningText(Struct, tag="reasoning_text", tag_field="type", forbid_unknown_fields=True):
    text: str


ContentPart = (
    InputText | InputImage | InputFile | OutputText | Refusal | PlainText | SummaryText | ReasoningText
)

# --- input items -------------------------------------------------------------------
# An item without `type` is a message (OpenAI's "easy input message"): the decoder
# fills the tag in before converting, so every item is one tagged union.


class MessageItem(Struct, tag="message", tag_field="type", forbid_unknown_fields=True):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None
    phase: Literal["commentary", "final_answer"] | None = None  # accepted; no effect on the prompt


class FunctionCallItem(Struct, tag="function_call", tag_field="type", forbid_unknown_fields=True):
    call_id: Annotated[str, Meta(min_length=1)]
    name: Annotated[str, Meta(min_length=1)]
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(
    Struct, tag="function_call_output", tag_field="type", forbid_unknown_fields=True
):
    call_id: Annotated[str, Meta(min_length=1)]
    output: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class ReasoningItem(Struct, tag="reasoning", tag_field="type", forbid_unknown_fields=True):
    summary: list[ContentPart] = []
    content: list[ContentPart] | None = None
    encrypted_content: str | None = None  # never produced here; accepted and ignored
    id: str | None = None
    status: str | None = None


class CompactionItem(Struct, tag="compaction", tag_field="type", forbid_unknown_fields=True):
    encrypted_content: str
    id: str | None = None
    created_by: str | None = None


class ItemReference(Struct, tag="item_reference", tag_field="type", forbid_unknown_fields=True):
    id: str


InputItem = (
    MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem | CompactionItem | ItemReference
)

# --- request -------------------------------------------------------------------------


class ReasoningParam(Struct, forbid_unknown_fields=True):
    effort: Effort | None = None
    summary: Summary | Literal["none"] | None = None
    generate_summary: Summary | None = None  # the deprecated spelling of `summary`


class TextParam(Struct, forbid_unknown_fields=True):
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class StreamOptionsParam(Struct, forbid_unknown_fields=True):
    include_obfuscation: bool | None = None


class CreateResponse(Struct, forbid_unknown_fields=True):
    """POST /v1/responses body (and a WebSocket `response.create` message's)."""

    model: str | None = None
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_tool_calls: Annotated[int, Meta(ge=0)] | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Probability | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    include: list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptionsParam | None = None
    store: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    # Steer OpenAI's hosted service only: accepted, echoed, no effect here.
    metadata: dict[str, str] | None = None
    user: str | None = None
    service_tier: Literal["auto", "default", "flex", "priority", "scale"] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    client_metadata: dict[str, Any] | None = None
    # Not served here: a 400 naming the field when set.
    conversation: Any = None
    prompt: Any = None
    context_management: Any = None
    # WebSocket mode only: `generate: false` warms a connection up without generating.
    generate: bool | None = None


class CompactRequest(Struct, forbid_unknown_fields=True):
    """POST /v1/responses/compact body."""

    model: str
    input: str | list[dict[str, Any]] | None = None
    previous_response_id: str | None = None
    instructions: str | None = None
    prompt_cache_key: str | None = None


# --- output items and the response resource ---------------------------------------


class OutputTextPart(Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []
    logprobs: list[LogProb] = []


class OutputMessage(Struct, tag="message", tag_field="type"):
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputTextPart]
    role: Literal["assistant"] = "assistant"
    phase: Literal["commentary", "final_answer"] | UnsetType = UNSET


class OutputFunctionCall(Struct, tag="function_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


class OutputReasoning(Struct, tag="reasoning", tag_field="type"):
    id: str
    summary: list[SummaryText]
    content: list[ReasoningText]


class OutputCompaction(Struct, tag="compaction", tag_field="type"):
    id: str
    encrypted_content: str


OutputItem = OutputMessage | OutputFunctionCall | OutputReasoning | OutputCompaction


class FunctionTool(Struct, tag="function", tag_field="type"):
    name: str
    description: str | None
    parameters: dict[str, Any] | None
    strict: bool | None


class InputTokensDetails(Struct):
    cached_tokens: int


class OutputTokensDetails(Struct):
    reasoning_tokens: int


class ResponseUsage(Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens_details: OutputTokensDetails


class IncompleteDetails(Struct):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(Struct):
    code: str
    message: str


class ReasoningConfig(Struct):
    effort: Effort | None
    summary: Summary | None


class TextConfig(Struct):
    format: dict[str, Any]
    verbosity: Literal["low", "medium", "high"] = "medium"


Status = Literal["in_progress", "completed", "incomplete", "failed"]


class ResponseResource(Struct):
    """The response object: every field the Open Responses schema requires."""

    id: str
    created_at: int
    completed_at: int | None
    status: Status
    incomplete_details: IncompleteDetails | None
    model: str
    previous_response_id: str | None
    instructions: str | None
    output: list[OutputItem]
    error: ResponseError | None
    tools: list[FunctionTool]
    tool_choice: str | dict[str, Any]
    truncation: Literal["auto", "disabled"]
    parallel_tool_calls: bool
    text: TextConfig
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    top_logprobs: int
    temperature: float
    reasoning: ReasoningConfig | None
    usage: ResponseUsage | None
    max_output_tokens: int | None
    max_tool_calls: int | None
    store: bool
    background: bool
    service_tier: str
    metadata: dict[str, str]
    safety_identifier: str | None
    prompt_cache_key: str | None
    user: str | None = None
    object: Literal["response"] = "response"


class CompactionResource(Struct):
    id: str
    output: list[OutputItem]
    created_at: int
    usage: ResponseUsage
    object: Literal["response.compaction"] = "response.compaction"


class DeletedResponse(Struct):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
