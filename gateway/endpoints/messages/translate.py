"""A Messages body -> the internal chat request every plugin and backend sees.

`system` becomes the first system message (Claude Code's per-request billing
line dropped, so the prompt prefix stays byte-identical turn to turn and keeps
hitting the prefix cache); `tool_result` blocks become `tool` messages;
`tool_use` blocks become tool calls with JSON arguments; `thinking` blocks
become `reasoning_content`; `tool_choice` and `thinking` map onto
`tool_choice`/`parallel_tool_calls` and `enable_thinking`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.endpoints.messages.wire import (
    ContentBlock,
    CountTokensRequest,
    CustomTool,
    ImageBlock,
    InputMessage,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingAdaptive,
    ThinkingBlock,
    ThinkingEnabled,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from gateway.errors import InvalidRequest
from gateway.protocol import (
    ChatCompletionRequest,
    ContentPart,
    FunctionCall,
    ImageUrl,
    ImageUrlPart,
    Message,
    TextPart,
    ToolCall,
)

BILLING_HEADER = "x-anthropic-billing-header:"
_encode = msgspec.json.Encoder().encode
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}


def chat_request(body: MessagesRequest) -> ChatCompletionRequest:
    thinking = body.thinking
    if isinstance(thinking, ThinkingEnabled) and thinking.budget_tokens >= body.max_tokens:
        raise InvalidRequest(
            "'max_tokens' must be greater than 'thinking.budget_tokens'", param="thinking.budget_tokens"
        )
    if body.stop_sequences and "" in body.stop_sequences:
        raise InvalidRequest("stop_sequences must not be empty strings", param="stop_sequences")
    return ChatCompletionRequest(
        **prompt_fields(body),
        max_tokens=body.max_tokens,
        stop=body.stop_sequences or None,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        user=body.metadata.user_id if body.metadata else None,
        stream=body.stream,
    )


def count_request(body: CountTokensRequest) -> ChatCompletionRequest:
    return ChatCompletionRequest(**prompt_fields(body))


def prompt_fields(body: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    """The internal fields of what both endpoints share: the prompt and its controls."""
    if body.container is not None or body.mcp_servers is not None:
        name = "container" if body.container is not None else "mcp_servers"
        raise InvalidRequest(f"'{name}' is a feature of Anthropic's hosted service", param=name)
    if body.messages[-1].role == "assistant":
        raise InvalidRequest(
            "a last 'assistant' turn (prefill) is not supported: end with a 'user' turn",
            param=f"messages[{len(body.messages) - 1}].role",
        )
    tools = [chat_tool(index, tool) for index, tool in enumerate(body.tools)] if body.tools else []
    choice, parallel = None, None
    if body.tool_choice is not None:
        choice, parallel = chat_tool_choice(body, [tool["function"]["name"] for tool in tools])
    messages = chat_messages(body)
    if body.context_management is not None:
        messages = apply_context_management(body.context_management.edits, messages)
    fields: dict[str, Any] = {
        "model": body.model,
        "messages": messages,
        "tools": tools or None,
        "tool_choice": choice,
        "parallel_tool_calls": parallel,
    }
    thinking = body.thinking
    if thinking is not None and not isinstance(thinking, ThinkingAdaptive):  # adaptive: the model's default
        fields["enable_thinking"] = isinstance(thinking, ThinkingEnabled)  # its budget: within max_tokens
    output = body.output_config
    if output is not None:
        if output.effort is not None:
            fields["reasoning_effort"] = _EFFORT[output.effort]
        if output.format is not None:
            fields["response_format"] = _response_format(output.format)
    return fields


# --- messages --------------------------------------------------------------------------


def chat_messages(body: MessagesRequest | CountTokensRequest) -> list[Message]:
    messages: list[Message] = []
    if body.system is not None:
        system = system_text(body.system, "system")
        if system:
            messages.append(Message(role="system", content=system))
    for index, turn in enumerate(body.messages):
        messages.extend(turn_messages(index, turn))
    return messages


def system_text(system: str | list[Any], param: str) -> str:
    """The system prompt's text, without Claude Code's billing line (its `cch` nonce
    changes on every request and would defeat the prefix cache)."""
    if isinstance(system, str):
        return _without_billing(system)
    texts = []
    for index, block in enumerate(system):
        if not isinstance(block, TextBlock):
            raise InvalidRequest("system content must be text blocks", param=f"{param}[{index}]")
        text = _without_billing(block.text)
        if text:
            texts.append(text)
    return "\n".join(texts)


def _without_billing(text: str) -> str:
    if BILLING_HEADER not in text:
        return text
    lines = [line for line in text.split("\n") if not line.lstrip().startswith(BILLING_HEADER)]
    return "\n".join(lines).strip("\n")


def turn_messages(index: int, turn: InputMessage) -> list[Message]:
    param = f"messages[{index}].content"
    if turn.role == "system":
        return [Message(role="system", content=system_text(turn.content, param))]
    if isinstance(turn.content, str):
        return [Message(role=turn.role, content=turn.content)]
    if turn.role == "assistant":
        return [assistant_message(param, turn.content)]
    return user_messages(param, turn.content)


def user_messages(param: str, blocks: list[ContentBlock]) -> list[Message]:
    """`tool_result` blocks become tool messages; the other blocks, user messages between them."""
    messages: list[Message] = []
    parts: list[ContentPart] = []
    for position, block in enumerate(blocks):
        if isinstance(block, ToolResultBlock):
            if parts:
                messages.append(Message(role="user", content=_content(parts)))
                parts = []
            messages.append(_tool_message(block))
        elif isinstance(block, TextBlock | ImageBlock):
            parts.append(_part(block))
        else:
            raise InvalidRequest(
                f"a user turn cannot hold a '{type(block).__struct_config__.tag}' block",
                param=f"{param}[{position}].type",
            )
    if parts or not messages:
        messages.append(Message(role="user", content=_content(parts)))
    return messages


def _tool_message(block: ToolResultBlock) -> Message:
    """`is_error` results are marked in the text, so the model reads them as failures."""
    if isinstance(block.content, str):
        parts: list[ContentPart] = [TextPart(block.content)] if block.content else []
    else:
        parts = [_part(item) for item in block.content]
    if block.is_error:
        parts.insert(0, TextPart("Error:" if parts else "Error"))
    return Message(role="tool", content=_content(parts), tool_call_id=block.tool_use_id)


def assistant_message(param: str, blocks: list[ContentBlock]) -> Message:
    """Text, thinking and tool calls of one earlier answer (redacted thinking is Anthropic's
    encrypted reasoning: no model here can read it, so it is left out)."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for position, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, ToolUseBlock):
            arguments = _encode(block.input).decode()
            calls.append(ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments)))
        elif not isinstance(block, RedactedThinkingBlock):
            raise InvalidRequest(
                f"an assistant turn cannot hold a '{type(block).__struct_config__.tag}' block",
                param=f"{param}[{position}].type",
            )
    return Message(
        role="assistant",
        content="".join(text) if text or not calls else None,
        reasoning_content="".join(reasoning) if reasoning else None,
        tool_calls=calls or None,
    )


def _part(block: TextBlock | ImageBlock) -> ContentPart:
    if isinstance(block, TextBlock):
        return TextPart(block.text)
    source = block.source
    url = source.url if hasattr(source, "url") else f"data:{source.media_type};base64,{source.data}"
    return ImageUrlPart(ImageUrl(url=url))


def _content(parts: list[ContentPart]) -> str | list[ContentPart]:
    """Plain text when every part is text (blocks on their own lines), else the parts."""
    if all(isinstance(part, TextPart) for part in parts):
        return "\n".join(part.text for part in parts)  # type: ignore[union-attr]
    return parts


# --- tools -----------------------------------------------------------------------------


def chat_tool(index: int, tool: dict[str, Any]) -> dict[str, Any]:
    param = f"tools[{index}]"
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise InvalidRequest(
            f"'{kind}' is a server tool run by Anthropic's hosted service; this gateway serves "
            "client tools (a 'name', a 'description' and an 'input_schema')",
            param=f"{param}.type",
        )
    try:
        custom = msgspec.convert(tool, CustomTool)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"Invalid value for '{param}': {error}", param=param) from None
    if custom.defer_loading:
        raise InvalidRequest(
            "deferred tool loading needs Anthropic's tool search", param=f"{param}.defer_loading"
        )
    if custom.input_examples:
        raise InvalidRequest("'input_examples' are not supported", param=f"{param}.input_examples")
    if custom.allowed_callers and custom.allowed_callers != ["direct"]:
        raise InvalidRequest("only 'direct' tool calls are served", param=f"{param}.allowed_callers")
    function: dict[str, Any] = {"name": custom.name, "parameters": custom.input_schema}
    if custom.description is not None:
        function["description"] = custom.description
    if custom.strict is not None:
        function["strict"] = custom.strict
    return {"type": "function", "function": function}


def chat_tool_choice(
    body: MessagesRequest | CountTokensRequest, names: list[str]
) -> tuple[str | dict[str, Any] | None, bool | None]:
    """(tool_choice, parallel_tool_calls): `any` is `required`, `tool` a named function."""
    choice = body.tool_choice
    if choice is None:
        return None, None
    disable = getattr(choice, "disable_parallel_tool_use", None)
    parallel = None if disable is None else not disable
    if isinstance(choice, ToolChoiceNone):
        return "none", None
    if isinstance(choice, ToolChoiceAuto):
        return "auto", parallel
    if not names:
        raise InvalidRequest(
            f"tool_choice '{choice.__struct_config__.tag}' needs 'tools'", param="tool_choice"
        )
    if isinstance(choice, ToolChoiceAny):
        return "required", parallel
    assert isinstance(choice, ToolChoiceTool)
    if choice.name not in names:
        raise InvalidRequest(
            f"tool_choice names '{choice.name}', which is not in 'tools'", param="tool_choice.name"
        )
    return {"type": "function", "function": {"name": choice.name}}, parallel


# --- context management, output format -------------------------------------------------


def apply_context_management(edits: list[dict[str, Any]], messages: list[Message]) -> list[Message]:
    """`clear_thinking_20251015` is honoured (earlier turns' thinking dropped, keeping the
    last `keep` turns' or all); other strategies are a 400."""
    for index, edit in enumerate(edits):
        param = f"context_management.edits[{index}]"
        if edit.get("type") != "clear_thinking_20251015":
            raise InvalidRequest(f"context edit '{edit.get('type')}' is not supported", param=param)
        keep = edit.get("keep", {"type": "thinking_turns", "value": 1})
        if keep == "all" or keep == {"type": "all"}:
            continue
        if (
            not isinstance(keep, dict)
            or keep.get("type") != "thinking_turns"
            or not isinstance(keep.get("value"), int)
        ):
            raise InvalidRequest(
                "'keep' must be 'all', {'type': 'all'} or {'type': 'thinking_turns', 'value': N}", param=param
            )
        thinking = [i for i, m in enumerate(messages) if m.role == "assistant" and m.reasoning_content]
        cleared = set(thinking[: max(len(thinking) - keep["value"], 0)])
        messages = [
            msgspec.structs.replace(m, reasoning_content=None) if i in cleared else m
            for i, m in enumerate(messages)
        ]
    return messages


def _response_format(output_format: dict[str, Any]) -> dict[str, Any]:
    if output_format.get("type") != "json_schema" or not isinstance(output_format.get("schema"), dict):
        raise InvalidRequest(
            "output_config.format must be {'type': 'json_schema', 'schema': {...}}",
            param="output_config.format",
        )
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": output_format["schema"]}}
