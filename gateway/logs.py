"""structlog set-up: JSON lines, or pretty output on a terminal.

Every line logged while a request runs carries its `request_id` (set by the
route with `bind_request_id`). Nothing here logs request bodies or headers:
tracebacks are printed without local variables (a frame's locals hold the
request's headers, keys included), and long string fields are cut to
`MAX_FIELD_CHARS` so a megabyte of client input never becomes a log line.
Standard-library loggers (uvicorn's among them) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

import msgspec
import structlog

_json = msgspec.json.Encoder(enc_hook=repr)
_second: tuple[int, str] = (0, "")
_format_exc_info = structlog.processors.format_exc_info
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level names them
_request_id: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)
MAX_FIELD_CHARS = 2048  # a longer string field is cut, and says how long it was


def _render_json(logger: Any, method_name: str, event: dict[str, Any]) -> bytes:
    """One JSON line, encoded by msgspec straight to bytes (several times faster than `json`)."""
    if "exc_info" in event:
        event = _format_exc_info(logger, method_name, event)
    return _json.encode(event)


def bind_request_id(request_id: str) -> None:
    """Every line logged from now on in this task (the request's) carries `request_id`."""
    _request_id.set(request_id)


def _add_standard_fields(_: Any, method_name: str, event: dict[str, Any]) -> dict[str, Any]:
    """The level, the time as ISO 8601 UTC with milliseconds (its date and time formatted
    once per second) and the current request's id: one processor call per line.

    One context variable of our own instead of structlog's `merge_contextvars`,
    which copies and walks the whole context for every line."""
    global _second
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event["level"] = _LEVEL_NAMES.get(method_name, method_name)
    request_id = _request_id.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    event["timestamp"] = f"{_second[1]}.{int((now - second) * 1000):03d}Z"
    return event


def _cap_fields(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Cut long string fields (a client's 1 MiB model name is not a log line)."""
    for key, value in event.items():
        if type(value) is str and len(value) > MAX_FIELD_CHARS:
            event[key] = f"{value[:MAX_FIELD_CHARS]}... ({len(value)} chars)"
    return event


class _StdlibToStructlog(logging.Handler):
    """Lines from `logging` (uvicorn, asyncio, libraries) rendered like ours."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **fields)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    pretty = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    # No locals in console tracebacks: they would print `RequestContext.headers` (API keys).
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if pretty
        else _render_json
    )
    logging.basicConfig(handlers=[_StdlibToStructlog()], level=logging.WARNING, force=True)
    structlog.configure(
        processors=[_add_standard_fields, _cap_fields, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=(
            structlog.PrintLoggerFactory(sys.stderr)
            if pretty
            else structlog.BytesLoggerFactory(sys.stderr.buffer)
        ),
        cache_logger_on_first_use=True,
    )
