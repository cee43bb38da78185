"""Errors in OpenAI's shape, naming the field a Responses client sent."""

from __future__ import annotations

import re
from typing import Any

from gateway.endpoints.responses.translate import RESPONSES_NAMES
from gateway.errors import ErrorBody, GatewayError


def error_payload(error: GatewayError) -> ErrorBody:
    """OpenAI's error object, naming the Responses field where the pipeline named its
    internal one (`max_tokens` is `max_output_tokens` here)."""
    param, message = error.param, error.message
    head = re.match(r"[a-z_]+", param or "")
    name = RESPONSES_NAMES.get(head.group(0)) if head else None
    if name is not None and param is not None:
        message = re.sub(rf"\b{head.group(0)}\b", name, message)  # type: ignore[union-attr]
        param = name
    return ErrorBody(message, error.error_type, param, error.code)


def error_fields(error: GatewayError) -> dict[str, Any]:
    payload = error_payload(error)
    return {"type": payload.type, "code": payload.code, "message": payload.message, "param": payload.param}
