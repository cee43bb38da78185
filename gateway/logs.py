"""structlog set-up: JSON lines, or pretty output on a terminal.

Every line logged while a request runs carries its `request_id` (bound in a
contextvar by the route). Nothing here logs request bodies or headers.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec
import structlog

_json = msgspec.json.Encoder(enc_hook=repr)
_second: tuple[int, str] = (0, "")


def _render_json(_: Any, __: str, event: dict[str, Any]) -> bytes:
    """One JSON line, encoded by msgspec straight to bytes (several times faster than `json`)."""
    return _json.encode(event)


def _add_timestamp(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """ISO 8601 UTC with milliseconds; the date and time are formatted once per second."""
    global _second
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event["timestamp"] = f"{_second[1]}.{int((now - second) * 1000):03d}Z"
    return event


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    pretty = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = structlog.dev.ConsoleRenderer() if pretty else _render_json
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_timestamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=(
            structlog.PrintLoggerFactory(sys.stderr)
            if pretty
            else structlog.BytesLoggerFactory(sys.stderr.buffer)
        ),
        cache_logger_on_first_use=True,
    )
