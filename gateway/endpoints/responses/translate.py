"""From a Responses body to the internal chat request, and back to history.

Input items become chat messages: a reasoning item rides on the next assistant
turn as `reasoning_content`, function calls join the assistant message before
them (as a chat template expects), a `function_call_output` becomes a `tool`
message. Fields are renamed where the chat request spells them differently
(`max_output_tokens` -> `max_tokens`, `text.format` -> `response_format`,
`reasoning.effort` -> `reasoning_effort`); `RESPONSES_NAMES` maps the internal
names back, so an error names the field the client sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.decoding import _validation_error
from gateway.endpoints.responses import compaction
from gateway.endpoints.responses.wire import (
    CompactionItem,
    ContentPart,
    CreateResponse,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputFile,
    InputImage,
    InputItem,
    InputText,
    ItemReference,
    MessageItem,
    OutputText,
    PlainText,
    ReasoningItem,
    ReasoningText,
    Refusal,
    SummaryText,
)
from gateway.errors import InvalidRequest
from gateway.protocol import (
    ChatCompletionRequest,
    FilePart,
    FunctionCall,
    ImageUrl,
    ImageUrlPart,
    Message,
    TextPart,
    ToolCall,
)

# Internal request field -> the Responses field a client sets for it.
RESPONSES_NAMES = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
    "enable_thinking": "reasoning.effort",
    "logprobs": "include",
}
LOGPROBS_INCLUDE = "message.output_text.logprobs"
_items = msgspec.convert  # converting dicts whose types the JSON decoder already checked


def input_items(value: str | list[dict[str, Any]] | None, where: str = "input") -> list[InputItem]:
    """The input as typed items; an item without `type` is a message."""
    if value is None:
        return []
    if isinstance(value, str):
        return [MessageItem(role="user", content=value)]
    for item in value:
        if "type" not in item:
            item["type"] = "message"
    try:
        return _items(value, list[InputItem])
    except msgspec.ValidationError as error:
        raise _validation_error(str(error).replace("at `$", f"at `$.{where}", 1)) from None


def input_messages(
    value: str | list[dict[str, Any]] | None, history: list[Message], where: str = "input"
) -> list[Message]:
    """The chat messages for an `input`, which follows `history`."""
    if isinstance(value, str):
        return [Message(role="user", content=value)]  # the common case, without items
    return to_messages(input_items(value, where), history, where)


def to_messages(items: list[InputItem], history: list[Message], where: str = "input") -> list[Message]:
    """The chat messages for `items`, which follow `history` (to check call ids against)."""
    messages: list[Message] = []
    calls = {call.id for message in history for call in message.tool_calls or ()}
    reasoning: str | None = None
    for index, item in enumerate(items):
        if isinstance(item, MessageItem):
            if item.role == "assistant":
                messages.append(
                    Message(role="assistant", content=_text(item.content), reasoning_content=reasoning)
                )
                reasoning = None
            else:
                messages.append(Message(role=item.role, content=_content(item.content)))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(id=item.call_id, function=FunctionCall(item.name, item.arguments))
            calls.add(item.call_id)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and reasoning is None:
                last.tool_calls = [*(last.tool_calls or ()), call]
            else:
                messages.append(Message(role="assistant", tool_calls=[call], reasoning_content=reasoning))
                reasoning = None
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in calls:
                raise InvalidRequest(
                    f"No tool call found for function call output with call_id '{item.call_id}'",
                    param=f"{where}[{index}].call_id",
                )
            output = item.output if isinstance(item.output, str) else _content(item.output)
            messages.append(Message(role="tool", content=output, tool_call_id=item.call_id))
        elif isinstance(item, ReasoningItem):
            text = _text(item.content or []) or _text(item.summary)
            reasoning = (reasoning or "") + text if text else reasoning
        elif isinstance(item, CompactionItem):
            messages.extend(compaction.unpack(item.encrypted_content, f"{where}[{index}].encrypted_content"))
        elif isinstance(item, ItemReference):
            raise InvalidRequest(
                "item_reference inputs are not supported here; send the item itself",
                param=f"{where}[{index}]",
                code="unsupported_parameter",
            )
    return messages


def _text(content: str | list[ContentPart]) -> str:
    if isinstance(content, str):
        return content
    return "".join(_part_text(part) for part in content)


def _part_text(part: ContentPart) -> str:
    if isinstance(part, Refusal):
        return part.refusal
    if isinstance(part, InputText | OutputText | PlainText | SummaryText | ReasoningText):
        return part.text
    return ""


def _content(content: str | list[ContentPart]) -> str | list[Any]:
    """A user, system or tool message's content: text stays text, images and files
    become chat content parts (the backend decides whether it can read them)."""
    if isinstance(content, str):
        return content
    parts: list[Any] = []
    for part in content:
        if isinstance(part, InputImage):
            url = part.image_url or (f"file:{part.file_id}" if part.file_id else "")
            detail = part.detail if part.detail in ("auto", "low", "high") else None
            parts.append(ImageUrlPart(ImageUrl(url=url, detail=detail)))  # type: ignore[arg-type]
        elif isinstance(part, InputFile):
            fields = {"filename": part.filename, "file_data": part.file_data, "file_id": part.file_id}
            parts.append(FilePart({k: v for k, v in fields.items() if v is not None}))
        else:
            parts.append(TextPart(_part_text(part)))
    return parts


def function_tools(tools: list[dict[str, Any]] | None) -> list[FunctionTool]:
    """The function tools, checked; a tool type served only by OpenAI is a 400."""
    result = []
    for index, tool in enumerate(tools or ()):
        if tool.get("type") != "function":
            raise InvalidRequest(
                f"Tool type '{tool.get('type')}' is not supported here; only 'function' tools are",
                param=f"tools[{index}].type",
                code="unsupported_parameter",
            )
        unknown = set(tool) - {"type", "name", "description", "parameters", "strict"}
        if unknown:
            field = f"tools[{index}].{min(unknown)}"
            raise InvalidRequest(f"Unrecognized request argument supplied: {field}", param=field)
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("Each function tool needs a 'name'", param=f"tools[{index}].name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                "'parameters' must be a JSON schema object", param=f"tools[{index}].parameters"
            )
        result.append(FunctionTool(name, tool.get("description"), parameters, tool.get("strict")))
    return result


def chat_tools(tools: list[FunctionTool]) -> list[dict[str, Any]]:
    chat = []
    for tool in tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            function["description"] = tool.description
        if tool.parameters is not None:
            function["parameters"] = tool.parameters
        if tool.strict is not None:
            function["strict"] = tool.strict
        chat.append({"type": "function", "function": function})
    return chat


def chat_tool_choice(
    choice: str | dict[str, Any] | None, tools: list[FunctionTool]
) -> tuple[str | dict[str, Any] | None, list[FunctionTool]]:
    """The internal `tool_choice` and the tools the model may call: `allowed_tools`
    narrows the tools, a named function becomes the chat form."""
    if choice is None or isinstance(choice, str):
        return choice, tools
    kind = choice.get("type")
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, tools
    if kind == "allowed_tools" and isinstance(choice.get("tools"), list):
        names = {tool.get("name") for tool in choice["tools"] if isinstance(tool, dict)}
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise InvalidRequest("allowed_tools mode must be 'auto' or 'required'", param="tool_choice.mode")
        return mode, [tool for tool in tools if tool.name in names]
    raise InvalidRequest(
        "tool_choice must be 'none', 'auto', 'required', {'type': 'function', 'name': ...} "
        "or {'type': 'allowed_tools', ...}",
        param="tool_choice",
    )


def response_format(body: CreateResponse) -> dict[str, Any] | None:
    """`text.format` as the chat request's `response_format` (type `text` asks for nothing)."""
    text = body.text
    if text is None or text.format is None:
        return None
    format_ = text.format
    kind = format_.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(format_.get("schema"), dict) or not isinstance(format_.get("name"), str):
            raise InvalidRequest(
                "A json_schema format needs a 'name' and a 'schema' object", param="text.format"
            )
        schema = {key: format_[key] for key in ("name", "schema", "strict", "description") if key in format_}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(
        "text.format.type must be 'text', 'json_object' or 'json_schema'", param="text.format.type"
    )


_UNSERVED = {
    "conversation": "conversations are not stored here; use previous_response_id or send the history",
    "prompt": "stored prompt templates are not available here",
    "context_management": "server-side compaction is not available; use /v1/responses/compact",
}


def refuse_unserved(body: CreateResponse, websocket: bool) -> None:
    """400 for fields that would change the answer and cannot be honoured here."""
    unset = (body.conversation, body.prompt, body.context_management, body.background, body.text) == _NOTHING
    if unset and body.generate is None and (body.stream_options is None or body.stream or websocket):
        return  # the usual request, checked at once
    for name, reason in _UNSERVED.items():
        if getattr(body, name) is not None:
            raise InvalidRequest(
                f"'{name}' is not supported: {reason}", param=name, code="unsupported_parameter"
            )
    if body.background:
        raise InvalidRequest(
            "'background' is not supported: responses run while the request is open",
            param="background",
            code="unsupported_parameter",
        )
    if body.text is not None and body.text.verbosity not in (None, "medium"):
        raise InvalidRequest(
            "text.verbosity other than 'medium' is not supported by local models",
            param="text.verbosity",
            code="unsupported_parameter",
        )
    if body.generate is not None and not websocket:
        raise InvalidRequest("'generate' is only accepted in WebSocket mode", param="generate")
    if body.stream_options is not None and not (body.stream or websocket):
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")


_NOTHING = (None, None, None, None, None)


def chat_request(
    body: CreateResponse, model: str, messages: list[Message], tools: list[FunctionTool], stream: bool
) -> ChatCompletionRequest:
    if not messages:
        raise InvalidRequest("'input' must hold at least one item", param="input")
    choice, tools = chat_tool_choice(body.tool_choice, tools)
    logprobs = LOGPROBS_INCLUDE in (body.include or ())
    return ChatCompletionRequest(
        model=model,
        messages=messages,
        stream=stream,
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logprobs=True if logprobs else None,
        top_logprobs=body.top_logprobs if logprobs else None,
        tools=chat_tools(tools) or None,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls,
        reasoning_effort=body.reasoning.effort if body.reasoning else None,
        response_format=response_format(body),
        user=body.user,
    )
