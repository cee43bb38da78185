"""Request messages and tools -> prompt token ids, through the model's chat template.

The OpenAI wire types are turned into the plain dicts Hugging Face chat
templates expect (text parts joined, tool-call arguments parsed into objects,
legacy roles mapped), the template is rendered to text with the generation
prompt, and the text is encoded without adding special tokens (the template
already wrote BOS where the model wants one). `in_reasoning` tells the output
parser whether the prompt leaves the model inside an open think block, and
`in_tool_call` whether it ends with a tool call's start marker (written there to
make the model call a tool, for a forcing `tool_choice`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jinja2
import msgspec

from backends.mlx.generic_tools import template_takes_tools, with_generic_tools
from gateway import (
    BackendFailed,
    ChatCompletionRequest,
    FilePart,
    ImageUrlPart,
    InputAudioPart,
    InvalidRequest,
    Message,
    TextPart,
    UnsupportedField,
)

if TYPE_CHECKING:  # importing it loads transformers; only the annotation is needed here
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from backends.mlx.tool_choice import ToolFormat

_NON_TEXT_REASONS: dict[type, str] = {
    ImageUrlPart: "image parts need a vision model; this model is text-only",
    InputAudioPart: "audio parts need an audio model; this model is text-only",
    FilePart: "file parts are not supported; send the file's text as a text part",
}
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


class Prompt(msgspec.Struct, frozen=True):
    """The rendered prompt: token ids, their text, and where generation starts."""

    tokens: list[int]
    text: str
    in_reasoning: bool
    in_tool_call: bool = False


def build_prompt(
    tokenizer: TokenizerWrapper,
    request: ChatCompletionRequest,
    *,
    chat_template: str | None = None,
    template_kwargs: Mapping[str, Any] = _NO_KWARGS,
    open_tool_call: bool = False,
    tool_format: ToolFormat | None = None,
) -> Prompt:
    """Render `request` with the chat template (or `chat_template`) and encode it.

    `template_kwargs` are the model's configured defaults; the request's
    `enable_thinking`/`reasoning_effort` win over them. `tool_format` is how the
    model writes calls: the generic one means the template ignores tools, so they
    are described in the system message instead (`generic_tools`).
    `open_tool_call` ends the prompt with the format's start marker, unless the
    model is left thinking: its answer is then a call.
    """
    source = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    if source is None and not getattr(tokenizer, "has_chat_template", False):
        raise BackendFailed("this model has no chat template; configure one (options.chat_template)")
    map_developer = not (isinstance(source, str) and "developer" in source)
    messages = [template_message(i, message, map_developer) for i, message in enumerate(request.messages)]
    tools = request.tools if request.tools and request.tool_choice != "none" else None
    if tools and tool_format is not None and tool_format.generic:
        messages, tools = with_generic_tools(messages, tools), None
    arguments = {**template_arguments(request, template_kwargs), "tools": tools, "tokenize": False}
    if chat_template is not None:
        arguments["chat_template"] = chat_template

    text = _render(tokenizer, messages, add_generation_prompt=True, **arguments)
    tokens = list(tokenizer.encode(text, add_special_tokens=False))
    in_reasoning = False
    if getattr(tokenizer, "has_thinking", False):
        in_reasoning = _ends_in_reasoning(tokenizer, _generation_tail(tokenizer, messages, text, arguments))
    if not (open_tool_call and tool_format is not None and not in_reasoning):
        return Prompt(tokens, text, in_reasoning)
    start = tool_format.start
    return Prompt(tokens + list(tokenizer.encode(start, add_special_tokens=False)), text + start, False, True)


def takes_tools(
    tokenizer: TokenizerWrapper,
    *,
    chat_template: str | None = None,
    template_kwargs: Mapping[str, Any] = _NO_KWARGS,
) -> bool:
    """Whether the chat template shows the model its tools."""

    def render(messages: list[dict[str, Any]], tools: Any) -> str:
        arguments = {**template_kwargs, "tools": tools, "tokenize": False}
        if chat_template is not None:
            arguments["chat_template"] = chat_template
        return _render(tokenizer, messages, add_generation_prompt=True, **arguments)

    return template_takes_tools(render)


def template_arguments(
    request: ChatCompletionRequest, defaults: Mapping[str, Any] = _NO_KWARGS
) -> dict[str, Any]:
    """Extra template variables: config defaults, then the request's thinking controls."""
    arguments = dict(defaults)
    if request.reasoning_effort is not None:
        arguments["reasoning_effort"] = request.reasoning_effort
        if request.reasoning_effort == "none":
            arguments["enable_thinking"] = False
    if request.enable_thinking is not None:
        arguments["enable_thinking"] = request.enable_thinking
    return arguments


def template_message(index: int, message: Message, map_developer: bool = True) -> dict[str, Any]:
    """One wire message as the dict a Hugging Face chat template reads."""
    role: str = message.role
    if role == "function":
        role = "tool"
    elif role == "developer" and map_developer:
        role = "system"
    result: dict[str, Any] = {"role": role, "content": _content_text(index, message)}
    for field in ("name", "tool_call_id", "reasoning_content"):
        value = getattr(message, field)
        if value is not None:
            result[field] = value
    calls = [
        _call_dict(
            call.id,
            call.function.name,
            call.function.arguments,
            f"messages[{index}].tool_calls[{j}].function.arguments",
        )
        for j, call in enumerate(message.tool_calls or [])
    ]
    legacy = message.function_call
    if legacy is not None:
        param = f"messages[{index}].function_call"
        if not isinstance(legacy.get("name"), str) or not isinstance(legacy.get("arguments", ""), str):
            raise InvalidRequest(f"{param} needs a string 'name' and string 'arguments'", param=param)
        calls.append(
            _call_dict(f"call_{index}", legacy["name"], legacy.get("arguments", ""), f"{param}.arguments")
        )
    if calls:
        result["tool_calls"] = calls
    return result


def _content_text(index: int, message: Message) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    pieces = []
    for part in message.content:
        if not isinstance(part, TextPart):
            raise UnsupportedField(f"messages[{index}].content", "mlx", _NON_TEXT_REASONS[type(part)])
        pieces.append(part.text)
    return "".join(pieces)


def _call_dict(call_id: str, name: str, arguments: str, param: str) -> dict[str, Any]:
    """A tool call with its JSON arguments parsed, as templates render them with `tojson`."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"{param} is not valid JSON: {error}", param=param) from None
    except RecursionError:
        raise InvalidRequest(f"{param} nests JSON too deeply", param=param) from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f"{param} must be a JSON object", param=param)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": parsed}}


def _render(tokenizer: TokenizerWrapper, messages: list[dict[str, Any]], **arguments: Any) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, **arguments)
    except jinja2.TemplateSyntaxError as error:
        raise BackendFailed(f"the chat template is invalid: {error}") from None
    except RecursionError:  # deep JSON in tools or arguments, walked by `tojson`
        raise InvalidRequest("the messages or tools nest too deeply to render", param="messages") from None
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as error:
        raise InvalidRequest(
            f"the chat template cannot render these messages: {error}", param="messages"
        ) from None
    if not isinstance(text, str):
        raise BackendFailed("the chat template did not render to text")
    return text


def _generation_tail(
    tokenizer: TokenizerWrapper, messages: list[dict[str, Any]], text: str, arguments: dict[str, Any]
) -> str:
    """The part of `text` the generation prompt added (all of it if that cannot be told)."""
    try:
        history = _render(tokenizer, messages, add_generation_prompt=False, **arguments)
    except (InvalidRequest, BackendFailed):
        return text
    return text.removeprefix(history)


def _ends_in_reasoning(tokenizer: TokenizerWrapper, tail: str) -> bool:
    """True when the generation prompt opens a think block that it does not close."""
    start, end = tokenizer.think_start, tokenizer.think_end
    if not start or not end:
        return False
    return tail.rfind(start) > tail.rfind(end)
