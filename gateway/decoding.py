"""Decoding a request body into a wire Struct (`ChatCompletionRequest`, ...), with
errors that name the field.

msgspec's messages already name the problem and its JSON path; this turns them
into `invalid_request_error`s whose `param` is that path (`messages[0].role`).
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


def decode_request(body: bytes) -> ChatCompletionRequest:
    return decode_body(body, _decoder)


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
