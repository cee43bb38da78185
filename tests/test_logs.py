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

from gateway.logs import _RecordWriter, bind_request_id, configure_logging, flush_records, write_records


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


class CountedWrites(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def test_records_are_rendered_at_once_and_written_together_later(monkeypatch: pytest.MonkeyPatch) -> None:
    output = CountedWrites()
    monkeypatch.setattr(sys, "stderr", SimpleNamespace(buffer=output))
    configured = structlog.get_config()
    configure_logging("json", "info")
    try:

        async def one_turn() -> list[dict]:
            bind_request_id("req_9")
            records = [("info", {"n": 1}), ("debug", {"n": 0}), ("warning", {"n": 2, "model": "m" * 5000})]
            write_records("request", records)
            held = lines(output)
            await asyncio.sleep(_RecordWriter.FLUSH_S * 2)
            return held

        assert asyncio.run(one_turn()) == []  # not on the caller's path
        first, second = lines(output)
        assert output.writes == 1  # both lines in one write
        assert (first["event"], first["n"], first["level"], first["request_id"]) == (
            "request",
            1,
            "info",
            "req_9",
        )
        assert (second["level"], second["model"][-12:]) == ("warning", "(5000 chars)")  # the processors ran
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["timestamp"])
    finally:
        structlog.configure(**configured)


def test_held_records_are_written_by_flush_records(
    json_lines: io.BytesIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_RecordWriter, "FLUSH_S", 3600.0)

    async def one_turn() -> None:
        write_records("request", [("info", {"n": 1})])

    asyncio.run(one_turn())  # the loop is gone before the write was due
    assert lines(json_lines) == []
    flush_records()  # what shutdown and exit do
    assert [line["n"] for line in lines(json_lines)] == [1]


def test_records_go_through_another_structlog_set_up_as_it_is() -> None:
    with structlog.testing.capture_logs() as entries:  # no configure_logging: structlog's own path
        write_records("request", [("warning", {"n": 3})])
    assert entries == [{"event": "request", "n": 3, "log_level": "warning"}]
