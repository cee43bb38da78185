"""One hierarchy of gateway errors, each mapped to an OpenAI error object.

Anything raised in a handler, a hook or a backend that is a `GatewayError`
reaches the client as `{"error": {"message", "type", "param", "code"}}` with its
status; anything else becomes a 500 `internal_error` whose message hides details.
"""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class GatewayError(Exception):
    """Base of every error the client is meant to see."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(ErrorBody(self.message, self.error_type, self.param, self.code))


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class UnsupportedField(InvalidRequest):
    """A request field the chosen backend cannot honour: never ignored silently."""

    code = "unsupported_parameter"

    def __init__(self, field: str, backend: str, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"'{field}' is not supported by the '{backend}' backend{detail}", param=field)


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, served: list[str] | None = None) -> None:
        listed = f"; this gateway serves: {', '.join(served)}" if served else ""
        super().__init__(f"The model '{model}' does not exist{listed}", param="model")


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


class BackendUnavailable(GatewayError):
    status_code = 503
    error_type = "server_error"
    code = "model_unavailable"


class ModelLoadFailed(BackendUnavailable):
    """A load that will fail the same way again (nothing at the path, no network and no
    cached copy, a file we cannot serve): `x-should-retry: false` keeps the official
    clients from retrying it."""

    code = "model_load_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})


class BackendFailed(GatewayError):
    status_code = 500
    error_type = "server_error"
    code = "backend_error"


class PluginFailed(GatewayError):
    status_code = 500
    error_type = "server_error"
    code = "plugin_error"

    def __init__(self, plugin: str, hook: str) -> None:
        super().__init__(f"plugin '{plugin}' failed in hook '{hook}'")
        self.plugin = plugin
        self.hook = hook


class ClientDisconnected(GatewayError):
    """The client closed the connection before the answer was complete (never sent)."""

    status_code = 499
    error_type = "client_closed_request"
    code = "client_disconnected"


def internal_error() -> GatewayError:
    return GatewayError("The server had an error while processing your request", code="internal_error")
