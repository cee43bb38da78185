"""Decoding a request body into a wire Struct (`ChatCompletionRequest`, ...), with
errors that name the field.

msgspec's messages already name the problem and its JSON path; this turns them
into `invalid_request_error`s whose `param` is that path (`messages[0].role`).
Free-form JSON (tools, response_format, ...) may nest at most `MAX_DEPTH` deep:
deeper input would exhaust the stack of whatever walks it next (a chat template,
a JSON encoder), so it is a 400 here rather than a 500 there.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest

_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_UNKNOWN = re.compile(r"Object contains unknown field `(.+?)`")
_MISSING = re.compile(r"Object missing required field `(.+?)`")
MAX_DEPTH = 400


def decode_request(body: bytes) -> ChatCompletionRequest:
    request: ChatCompletionRequest = decode_body(body, _decoder)
    if could_nest_too_deep(body):
        _check_depth(request)
    return request


def could_nest_too_deep(body: bytes) -> bool:
    """Whether `body` holds enough brackets to nest past `MAX_DEPTH` (two C-speed counts:
    most bodies need no walk at all)."""
    return len(body) > MAX_DEPTH and body.count(b"[") + body.count(b"{") > MAX_DEPTH


def decode_body(body: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """`body` decoded by `decoder`, or an `InvalidRequest` whose `param` is the JSON path."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object", code="invalid_json")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise _validation_error(str(error)) from None
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"Invalid JSON body: {error}", code="invalid_json") from None
    except RecursionError:
        raise _too_deep("") from None


def _too_deep(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"The request nests JSON more than {MAX_DEPTH} levels deep", param=param or None, code="invalid_json"
    )


def _check_depth(request: ChatCompletionRequest) -> None:
    """400 when a free-form field nests deeper than `MAX_DEPTH` (typed fields cannot)."""
    for name in ("tools", "response_format", "tool_choice"):
        value = getattr(request, name)
        if value is not None and _deeper_than(value, MAX_DEPTH):
            raise _too_deep(name)
    for index, message in enumerate(request.messages):
        for name in ("function_call", "annotations", "audio"):
            value = getattr(message, name)
            if value is not None and _deeper_than(value, MAX_DEPTH):
                raise _too_deep(f"messages[{index}].{name}")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether dicts and lists in `value` nest more than `limit` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False


def _validation_error(text: str) -> InvalidRequest:
    reason, _, where = text.partition(" - at `")
    path = where.rstrip("`").removeprefix("$").removeprefix(".")
    unknown, missing = _UNKNOWN.fullmatch(reason), _MISSING.fullmatch(reason)
    if unknown:
        field = _join(path, unknown.group(1))
        return InvalidRequest(f"Unrecognized request argument supplied: {field}", param=field)
    if missing:
        field = _join(path, missing.group(1))
        return InvalidRequest(f"Missing required parameter: '{field}'", param=field)
    message = reason.replace("`", "'")
    if path:
        message = f"Invalid value for '{path}': {message[0].lower()}{message[1:]}"
    return InvalidRequest(message, param=path or None)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
