"""Checks that span several request fields, and per-model defaults.

Decoding (`gateway.protocol`) guarantees types and ranges; this module checks
what one field cannot say alone, normalises aliases (`max_completion_tokens`),
and applies a model's configured defaults to fields the client left unset.
"""

from __future__ import annotations

import operator
from typing import Any

import msgspec

from gateway.backend import Backend, unsupported_fields
from gateway.config import ModelConfig
from gateway.errors import InvalidRequest, UnsupportedField
from gateway.protocol import ChatCompletionRequest, replace

TOOL_CHOICE_MODES = ("none", "auto", "required")


# What `normalize` reads besides `messages`, `tools` and `tool_choice` (checked apart).
_SCALARS = operator.attrgetter(
    "functions", "function_call", "max_tokens", "max_completion_tokens", "stream", "stream_options",
    "logprobs", "top_logprobs", "stop", "logit_bias", "response_format", "modalities", "audio",
)  # fmt: skip


def normalize(
    request: ChatCompletionRequest, before: ChatCompletionRequest | None = None
) -> ChatCompletionRequest:
    """Reject contradictions; fold legacy names (`max_completion_tokens`, `functions`,
    `function_call`) into their successors; drop what asks for nothing.

    `before`: this request as normalised already, before a rewrite: only what the
    rewrite changed is checked again (it rarely touches more than messages and tools)."""
    if before is None or not all(map(operator.is_, _SCALARS(request), _SCALARS(before))):
        request = _normalize_scalars(request)
    if before is None or request.messages is not before.messages:
        _check_messages(request)
    if before is None or request.tools is not before.tools or request.tool_choice is not before.tool_choice:
        _check_tools(request)
    return request


def _normalize_scalars(request: ChatCompletionRequest) -> ChatCompletionRequest:
    changes: dict[str, Any] = _legacy_functions(request)
    if changes:
        request = replace(request, **changes)
    if request.max_completion_tokens is not None:
        if request.max_tokens is not None and request.max_tokens != request.max_completion_tokens:
            raise InvalidRequest(
                "Set either 'max_tokens' or 'max_completion_tokens', not both with different values",
                param="max_completion_tokens",
            )
        changes.update(max_tokens=request.max_completion_tokens, max_completion_tokens=None)
    if request.stream_options is not None and not request.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")
    if any(stop == "" for stop in request.stop_strings):
        raise InvalidRequest("stop strings must not be empty", param="stop")
    if request.logit_bias:
        for key in request.logit_bias:
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise InvalidRequest(f"logit_bias keys must be token ids, got '{key}'", param="logit_bias")
    if request.response_format is not None:
        kind = request.response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise InvalidRequest(
                "response_format.type must be 'text', 'json_object' or 'json_schema'",
                param="response_format",
            )
        if kind == "text":  # the default: asks for nothing
            changes["response_format"] = None
    if request.modalities is not None:
        if "audio" in request.modalities and request.audio is None:
            raise InvalidRequest("modalities with 'audio' need the 'audio' parameter", param="audio")
        if "audio" not in request.modalities:
            changes["modalities"] = None  # text is what every backend answers anyway
    return replace(request, **changes) if changes else request


def _legacy_functions(request: ChatCompletionRequest) -> dict[str, Any]:
    """`functions` / `function_call` (deprecated by OpenAI, still sent) as `tools` / `tool_choice`."""
    changes: dict[str, Any] = {}
    if request.functions is not None:
        if request.tools is not None:
            raise InvalidRequest("Set either 'functions' or 'tools', not both", param="functions")
        changes.update(functions=None, tools=[{"type": "function", "function": f} for f in request.functions])
    choice = request.function_call
    if choice is not None:
        if request.tool_choice is not None:
            raise InvalidRequest(
                "Set either 'function_call' or 'tool_choice', not both", param="function_call"
            )
        if isinstance(choice, dict):
            if not isinstance(choice.get("name"), str):
                raise InvalidRequest(
                    "function_call must be 'none', 'auto' or {'name': ...}", param="function_call"
                )
            choice = {"type": "function", "function": {"name": choice["name"]}}
        elif choice not in ("none", "auto"):
            raise InvalidRequest(
                "function_call must be 'none', 'auto' or {'name': ...}", param="function_call"
            )
        changes.update(function_call=None, tool_choice=choice)
    return changes


def _check_messages(request: ChatCompletionRequest) -> None:
    for index, message in enumerate(request.messages):
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidRequest(
                "messages with role 'tool' need a 'tool_call_id'",
                param=f"messages[{index}].tool_call_id",
            )


def _check_tools(request: ChatCompletionRequest) -> None:
    names = []
    for index, tool in enumerate(request.tools or []):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise InvalidRequest(
                "each tool must be {'type': 'function', 'function': {...}}", param=f"tools[{index}]"
            )
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequest("each function needs a 'name'", param=f"tools[{index}].function.name")
        names.append(function["name"])
    choice = request.tool_choice
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in TOOL_CHOICE_MODES:
            raise InvalidRequest(
                f"tool_choice must be one of {', '.join(TOOL_CHOICE_MODES)} or a named function",
                param="tool_choice",
            )
        if choice == "required" and not names:
            raise InvalidRequest("tool_choice 'required' needs 'tools'", param="tool_choice")
        return
    name = named_tool_choice(choice)
    if name is None:
        raise InvalidRequest(
            "tool_choice must be {'type': 'function', 'function': {'name': ...}}", param="tool_choice"
        )
    if name not in names:
        raise InvalidRequest(f"tool_choice names '{name}', which is not in 'tools'", param="tool_choice")


def named_tool_choice(choice: str | dict[str, Any] | None) -> str | None:
    """The function name a `tool_choice` object forces, if it is one."""
    if not isinstance(choice, dict) or choice.get("type") != "function":
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def apply_model_config(
    request: ChatCompletionRequest, model_id: str, model: ModelConfig
) -> ChatCompletionRequest:
    """Name the model by its id, fill unset fields from its defaults, enforce its token ceiling."""
    changes: dict[str, Any] = {
        name: value for name, value in _defaults_set(model.defaults) if getattr(request, name) is None
    }
    max_tokens = changes.get("max_tokens", request.max_tokens) or model.default_max_tokens
    if model.max_tokens is not None and max_tokens > model.max_tokens:
        if request.max_tokens is not None:
            raise InvalidRequest(
                f"max_tokens is {max_tokens}, above this model's limit of {model.max_tokens}",
                param="max_tokens",
            )
        max_tokens = model.max_tokens
    changes.update(max_tokens=max_tokens, model=model_id)
    return replace(request, **changes)


_defaults_cache: dict[int, tuple[Any, tuple[tuple[str, Any], ...]]] = {}


def _defaults_set(defaults: Any) -> tuple[tuple[str, Any], ...]:
    """The `(field, value)` defaults a model sets, worked out once per config object (the
    cache holds the object, so its id is not reused while the entry lives)."""
    cached = _defaults_cache.get(id(defaults))
    if cached is None or cached[0] is not defaults:
        if len(_defaults_cache) >= 1024:  # reloads make new objects: keep the cache small
            _defaults_cache.clear()
        items = tuple((k, v) for k, v in msgspec.structs.asdict(defaults).items() if v is not None)
        cached = _defaults_cache[id(defaults)] = (defaults, items)
    return cached[1]


def check_backend_support(request: ChatCompletionRequest, backend: type[Backend] | Backend) -> None:
    """400 naming the first field the backend kind cannot honour (checked before loading)."""
    fields = unsupported_fields(request, backend)
    if fields:
        raise UnsupportedField(fields[0], backend.kind)
