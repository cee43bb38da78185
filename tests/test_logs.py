"""gateway/logs.py: one JSON object per line, with level, time and the bound request id."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import msgspec
import pytest
import structlog

from gateway.logs import bind_request_id, configure_logging


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    output = io.BytesIO()
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(buffer=output))
    configured = structlog.get_config()
    configure_logging("json", "info")
    yield output
    structlog.configure(**configured)


def lines(output: io.BytesIO) -> list[dict]:
    return [msgspec.json.decode(line) for line in output.getvalue().splitlines()]


def test_a_line_has_level_time_and_request_id(json_lines: io.BytesIO) -> None:
    log = structlog.get_logger("test")
    log.info("before any request")

    async def request() -> None:  # each request runs in its own task, so its own context
        bind_request_id("req_1")
        log.info("hello", answer=42)
        log.warning("careful")
        log.debug("not shown at info")

    asyncio.run(request())
    log.info("after the request")
    before, first, second, after = lines(json_lines)
    assert first["event"] == "hello" and first["answer"] == 42 and first["request_id"] == "req_1"
    assert (first["level"], second["level"]) == ("info", "warning")
    assert "request_id" not in before and "request_id" not in after
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["timestamp"])


def test_exceptions_become_tracebacks(json_lines: io.BytesIO) -> None:
    try:
        raise ValueError("broken on purpose")
    except ValueError:
        structlog.get_logger("test").exception("failed")
    [line] = lines(json_lines)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"] and "ValueError: broken on purpose" in line["exception"]


def test_long_fields_are_cut(json_lines: io.BytesIO) -> None:
    from gateway.logs import MAX_FIELD_CHARS

    structlog.get_logger("test").warning("model not found", model="m" * 1_048_576)
    [line] = lines(json_lines)
    assert len(line["model"]) < MAX_FIELD_CHARS + 50 and line["model"].endswith("(1048576 chars)")


def test_standard_library_lines_are_json_too(json_lines: io.BytesIO) -> None:
    import logging

    try:
        raise OSError("socket broke")
    except OSError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.error").info("below the level: dropped")
    [line] = lines(json_lines)
    assert line["event"] == "Exception in ASGI application" and line["logger"] == "uvicorn.error"
    assert line["level"] == "error" and "OSError: socket broke" in line["exception"]
