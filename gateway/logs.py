"""structlog set-up: JSON lines, or pretty output on a terminal.

Every line logged while a request runs carries its `request_id` (set by the
route with `bind_request_id`). Nothing here logs request bodies or headers:
tracebacks are printed without local variables (a frame's locals hold the
request's headers, keys included), and long string fields are cut to
`MAX_FIELD_CHARS` so a megabyte of client input never becomes a log line.
Standard-library loggers (uvicorn's among them) go through the same renderer.

`write_records` is for the access log's lines, off the request path: the
configured processors render each record at once (its timestamp is when it was
logged), without structlog's per-call machinery, and the lines are written
together within 50 ms, one write for all (a write per line cost more than the
rest of the record). Shutdown and exit write what is still held.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

import msgspec
import structlog

_json = msgspec.json.Encoder(enc_hook=repr)
_second: tuple[int, str] = (0, "")
_format_exc_info = structlog.processors.format_exc_info
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}  # as structlog's add_log_level names them
_request_id: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
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


class _RecordWriter:
    """Renders records with the processors `configure_logging` installed and writes them
    in batches: at most `FLUSH_S` after they were rendered, or `MAX_LINES` at a time."""

    FLUSH_S = 0.05
    MAX_LINES = 512

    def __init__(self, min_level: int, logger_factory: Callable[[], Any], processors: list[Any]) -> None:
        self.min_level = min_level
        self.logger_factory = logger_factory
        self.processors = processors
        self.logger = logger_factory()
        self.lines: list[Any] = []  # rendered, not yet written
        self.timer: asyncio.TimerHandle | None = None

    def is_current(self, config: dict[str, Any]) -> bool:
        """Whether structlog still has this set-up (a test may have configured another)."""
        return config["logger_factory"] is self.logger_factory and config["processors"] is self.processors

    def add(self, event: str, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        logger, processors, lines = self.logger, self.processors, self.lines
        for level, fields in records:
            if _LEVELS[level] < self.min_level:
                continue
            fields["event"] = event
            rendered: Any = fields
            try:
                for processor in processors:
                    rendered = processor(logger, level, rendered)
            except structlog.DropEvent:
                continue
            lines.append(rendered)
        if not lines or self.timer is not None:
            if len(lines) >= self.MAX_LINES:
                self.flush()
            return
        try:
            self.timer = asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)
        except RuntimeError:  # no loop to come back later: now
            self.flush()

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        lines, self.lines = self.lines, []
        if lines:  # bytes from the JSON renderer, str from the console one
            self.logger.msg((b"\n" if isinstance(lines[0], bytes) else "\n").join(lines))


_writer: _RecordWriter | None = None  # what `configure_logging` set up


def write_records(event: str, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Log `event` once per `(level name, fields)` record, off the caller's path.

    Each record goes through the configured processors now, as a structlog call
    would (so `structlog.testing.capture_logs` sees it, and its timestamp is now),
    and is dropped below the configured level; `fields` become the line (they are
    not copied). The lines are written together within `_RecordWriter.FLUSH_S`
    (`flush_records` writes them at once; shutdown and exit call it)."""
    writer = _writer
    if writer is None or not writer.is_current(structlog.get_config()):
        logger = structlog.get_logger("gateway.requests")  # another set-up: its own path, line by line
        for level, fields in records:
            getattr(logger, level)(event, **fields)
        return
    writer.add(event, records)


def flush_records() -> None:
    """Write the records `write_records` holds (at shutdown, at exit)."""
    if _writer is not None:
        _writer.flush()


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    pretty = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    # No locals in console tracebacks: they would print `RequestContext.headers` (API keys).
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if pretty
        else _render_json
    )
    global _writer
    flush_records()  # lines of the previous set-up go where it said
    logging.basicConfig(handlers=[_StdlibToStructlog()], level=logging.WARNING, force=True)
    min_level = logging.getLevelName(level.upper())
    logger_factory = (
        structlog.PrintLoggerFactory(sys.stderr)
        if pretty
        else structlog.BytesLoggerFactory(sys.stderr.buffer)
    )
    processors = [_add_standard_fields, _cap_fields, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    _writer = _RecordWriter(min_level, logger_factory, processors)


atexit.register(flush_records)
