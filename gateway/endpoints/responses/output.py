"""The response resource and its output items, from what the pipeline produced.

A non-streamed answer's items come from the `ChatCompletion` that `on_response`
saw; a stream's come from its writer, item by item, with the same ids (item id
= kind prefix + the response's id + the item's output index).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.backend import TokenLogprob
from gateway.endpoints.responses.wire import (
    IncompleteDetails,
    InputTokensDetails,
    LogProb,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputReasoning,
    OutputTextPart,
    OutputTokensDetails,
    ReasoningConfig,
    ReasoningText,
    ResponseError,
    ResponseResource,
    ResponseUsage,
    Status,
    SummaryText,
    TextConfig,
    TopLogProb,
)
from gateway.protocol import ChatCompletionRequest, FunctionCall, Message, ToolCall
from gateway.responses import Choice, Usage

if TYPE_CHECKING:
    from gateway.endpoints.responses.endpoint import ResponsesCall


def item_id(prefix: str, response_id: str, index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}{index:02d}"


def status_of(finish_reason: str | None) -> tuple[Status, IncompleteDetails | None]:
    if finish_reason == "length":
        return "incomplete", IncompleteDetails("max_output_tokens")
    if finish_reason == "content_filter":
        return "incomplete", IncompleteDetails("content_filter")
    return "completed", None


def usage_of(usage: Usage | None) -> ResponseUsage:
    if usage is None:
        return ResponseUsage(0, 0, 0, InputTokensDetails(0), OutputTokensDetails(0))
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        input_tokens_details=InputTokensDetails(usage.prompt_tokens_details.cached_tokens),
        output_tokens_details=OutputTokensDetails(usage.completion_tokens_details.reasoning_tokens),
    )


def logprobs_of(logprobs: list[TokenLogprob] | None) -> list[LogProb]:
    return [
        LogProb(
            lp.token,
            lp.logprob,
            lp.bytes or [],
            [TopLogProb(top.token, top.logprob, top.bytes or []) for top in lp.top_logprobs],
        )
        for lp in logprobs or ()
    ]


def reasoning_item(item: str, text: str, as_summary: bool) -> OutputReasoning:
    """Reasoning as `reasoning_text` content, or as the summary when one was asked for
    (a local model's reasoning is its own most detailed summary)."""
    if as_summary:
        return OutputReasoning(item, [SummaryText(text)], [])
    return OutputReasoning(item, [], [ReasoningText(text)])


def items_of(choice: Choice, response_id: str, as_summary: bool) -> list[OutputItem]:
    message = choice.message
    items: list[OutputItem] = []
    if message.reasoning_content:
        items.append(
            reasoning_item(item_id("rs", response_id, len(items)), message.reasoning_content, as_summary)
        )
    if message.content:
        logprobs = logprobs_of(choice.logprobs.content if choice.logprobs else None)
        status = "incomplete" if choice.finish_reason == "length" else "completed"
        part = OutputTextPart(message.content, logprobs=logprobs)
        items.append(OutputMessage(item_id("msg", response_id, len(items)), status, [part]))
    for call in message.tool_calls or ():
        items.append(
            OutputFunctionCall(
                item_id("fc", response_id, len(items)),
                call.id,
                call.function.name,
                call.function.arguments,
                "completed",
            )
        )
    return items


def history_of(items: list[OutputItem]) -> list[Message]:
    """The output as chat messages, for a later `previous_response_id`."""
    reasoning, text, calls = [], [], []
    for item in items:
        if isinstance(item, OutputMessage):
            text.extend(part.text for part in item.content)
        elif isinstance(item, OutputFunctionCall):
            calls.append(ToolCall(id=item.call_id, function=FunctionCall(item.name, item.arguments)))
        elif isinstance(item, OutputReasoning):
            reasoning.extend(part.text for part in [*item.summary, *item.content])
    if not (reasoning or text or calls):
        return []
    message = Message(role="assistant", content="".join(text) or None, tool_calls=calls or None)
    message.reasoning_content = "".join(reasoning) or None
    return [message]


def resource(
    call: ResponsesCall,
    request: ChatCompletionRequest | None,
    model: str,
    status: Status,
    output: list[OutputItem],
    usage: ResponseUsage | None,
    incomplete: IncompleteDetails | None = None,
    error: ResponseError | None = None,
) -> ResponseResource:
    """The resource for `call`; `request` is the internal request as generated (model
    defaults applied), whose sampling values the resource reports."""
    body = call.body
    effective = request or call.request
    reasoning = body.reasoning
    text = body.text
    return ResponseResource(
        id=call.response_id,
        created_at=call.created_at,
        completed_at=int(time.time()) if status != "in_progress" else None,
        status=status,
        incomplete_details=incomplete,
        model=model,
        previous_response_id=body.previous_response_id,
        instructions=body.instructions,
        output=output,
        error=error,
        tools=call.tools,
        tool_choice=body.tool_choice if body.tool_choice is not None else "auto",
        truncation=body.truncation or "disabled",
        parallel_tool_calls=body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
        text=TextConfig(
            format=(text.format if text and text.format else None) or {"type": "text"},
            verbosity=(text.verbosity if text else None) or "medium",
        ),
        top_p=effective.top_p if effective.top_p is not None else 1.0,
        presence_penalty=effective.presence_penalty or 0.0,
        frequency_penalty=effective.frequency_penalty or 0.0,
        top_logprobs=body.top_logprobs or 0,
        temperature=effective.temperature if effective.temperature is not None else 1.0,
        reasoning=ReasoningConfig(reasoning.effort if reasoning else None, call.summary),
        usage=usage,
        max_output_tokens=body.max_output_tokens,
        max_tool_calls=body.max_tool_calls,
        store=call.store,
        background=False,
        service_tier=body.service_tier or "default",
        metadata=body.metadata or {},
        safety_identifier=body.safety_identifier,
        prompt_cache_key=body.prompt_cache_key,
        user=body.user,
    )
