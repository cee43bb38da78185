"""Upstream failures as OpenAI errors.

A 4xx answer is the upstream's verdict on the request, so the client gets it
as the upstream phrased it (status, message, type, param, code). Everything
that says "the upstream is broken or gone" becomes a 502/503 `upstream_error`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway import GatewayError

_decode_json = msgspec.json.Decoder().decode


class UpstreamRejected(GatewayError):
    """An upstream 4xx error object, passed through."""

    error_type = "invalid_request_error"

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        error_type: str | None,
        param: str | None,
        code: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.status_code = status_code
        if error_type:
            self.error_type = error_type


class UpstreamFailed(GatewayError):
    """The upstream answered with a server error or an answer that is not OpenAI's."""

    status_code = 502
    error_type = "server_error"
    code = "upstream_error"


class UpstreamUnreachable(UpstreamFailed):
    """No upstream could be reached (connection refused, timed out, none healthy)."""

    status_code = 503


def error_fields(body: bytes) -> dict[str, Any]:
    """The error object of an error body: `{"error": {...}}`, or a bare one (older vLLM)."""
    try:
        data = _decode_json(body)
    except msgspec.DecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    inner = data.get("error")
    if isinstance(inner, dict):
        return inner
    if isinstance(inner, str):
        return {"message": inner}
    return data if "message" in data else {}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def rejected(status_code: int, body: bytes, headers: dict[str, str]) -> GatewayError:
    """The error for a 4xx answer.

    401/403 concern the gateway's own credentials and a 404 its upstream URL or
    model name, which the client cannot fix: they become a 502 rather than
    telling the client its key is wrong or its model does not exist.
    """
    fields = error_fields(body)
    message = _text(fields.get("message")) or body.decode(errors="replace")[:500] or f"HTTP {status_code}"
    if status_code in (401, 403):
        return UpstreamFailed(f"the upstream refused the gateway's credentials ({status_code}): {message}")
    if status_code == 404:
        return UpstreamFailed(
            f"the upstream answered 404 (check the model's upstream URLs end in the API root, "
            f"e.g. /v1, and its upstream model name): {message}"
        )
    kept = {"Retry-After": headers["retry-after"]} if "retry-after" in headers else None
    return UpstreamRejected(
        status_code,
        message,
        error_type=_text(fields.get("type")),
        param=_text(fields.get("param")),
        code=_text(fields.get("code")),
        headers=kept,
    )


def server_error_message(status_code: int, body: bytes) -> str:
    message = _text(error_fields(body).get("message")) or body.decode(errors="replace")[:200]
    return f"HTTP {status_code}: {message}" if message else f"HTTP {status_code}"
